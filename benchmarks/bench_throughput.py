"""Throughput of ``cryoscore denoise`` with the default model on large micrographs.

Simulates N micrographs (4096 x 4096 by default; or takes ``--inputs``) and measures, in
this process with torch's default threads, on ``--device``:

* seconds per micrograph and megapixels per second of ``denoise_image`` (the first
  micrograph is a warm-up and is left out of the means), split into reading, the network's
  forward passes, the rest of denoising (normalisation, tiling, copies) and writing;
* resident memory after each micrograph (flat = no growth over the run) and peak RSS;
* FLOPs per micrograph (``torch.utils.flop_counter`` on the warm-up) against the machine's
  measured matmul rate in the forward passes' arithmetic;
* where the time of one micrograph goes, operator by operator (``torch.profiler``);
* training steps per second of a short ``train_model`` run on ``--device`` (default settings, crops of 256);
* the ``cryoscore denoise`` command end to end over all N (process start and model load
  included), with its resident memory each time an output appears;
* when the ``topaz`` command is installed (or ``--topaz PATH``), ``topaz denoise`` and
  ``cryoscore denoise`` on the same first ``--topaz-micrographs`` files, each its own run
  from process start, and the ratio of their wall times.

    python benchmarks/bench_throughput.py --quick                    # small sizes, a smoke run
    python benchmarks/bench_throughput.py --markdown bench.md --json bench.json
    python benchmarks/bench_throughput.py --micrographs 100          # memory over a long run
    python benchmarks/bench_throughput.py --device cuda --micrographs 20 --topaz-micrographs 0
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
from bench_simulate import cpu_description
from torch.utils.flop_counter import FlopCounterMode

from cryoscore.infer import DEFAULT_TILE_PX
from cryoscore.infer.denoise import AUTOCAST_DTYPES, TrainedDenoiser, denoise_image, load_denoiser
from cryoscore.io.mrc import read_mrc, write_mrc
from cryoscore.jobs import read_ahead
from cryoscore.pairs.halves import pairs_from_dataset
from cryoscore.settings import TrainConfig
from cryoscore.simulate.dataset import SimulationConfig, micrograph_name, render_truth, sample_halves, write_dataset
from cryoscore.simulate.volume import load_specimen
from cryoscore.train import train_model

MIB = 2**20
TRAINING_MICROGRAPHS = 8
"""Simulated micrographs written as a whole dataset (with halves, for the training timing);
the others are written as full sums only, which is all that denoising reads."""


def rss_mib(pid: int | str = "self") -> float:
    """Resident memory of a process now (this one by default), MiB; NaN once it is gone."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return float("nan")
    return pages * os.sysconf("SC_PAGE_SIZE") / MIB


def peak_rss_mib() -> float:
    """Peak resident memory of this process (Linux reports KiB), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synchronise(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a no-op on the CPU), so wall times cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """Best matmul rate of ``size`` x ``size`` matrices of ``dtype`` on ``device``, GFLOP/s
    (2 size^3 FLOPs each)."""
    a, b = torch.randn(size, size, device=device, dtype=dtype), torch.randn(size, size, device=device, dtype=dtype)

    def product() -> None:
        a @ b
        synchronise(device)

    product()
    best = min(_timed(product) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def simulate(root: Path, size: int, count: int) -> list[Path]:
    """``count`` simulated ``size`` x ``size`` micrographs (full sums), sorted by name.

    The first :data:`TRAINING_MICROGRAPHS` form a dataset with even/odd halves under
    ``root / "sim"``; the rest are the full sums the same dataset would hold, under
    ``root / "more"`` (a dataset's other files would cost disk and time, not change the timing).
    """
    config = SimulationConfig(n_micrographs=min(count, TRAINING_MICROGRAPHS), size_px=size, n_frames=4,
                              pixel_size_a=1.5, particles_per_micrograph=max(4, 40 * (size // 1024) ** 2), seed=0)
    write_dataset(config, root / "sim", progress=False)
    specimen = load_specimen(config.specimen, config.pixel_size_a)
    (root / "more").mkdir(exist_ok=True)
    for index in range(config.n_micrographs, count):
        even, odd = sample_halves(render_truth(config, specimen, index))
        write_mrc(root / "more" / f"{micrograph_name(index)}.mrc", (even + odd).numpy(), config.pixel_size_a)
    return sorted([*(root / "sim" / "micrographs").glob("*.mrc"), *(root / "more").glob("*.mrc")],
                  key=lambda path: path.name)


class ForwardTimer:
    """Accumulates the wall time of a module's forward passes (seconds) through hooks."""

    def __init__(self, module: torch.nn.Module, device: torch.device):
        self.seconds, self._start = 0.0, 0.0

        def started(*_) -> None:
            synchronise(device)
            self._start = time.perf_counter()

        def finished(*_) -> None:
            synchronise(device)
            self.seconds += time.perf_counter() - self._start

        module.register_forward_pre_hook(started)
        module.register_forward_hook(finished)


def evict_from_page_cache(paths: list[Path]) -> None:
    """Drop the files' pages from the operating system's cache (flushed first; no root needed),
    so that reading them next goes to the disk as it would for fresh micrographs."""
    for path in paths:
        with open(path, "rb") as file:
            os.fsync(file.fileno())
            os.posix_fadvise(file.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def time_in_process(denoiser: TrainedDenoiser, inputs: list[Path], out: Path, tile_px: int) -> dict:
    """Denoise every input in this process, as ``cryoscore denoise`` does; per-micrograph
    timings, RSS and FLOPs.

    As in the command, freed tensor memory is kept for reuse (:mod:`cryoscore.allocator`,
    applied by ``denoise_image``'s forward passes). The inputs start out of the page
    cache, and the next one is read ahead (:func:`~cryoscore.jobs.read_ahead`) while
    the current one is computed, so the first micrograph's read is a cold one and the others
    show what the overlap leaves. Each output is deleted once written and timed, so a long
    run needs no disk for them.
    """
    timer = ForwardTimer(denoiser.model, denoiser.device)
    out.mkdir(parents=True, exist_ok=True)
    evict_from_page_cache(inputs)
    rows = []
    for index, path in enumerate(inputs):
        timer.seconds = 0.0
        start = time.perf_counter()
        image, pixel_size = read_mrc(path)
        read_s = time.perf_counter() - start
        if index + 1 < len(inputs):
            read_ahead(inputs[index + 1])
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
        (out / path.name).unlink()
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
        "cold_read_s": rows[0]["read_s"],
        "flops_per_micrograph": flops,
        "rss_growth_mib": rows[-1]["rss_mib"] - rows[min(1, len(rows) - 1)]["rss_mib"],
        # statm and getrusage count resident pages by different kernel counters that can differ by a
        # few pages, so the peak is at least every reading taken
        "peak_rss_mib": max(peak_rss_mib(), *(row["rss_mib"] for row in rows)),
    }


def operator_profile(denoiser: TrainedDenoiser, path: Path, tile_px: int, top: int = 8) -> list[dict]:
    """Where the time of denoising one micrograph goes: the ``top`` operators by self time
    (``torch.profiler``; device time on a GPU), each with its seconds and share of the total."""
    image, _ = read_mrc(path)
    on_gpu = denoiser.device.type == "cuda"
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if on_gpu else [])
    with torch.profiler.profile(activities=activities) as profile:
        denoise_image(denoiser, image, tile_px=tile_px)
        synchronise(denoiser.device)
    key = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    events = sorted(profile.key_averages(), key=lambda event: getattr(event, key), reverse=True)
    total = sum(getattr(event, key) for event in events)
    return [{"operator": event.key, "seconds": getattr(event, key) / 1e6, "share": getattr(event, key) / total,
             "calls": event.count} for event in events[:top]]


def training_steps_per_second(dataset: Path, steps: int, crop_px: int, device: str) -> dict:
    """Steps per second of ``train_model`` on ``device`` (score method, default batch), setup included."""
    config = TrainConfig(method="score", steps=steps, crop_px=crop_px, checkpoint_every=steps)
    with tempfile.TemporaryDirectory() as tmp:
        result = train_model(pairs_from_dataset(dataset), config, Path(tmp) / "model.pt", progress=False,
                             device=device)
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


def time_command(command: list[str], output_dir: Path) -> dict:
    """Wall time and peak RSS (VmHWM sampled every 20 ms) of a command run to completion, and
    its RSS each time a new ``*.mrc`` appears in ``output_dir`` (outputs are renamed into place
    whole, so each one marks a finished micrograph; the last one can go unseen when the command
    exits within the 20 ms after writing it)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    peak, rss_at_output = 0.0, []
    while process.poll() is None:
        peak = max(peak, _high_water_mib(process.pid))
        finished = len(list(output_dir.glob("*.mrc"))) if output_dir.is_dir() else 0
        if finished > len(rss_at_output):
            rss_at_output.extend([rss_mib(process.pid)] * (finished - len(rss_at_output)))
        time.sleep(0.02)
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise subprocess.CalledProcessError(process.returncode, command)
    return {"command": " ".join(command), "seconds": seconds, "peak_rss_mib": peak, "rss_at_output_mib": rss_at_output}


def cryoscore_command(inputs: list[Path], out: Path, tile_px: int, device: str) -> list[str]:
    return [sys.executable, "-m", "cryoscore.cli", "denoise", *map(str, inputs), "-o", str(out),
            "--tile", str(tile_px), "--device", device]


def compare_with_topaz(topaz: str, inputs: list[Path], root: Path, tile_px: int, device: str) -> dict:
    """``topaz denoise`` (its defaults: the pretrained U-Net, patches of 1024 px) and
    ``cryoscore denoise`` on the same ``inputs``, each a run of its own from process start."""
    topaz_device = ["--device", "0" if device == "cuda" else "-1"]
    return {
        "micrographs": len(inputs),
        "topaz": time_command([topaz, "denoise", *topaz_device, "-o", str(root / "topaz"), *map(str, inputs)],
                              root / "topaz"),
        "cryoscore": time_command(cryoscore_command(inputs, root / "cryoscore-vs-topaz", tile_px, device),
                                  root / "cryoscore-vs-topaz"),
    }


def _rss_trace(values: list[float]) -> str:
    """RSS after each micrograph, all of them for a short run, else ten samples spread over it."""
    if len(values) <= 12:
        return ", ".join(f"{value:.0f}" for value in values)
    picks = np.linspace(0, len(values) - 1, 10).round().astype(int)
    return ", ".join(f"{values[index]:.0f} (#{index + 1})" for index in picks)


def markdown(document: dict) -> str:
    run, train, cli = document["in_process"], document["training"], document["cli"]
    breakdown = run["breakdown_s"]
    achieved = run["flops_per_micrograph"] / breakdown["forward_s"] / 1e9 if breakdown["forward_s"] else float("nan")
    machine = document["machine"]
    lines = [
        f"Machine: {machine['cpu']}{', ' + machine['gpu'] if machine.get('gpu') else ''}, {machine['torch_threads']} "
        f"torch threads, torch {machine['torch']}, Python {machine['python']}. Command: `{document['command']}`.",
        "",
        f"{document['micrographs']} micrographs of {document['size_px']} x {document['size_px']} px, default model on "
        f"{document['device']} ({document['precision']}), tiles of {document['tile_px']} px (first micrograph a "
        "warm-up, left out of the means).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| seconds per micrograph (in process) | {run['seconds_per_micrograph']:.2f} s |",
        f"| megapixels per second | {run['megapixels_per_second']:.2f} |",
        f"| read / network forward / tiling and rest / write | {breakdown['read_s']:.3f} / {breakdown['forward_s']:.2f} / "
        f"{breakdown['tiling_and_rest_s']:.2f} / {breakdown['write_s']:.2f} s |",
        f"| reading a micrograph not in the page cache: without read-ahead (the first) / read ahead during the "
        f"previous one | {run['cold_read_s']:.3f} / {breakdown['read_s']:.3f} s |",
        f"| network FLOPs per micrograph | {run['flops_per_micrograph'] / 1e9:.1f} GFLOP |",
        f"| achieved in the forward passes vs {document['precision']} matmul | {achieved:.1f} vs "
        f"{document['matmul_gflops']:.1f} GFLOP/s |",
        f"| RSS after each micrograph (in process) | {_rss_trace([row['rss_mib'] for row in run['per_micrograph']])} MiB |",
        f"| RSS growth after the warm-up (in process) | {run['rss_growth_mib']:+.0f} MiB |",
        f"| peak RSS of the benchmark's process (simulating the inputs included) | {run['peak_rss_mib']:.0f} MiB |",
        "| training steps per second | not measured (--inputs have no even/odd halves) |" if train is None else
        f"| training steps per second (score, batch {train['batch_size']}, {train['crop_px']} px crops, "
        f"{train['steps']} steps, setup included) | {train['steps_per_second']:.2f} |",
        f"| `cryoscore denoise` over all {document['micrographs']}, per micrograph | "
        f"{cli['seconds'] / document['micrographs']:.2f} s (peak RSS {cli['peak_rss_mib']:.0f} MiB) |",
        f"| `cryoscore denoise` RSS as each output appears | {_rss_trace(cli['rss_at_output_mib'])} MiB |",
    ]
    topaz = document.get("topaz")
    if topaz is None:
        lines.append("| `topaz denoise` | not run (no topaz command, or --topaz-micrographs 0) |")
    else:
        count = topaz["micrographs"]
        lines.append(
            f"| on the first {count}, each from process start: `topaz denoise` / `cryoscore denoise` | "
            f"{topaz['topaz']['seconds'] / count:.1f} / {topaz['cryoscore']['seconds'] / count:.1f} s per micrograph "
            f"(topaz takes {topaz['topaz']['seconds'] / topaz['cryoscore']['seconds']:.1f}x as long; peak RSS "
            f"{topaz['topaz']['peak_rss_mib']:.0f} / {topaz['cryoscore']['peak_rss_mib']:.0f} MiB) |")
    lines += ["", "Where the time of one micrograph goes (in process, `torch.profiler`, self time):", "",
              "| operator | calls | seconds | share |", "|---|---|---|---|"]
    lines += [f"| `{row['operator']}` | {row['calls']} | {row['seconds']:.2f} | {100 * row['share']:.1f} % |"
              for row in document["profile"]]
    return "\n".join(lines) + "\n"


def machine(device: torch.device) -> dict:
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"cpu": cpu_description(), "gpu": gpu, "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=Path, nargs="+", metavar="MRC", help="micrographs to time (default: simulate)")
    parser.add_argument("--size", type=int, default=4096, metavar="PX", help="simulated micrograph edge (default: 4096)")
    parser.add_argument("--micrographs", type=int, default=8, metavar="N", help="simulated micrographs (default: 8)")
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE_PX, metavar="PX",
                        help=f"tile edge (default: {DEFAULT_TILE_PX}, the CLI's)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the model runs (default: cpu)")
    parser.add_argument("--train-steps", type=int, default=50, metavar="N", help="training steps timed (default: 50)")
    parser.add_argument("--topaz", metavar="PATH", default=shutil.which("topaz"),
                        help="the topaz command to compare with (default: topaz on PATH, if any)")
    parser.add_argument("--topaz-micrographs", type=int, default=1, metavar="K",
                        help="micrographs denoised by both topaz and cryoscore for the ratio (default: 1; 0: no topaz)")
    parser.add_argument("--quick", action="store_true", help="3 micrographs of 512 px, 5 training steps of 128 px crops")
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="write the table here")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every number here")
    args = parser.parse_args()
    size, count, steps, crop = (512, 3, 5, 128) if args.quick else (args.size, args.micrographs, args.train_steps, 256)
    denoiser = load_denoiser(device=args.device)
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        root = Path(tmp)
        inputs = args.inputs or simulate(root, size, count)
        compared = inputs[: args.topaz_micrographs]
        document = {
            "command": " ".join(["python", *sys.argv]),
            "machine": machine(denoiser.device),
            "device": args.device, "precision": denoiser.precision,
            "micrographs": len(inputs), "size_px": read_mrc(inputs[0])[0].shape[0], "tile_px": args.tile,
            "matmul_gflops": matmul_gflops(denoiser.device, AUTOCAST_DTYPES.get(denoiser.precision, torch.float32)),
            "in_process": time_in_process(denoiser, inputs, root / "in-process", args.tile),
            "profile": operator_profile(denoiser, inputs[-1], args.tile),
            "training": training_steps_per_second(root / "sim", steps, crop, args.device) if args.inputs is None else None,
            "cli": time_command(cryoscore_command(inputs, root / "cli", args.tile, args.device), root / "cli"),
            "topaz": compare_with_topaz(args.topaz, compared, root, args.tile, args.device)
            if args.topaz and compared else None,
        }
    table = markdown(document)
    print(table, end="")
    if args.markdown:
        args.markdown.write_text(table)
    if args.json:
        args.json.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
