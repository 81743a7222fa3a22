"""The throughput benchmark (benchmarks/bench_throughput.py) runs end to end and reports
numbers that hang together; a stand-in ``topaz`` command exercises the comparison; the
``topaz`` shim for CPU machines hands its arguments on as the bench gives them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

STAND_IN_TOPAZ = """#!{python}
# Stands in for `topaz denoise --device D -o OUT MRC...`: copies each input to OUT.
import pathlib, shutil, sys
arguments = sys.argv[1:]
assert arguments[:2] == ["denoise", "--device"], arguments
out = pathlib.Path(arguments[arguments.index("-o") + 1])
out.mkdir(parents=True, exist_ok=True)
for name in arguments[arguments.index("-o") + 2:]:
    shutil.copy(name, out / pathlib.Path(name).name)
"""


@pytest.mark.slow
@pytest.mark.benchmark
def test_quick_throughput_benchmark(tmp_path):
    topaz = tmp_path / "topaz"
    topaz.write_text(STAND_IN_TOPAZ.format(python=sys.executable))
    topaz.chmod(0o755)
    result = subprocess.run(
        [sys.executable, "bench_throughput.py", "--quick", "--topaz", str(topaz), "--topaz-micrographs", "2",
         "--json", str(tmp_path / "bench.json"), "--markdown", str(tmp_path / "bench.md")],
        cwd=BENCHMARKS, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads((tmp_path / "bench.json").read_text())

    run = document["in_process"]
    assert document["micrographs"] == 3 and document["size_px"] == 512 and len(run["per_micrograph"]) == 3
    breakdown = run["breakdown_s"]
    assert sum(breakdown.values()) == pytest.approx(run["seconds_per_micrograph"], rel=1e-6)
    assert breakdown["forward_s"] > 0 and run["flops_per_micrograph"] > 1e9
    assert run["peak_rss_mib"] >= max(row["rss_mib"] for row in run["per_micrograph"]) > 100
    assert document["matmul_gflops"] > 0 and document["training"]["steps_per_second"] > 0

    shares = [row["share"] for row in document["profile"]]
    assert 0 < sum(shares) <= 1 + 1e-9 and shares == sorted(shares, reverse=True)
    assert any("conv" in row["operator"] for row in document["profile"])

    cli = document["cli"]
    # One RSS reading per output seen while the command ran (the last may come as it exits).
    assert len(cli["rss_at_output_mib"]) in (2, 3) and cli["seconds"] > 0 and cli["peak_rss_mib"] > 100
    topaz_run = document["topaz"]
    assert topaz_run["micrographs"] == 2
    assert topaz_run["topaz"]["seconds"] > 0 and topaz_run["cryoscore"]["seconds"] > 0
    assert "topaz takes" in (tmp_path / "bench.md").read_text()


def test_the_topaz_api_shim_passes_topaz_denoise_arguments_to_the_api_script(tmp_path):
    """benchmarks/topaz-api/topaz answers the bench's probe and hands `denoise -o OUT MRC...` to
    topaz_denoise.py with TOPAZ_PYTHON (a stand-in that records its arguments here)."""
    shim = BENCHMARKS / "topaz-api" / "topaz"
    recorder = tmp_path / "python"
    recorder.write_text(f"#!{sys.executable}\nimport sys, json\nprint(json.dumps(sys.argv[1:]))\n")
    recorder.chmod(0o755)
    environment = {**os.environ, "TOPAZ_PYTHON": str(recorder), "TOPAZ_THREADS": "2"}
    assert subprocess.run([str(shim), "denoise", "--help"], env=environment).returncode == 0
    ran = subprocess.run([str(shim), "denoise", "--device", "-1", "-o", "OUT", "a.mrc", "b.mrc"], env=environment,
                         capture_output=True, text=True, check=True)
    script, *arguments = json.loads(ran.stdout)
    assert Path(script).resolve() == BENCHMARKS / "topaz_denoise.py"
    assert arguments == ["a.mrc", "b.mrc", "-o", "OUT", "--threads", "2"]
    refused = subprocess.run([str(shim), "train"], env=environment, capture_output=True, text=True)
    assert refused.returncode == 2 and "only 'denoise'" in refused.stderr
    # A python without topaz or mrcfile fails the probe, so the bench leaves topaz out before it runs.
    missing = tmp_path / "python-without-topaz"
    missing.write_text("#!/bin/sh\nexit 1\n")
    missing.chmod(0o755)
    probe = subprocess.run([str(shim), "denoise", "--help"], env={**environment, "TOPAZ_PYTHON": str(missing)},
                           capture_output=True, text=True)
    assert probe.returncode == 1 and "cannot import topaz.denoise and mrcfile" in probe.stderr
