"""Throughput of ``cryoscore denoise`` with the default model on large micrographs.

Simulates N micrographs (4096 x 4096 by default; or takes ``--inputs``) and measures, in
this process with torch's default threads:

* seconds per micrograph and megapixels per second of ``denoise_image`` (the first
  micrograph is a warm-up and is left out of the means), split into reading, the network's
  forward passes, the rest of denoising (normalisation, tiling, copies) and writing;
* resident memory after each micrograph (flat = no growth over the run) and peak RSS;
* FLOPs per micrograph (``torch.utils.flop_counter`` on the warm-up) against the machine's
  measured float32 matmul rate;
* training steps per second of a short ``train_model`` run (default settings, crops of 256);
* the ``cryoscore denoise`` command end to end (process start and model load included),
  and ``topaz denoise`` on the same files when the ``topaz`` command is installed, with the
  ratio of their wall times.

    python benchmarks/bench_throughput.py --quick                    # small sizes, a smoke run
    python benchmarks/bench_throughput.py --markdown bench.md --json bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from bench_simulate import cpu_description
from cryoscore.infer.denoise import denoise_image, load_denoiser
from cryoscore.io.mrc import read_mrc, write_mrc
from cryoscore.pairs.halves import pairs_from_dataset
from cryoscore.simulate.dataset import SimulationConfig, write_dataset
from cryoscore.train import TrainConfig, train_model

MIB = 2**20


def rss_mib() -> float:
    """Resident memory of this process now, MiB (``/proc/self/statm``, else psutil, else NaN)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / MIB
    except (OSError, ValueError, IndexError):
        try:
            import psutil
        except ImportError:
            return float("nan")
        return psutil.Process().memory_info().rss / MIB


def peak_rss_mib() -> float:
    """Peak resident memory of this process (Linux reports KiB), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Best float32 matmul rate of ``size`` x ``size`` matrices, GFLOP/s (2 size^3 FLOPs each)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def simulate(root: Path, size: int, count: int) -> list[Path]:
    """``count`` simulated ``size`` x ``size`` micrographs (with even/odd halves) under ``root``."""
    config = SimulationConfig(n_micrographs=count, size_px=size, n_frames=4, pixel_size_a=1.5,
                              particles_per_micrograph=max(4, 40 * (size // 1024) ** 2), seed=0)
    write_dataset(config, root, progress=False)
    return sorted((root / "micrographs").glob("*.mrc"))


class ForwardTimer:
    """Accumulates the wall time of a module's forward passes (seconds) through hooks."""

    def __init__(self, module: torch.nn.Module):
        self.seconds, self._start = 0.0, 0.0
        module.register_forward_pre_hook(lambda *_: setattr(self, "_start", time.perf_counter()))
        module.register_forward_hook(lambda *_: setattr(self, "seconds", self.seconds + time.perf_counter() - self._start))


def time_in_process(inputs: list[Path], out: Path, tile_px: int) -> dict:
    """Denoise every input in this process; per-micrograph timings, RSS and FLOPs."""
    denoiser = load_denoiser()
    timer = ForwardTimer(denoiser.model)
    rows = []
    for index, path in enumerate(inputs):
        timer.seconds = 0.0
        start = time.perf_counter()
        image, pixel_size = read_mrc(path)
        read_s = time.perf_counter() - start
        counter = FlopCounterMode(display=False) if index == 0 else None
        start = time.perf_counter()
        if counter is not None:
            with counter:
                result = denoise_image(denoiser, image, tile_px=tile_px)
        else:
            result = denoise_image(denoiser, image, tile_px=tile_px)
        denoise_s = time.perf_counter() - start
        start = time.perf_counter()
        write_mrc(out / path.name, result, pixel_size)
        write_s = time.perf_counter() - start
        rows.append({"name": path.name, "megapixels": image.size / 1e6, "read_s": read_s, "forward_s": timer.seconds,
                     "tiling_and_rest_s": denoise_s - timer.seconds, "write_s": write_s,
                     "total_s": read_s + denoise_s + write_s, "rss_mib": rss_mib()})
        if counter is not None:
            flops = counter.get_total_flops()
        del image, result
    timed = rows[1:] or rows
    seconds = float(np.mean([row["total_s"] for row in timed]))
    return {
        "per_micrograph": rows,
        "seconds_per_micrograph": seconds,
        "megapixels_per_second": float(np.mean([row["megapixels"] for row in timed])) / seconds,
        "breakdown_s": {key: float(np.mean([row[key] for row in timed]))
                        for key in ("read_s", "forward_s", "tiling_and_rest_s", "write_s")},
        "flops_per_micrograph": flops,
        "rss_growth_mib": rows[-1]["rss_mib"] - rows[min(1, len(rows) - 1)]["rss_mib"],
        "peak_rss_mib": peak_rss_mib(),
    }


def training_steps_per_second(dataset: Path, steps: int, crop_px: int) -> dict:
    """Steps per second of ``train_model`` (score method, default batch), setup included."""
    config = TrainConfig(method="score", steps=steps, crop_px=crop_px, checkpoint_every=steps)
    with tempfile.TemporaryDirectory() as tmp:
        result = train_model(pairs_from_dataset(dataset), config, Path(tmp) / "model.pt", progress=False)
    return {"steps": steps, "batch_size": config.batch_size, "crop_px": crop_px, "seconds": result.seconds,
            "steps_per_second": steps / result.seconds}


def _high_water_mib(pid: int) -> float:
    """VmHWM of a running process, MiB (0 once it is gone). Unlike the child's ``ru_maxrss``,
    which Linux carries over from the parent at fork, it counts only the command's own memory."""
    try:
        line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmHWM"))
    except (OSError, StopIteration):
        return 0.0
    return int(line.split()[1]) / 1024


def time_command(command: list[str]) -> dict:
    """Wall time and peak RSS (VmHWM sampled every 20 ms) of a command run to completion."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    peak = 0.0
    while process.poll() is None:
        peak = max(peak, _high_water_mib(process.pid))
        time.sleep(0.02)
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise subprocess.CalledProcessError(process.returncode, command)
    return {"command": " ".join(command), "seconds": seconds, "peak_rss_mib": peak}


def markdown(document: dict) -> str:
    run, train = document["in_process"], document["training"]
    rss = ", ".join(f"{row['rss_mib']:.0f}" for row in run["per_micrograph"])
    breakdown = run["breakdown_s"]
    achieved = run["flops_per_micrograph"] / breakdown["forward_s"] / 1e9 if breakdown["forward_s"] else float("nan")
    lines = [
        f"Machine: {document['machine']['cpu']}, {document['machine']['torch_threads']} torch threads, torch "
        f"{document['machine']['torch']}, Python {document['machine']['python']}. "
        f"Command: `{document['command']}`.",
        "",
        f"{document['micrographs']} micrographs of {document['size_px']} x {document['size_px']} px, default model, "
        f"tiles of {document['tile_px']} px (first micrograph a warm-up, left out of the means).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| seconds per micrograph (in process) | {run['seconds_per_micrograph']:.2f} s |",
        f"| megapixels per second | {run['megapixels_per_second']:.2f} |",
        f"| read / network forward / tiling and rest / write | {breakdown['read_s']:.2f} / {breakdown['forward_s']:.2f} / "
        f"{breakdown['tiling_and_rest_s']:.2f} / {breakdown['write_s']:.2f} s |",
        f"| network FLOPs per micrograph | {run['flops_per_micrograph'] / 1e9:.1f} GFLOP |",
        f"| achieved in the forward passes vs float32 matmul | {achieved:.1f} vs {document['matmul_gflops']:.1f} GFLOP/s |",
        f"| RSS after each micrograph | {rss} MiB |",
        f"| RSS growth after the warm-up | {run['rss_growth_mib']:+.0f} MiB |",
        f"| peak RSS (in process) | {run['peak_rss_mib']:.0f} MiB |",
        "| training steps per second | not measured (--inputs have no even/odd halves) |" if train is None else
        f"| training steps per second (score, batch {train['batch_size']}, {train['crop_px']} px crops, "
        f"{train['steps']} steps, setup included) | {train['steps_per_second']:.2f} |",
        f"| `cryoscore denoise` end to end, per micrograph | {document['cli']['seconds'] / document['micrographs']:.2f} s "
        f"(peak RSS {document['cli']['peak_rss_mib']:.0f} MiB) |",
    ]
    topaz = document.get("topaz")
    if topaz is None:
        lines.append("| `topaz denoise` | not installed |")
    else:
        lines.append(f"| `topaz denoise` end to end, per micrograph | {topaz['seconds'] / document['micrographs']:.2f} s "
                     f"(topaz / cryoscore wall time {topaz['seconds'] / document['cli']['seconds']:.2f}) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=Path, nargs="+", metavar="MRC", help="micrographs to time (default: simulate)")
    parser.add_argument("--size", type=int, default=4096, metavar="PX", help="simulated micrograph edge (default: 4096)")
    parser.add_argument("--micrographs", type=int, default=8, metavar="N", help="simulated micrographs (default: 8)")
    parser.add_argument("--tile", type=int, default=1024, metavar="PX", help="tile edge (default: 1024, the CLI's)")
    parser.add_argument("--train-steps", type=int, default=50, metavar="N", help="training steps timed (default: 50)")
    parser.add_argument("--quick", action="store_true", help="3 micrographs of 512 px, 5 training steps of 128 px crops")
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="write the table here")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every number here")
    args = parser.parse_args()
    size, count, steps, crop = (512, 3, 5, 128) if args.quick else (args.size, args.micrographs, args.train_steps, 256)
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        root = Path(tmp)
        inputs = args.inputs or simulate(root / "sim", size, count)
        document = {
            "command": " ".join(["python", *sys.argv]),
            "machine": {"cpu": cpu_description(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                        "python": platform.python_version(), "platform": platform.platform()},
            "micrographs": len(inputs), "size_px": read_mrc(inputs[0])[0].shape[0], "tile_px": args.tile,
            "matmul_gflops": matmul_gflops(),
            "in_process": time_in_process(inputs, root / "in-process", args.tile),
            "training": training_steps_per_second(root / "sim", steps, crop) if args.inputs is None else None,
            "cli": time_command([sys.executable, "-m", "cryoscore.cli", "denoise", *map(str, inputs), "-o", str(root / "cli"),
                                 "--tile", str(args.tile), "--device", "cpu"]),
            "topaz": (time_command(["topaz", "denoise", "--device", "-1", "-o", str(root / "topaz"), *map(str, inputs)])
                      if shutil.which("topaz") else None),
        }
    table = markdown(document)
    print(table, end="")
    if args.markdown:
        args.markdown.write_text(table)
    if args.json:
        args.json.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
