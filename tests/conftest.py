"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pytest

DATA_VARIABLE = "CRYOSCORE_SHARED_DATA"
"""Environment variable naming the shared data folder, for a clone without ../shared/data beside it."""
DEFAULT_SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
"""The benchmark scripts' folder; :func:`benchmarks_on_path` makes them importable."""


def shared_data_root() -> Path:
    """``$CRYOSCORE_SHARED_DATA`` when set, else ``../shared/data`` beside the repository."""
    return Path(os.environ[DATA_VARIABLE]) if os.environ.get(DATA_VARIABLE) else DEFAULT_SHARED_DATA


def on_ci() -> bool:
    """Whether this is a CI run (``CI=true``, as GitHub Actions, GitLab and most others set it)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@pytest.fixture(scope="session")
def shared_data() -> Callable[..., Path]:
    """Locate a file or folder of the shared test data (real micrographs, atomic models).

    When it is missing the test is skipped with the reason, except on CI (``CI=true``), where it
    fails: CI checks ../shared out next to the clone, so missing data there is a broken setup.
    """

    def locate(*parts: str) -> Path:
        root = shared_data_root()
        path = root.joinpath(*parts)
        if not path.exists():
            reason = (f"shared test data not found at {path}; put ../shared/data beside the repository "
                      f"or set {DATA_VARIABLE} to its folder")
            if on_ci():
                pytest.fail(f"{reason} (CI=true: missing data is a failure, not a skip)", pytrace=False)
            pytest.skip(reason)
        return path

    return locate


@pytest.fixture(scope="session")
def apoferritin_dir(shared_data) -> Path:
    """The real EMPIAR-10146 sample (micrographs/, coordinates/)."""
    return shared_data("apoferritin-empiar10146")


@pytest.fixture
def benchmarks_on_path(monkeypatch):
    """Put benchmarks/ on ``sys.path`` for one test, so it can import a benchmark script's functions."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
