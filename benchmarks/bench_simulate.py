"""Time and memory of ``cryoscore simulate`` per micrograph.

Each case runs in its own process (so peak memory is that case's own) and simulates
three micrographs into a temporary directory, all files written; the first micrograph
also pays for building the specimen and warming up, so the figure reported is the
mean time per micrograph of the last two.

    python benchmarks/bench_simulate.py            # prints a Markdown table
    python benchmarks/bench_simulate.py --markdown benchmarks/simulate.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

CASES = [
    {"size_px": 1024, "n_frames": 40, "write_frames": False, "drift_a": 0.0},
    {"size_px": 1024, "n_frames": 40, "write_frames": False, "drift_a": 10.0},
    {"size_px": 1024, "n_frames": 40, "write_frames": True, "drift_a": 10.0},
    {"size_px": 4096, "n_frames": 40, "write_frames": False, "drift_a": 10.0},
]


def run_case(case: dict) -> dict:
    """Simulate three micrographs of one case in this process; time each one."""
    import torch

    from cryoscore.io.layout import DatasetLayout
    from cryoscore.simulate.dataset import SimulationConfig, render_truth, write_micrograph
    from cryoscore.simulate.volume import load_specimen

    config = replace(
        SimulationConfig(pixel_size_a=1.5, dose_e_per_a2=40.0, n_micrographs=1),
        particles_per_micrograph=40 * (case["size_px"] // 1024) ** 2,
        **case,
    )
    specimen = load_specimen(config.specimen, config.pixel_size_a)
    layout = DatasetLayout(Path(tempfile.mkdtemp(prefix="bench-sim-")))
    seconds = []
    for index in range(3):
        start = time.perf_counter()
        truth = render_truth(config, specimen, index)
        write_micrograph(layout, config, truth)
        seconds.append(time.perf_counter() - start)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {**case, "particles": config.particles_per_micrograph, "seconds": sum(seconds[1:]) / 2,
            "first_seconds": seconds[0], "peak_rss_mib": peak_mib, "threads": torch.get_num_threads()}


def cpu_description() -> str:
    """The CPU model and core count, e.g. "AMD EPYC, 2 cores"."""
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        model = platform.machine()
    return f"{model}, {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", type=json.loads, help=argparse.SUPPRESS)
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    if args.case is not None:
        print(json.dumps(run_case(args.case)))
        return
    rows = []
    for case in CASES:
        output = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)], check=True,
                                capture_output=True, text=True).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
    lines = [
        f"Machine: {cpu_description()}, {rows[0]['threads']} torch threads, "
        f"Python {platform.python_version()}. Command: `python benchmarks/bench_simulate.py`.",
        "",
        "| micrograph | frames | drift | frames written | particles | s / micrograph | first (incl. specimen) | peak RSS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['size_px']} x {row['size_px']} | {row['n_frames']} | {row['drift_a']:.0f} A | "
            f"{'yes' if row['write_frames'] else 'no'} | {row['particles']} | {row['seconds']:.2f} s | "
            f"{row['first_seconds']:.2f} s | {row['peak_rss_mib']:.0f} MiB |"
        )
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    main()
