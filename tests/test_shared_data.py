"""The shared test data: skipped with a reason when absent, a failure on CI, found through an environment variable."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = '''
def test_probe(shared_data):
    assert shared_data("models").is_dir()
'''


def _run_probe(tmp_path: Path, **environment: str) -> subprocess.CompletedProcess:
    """Run a one-test suite that uses the ``shared_data`` fixture of tests/conftest.py, in a fresh pytest."""
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {key: value for key, value in os.environ.items() if key not in ("CI", "CRYOSCORE_SHARED_DATA")}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(tmp_path)],
                          capture_output=True, text=True, env={**env, **environment}, cwd=tmp_path)


@pytest.mark.parametrize("ci", ["", "true"], ids=["locally", "on CI"])
def test_missing_shared_data_skips_with_a_reason_but_fails_on_ci(tmp_path, ci):
    missing = tmp_path / "nowhere"
    result = _run_probe(tmp_path, CRYOSCORE_SHARED_DATA=str(missing), **({"CI": ci} if ci else {}))
    assert f"shared test data not found at {missing / 'models'}" in result.stdout
    assert "CRYOSCORE_SHARED_DATA" in result.stdout
    if ci:
        assert result.returncode == 1 and "1 failed" in result.stdout
    else:
        assert result.returncode == 0 and "1 skipped" in result.stdout


def test_the_environment_variable_points_at_the_data(tmp_path, shared_data):
    result = _run_probe(tmp_path, CRYOSCORE_SHARED_DATA=str(shared_data("models").parent), CI="true")
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout
