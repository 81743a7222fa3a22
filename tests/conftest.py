"""Shared test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def apoferritin_dir() -> Path:
    """The real EMPIAR-10146 sample (micrographs/, coordinates/) in ../shared/data beside the repo.

    Fails, never skips, when it is missing: CI checks ../shared out next to the clone.
    """
    data = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    folder = data / "apoferritin-empiar10146"
    assert folder.is_dir(), f"shared test data not found at {folder}"
    return folder
