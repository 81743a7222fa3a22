"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Callable[..., Path]:
    """Locate a file or folder of ../shared/data beside the repository.

    Fails, never skips, when it is missing: CI checks ../shared out next to the clone.
    """

    def locate(*parts: str) -> Path:
        path = SHARED_DATA.joinpath(*parts)
        assert path.exists(), f"shared test data not found at {path}"
        return path

    return locate


@pytest.fixture(scope="session")
def apoferritin_dir(shared_data) -> Path:
    """The real EMPIAR-10146 sample (micrographs/, coordinates/)."""
    return shared_data("apoferritin-empiar10146")
