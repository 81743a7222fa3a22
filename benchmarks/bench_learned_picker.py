"""The learned picker on the real EMPIAR-10146 set: k-fold over its 10 micrographs, against the blob picker.

    OMP_NUM_THREADS=1 python benchmarks/bench_learned_picker.py -o benchmarks/learned-picker.json

For raw micrographs (and the 20 A low-pass baseline, the shipped default denoiser, the
default adapted to these 10 micrographs with ``--adapt``'s defaults, and Topaz-Denoise's
outputs from ``--topaz-dir``, made by benchmarks/topaz_denoise.py): the learned picker trained
on the other folds' micrographs (5-fold, seeds 0-2, default training), AP and best F1 pooled over
the 10 micrographs with 95 % bootstrap intervals (cryoscore.bench.crossval), the blob
picker's AP/F1 on the same micrographs with their intervals, the paired differences (learned
minus blob; each denoiser minus raw, same folds and seeds), and the label-budget curve (1, 2, 5 training micrographs per fold; seed 0 only, to fit the time).
Micrographs at their full 1.85 A/px; both pickers resample them themselves. The JSON is
rewritten after every stage, so an interrupted run keeps what it finished.

benchmarks/bench_picker_transfer.py imports :func:`real_set`, :func:`outputs` and
:func:`blob_results` from here; every benchmark's JSON starts with :func:`run_record`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cryoscore import __version__
from cryoscore.bench.config import LearnedJudgeSettings
from cryoscore.bench.crossval import (
    bootstrap_interval,
    cross_validate,
    paired_difference,
    pooled,
)
from cryoscore.filters import lowpass_filter
from cryoscore.infer import FLATTEN_LOWPASS_A
from cryoscore.infer.adapt import AdaptSettings, adapt_denoiser
from cryoscore.infer.denoise import denoise_image, flatten_image, load_denoiser
from cryoscore.io.coords import ParticleCoordinates, read_coordinates
from cryoscore.io.mrc import read_mrc
from cryoscore.metrics.picking import MatchResult, match_picks
from cryoscore.pick.blob import pick_blobs

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "apoferritin-empiar10146"
DIAMETER_A = 120.0
#: The denoiser outputs :func:`outputs` makes.
DENOISERS = ("raw", "lowpass", "default", "flattened", "adapted", "topaz")


def real_set() -> tuple[list[Path], list[np.ndarray], float, list[ParticleCoordinates]]:
    """The 10 real micrographs: their paths, images, pixel size (A) and annotated centres."""
    paths = sorted((DATA / "micrographs").glob("*.mrc"))
    images = [read_mrc(path)[0] for path in paths]
    truths = [read_coordinates(DATA / "coordinates" / f"{path.stem}.star") for path in paths]
    return paths, images, read_mrc(paths[0])[1], truths


def outputs(name: str, images: list[np.ndarray], pixel_a: float, *, lowpass_a: float = 20.0,
            flatten_lowpass_a: float = FLATTEN_LOWPASS_A, paths: list[Path] | None = None,
            topaz_dir: Path | None = None, adapted_path: Path | None = None, adapt: AdaptSettings = AdaptSettings(),
            model_path: Path | None = None, device: str = "cpu") -> list[np.ndarray]:
    """Denoiser ``name``'s outputs of ``images`` (at ``pixel_a`` A/px): ``raw`` (the images),
    ``lowpass`` (``lowpass_a`` A), ``default`` (the shipped model, or ``model_path``), ``flattened`` (the
    images minus that model's background estimate, low-passed at ``flatten_lowpass_a`` A: ``denoise
    --flatten``), ``adapted`` (the default fine-tuned on the micrograph files ``paths`` with ``adapt``, by
    default ``--adapt``'s defaults, saved at ``adapted_path``) or ``topaz`` (``topaz_dir``/NAME.mrc for each
    of ``paths``); the models run (and adapt) on ``device``."""
    if name not in DENOISERS:
        raise ValueError(f"unknown denoiser {name!r}; use one of {', '.join(DENOISERS)}")
    if name == "raw":
        return images
    if name == "lowpass":
        return [lowpass_filter(image, pixel_a, lowpass_a) for image in images]
    if name == "topaz":
        return [read_mrc(topaz_dir / path.name)[0] for path in paths]
    model = load_denoiser(model_path, device)
    if name == "adapted":
        adapt_denoiser(model, paths, adapted_path, adapt, progress=False, device=device)
        model = load_denoiser(adapted_path, device)
    if name == "flattened":
        return [flatten_image(model, image, pixel_size_a=pixel_a, lowpass_a=flatten_lowpass_a) for image in images]
    return [denoise_image(model, image, pixel_size_a=pixel_a) for image in images]


def blob_results(images: list[np.ndarray], truths: list[ParticleCoordinates], pixel_a: float) -> list[MatchResult]:
    """The blob picker's picks on each image matched within half a diameter."""
    radius_px = DIAMETER_A / pixel_a / 2
    row = []
    for image, truth in zip(images, truths):
        found = pick_blobs(image, pixel_a, DIAMETER_A)
        row.append(match_picks(np.stack([found.x_px, found.y_px], 1), found.figure_of_merit,
                               np.stack([truth.x_px, truth.y_px], 1), radius_px))
    return row


def machine() -> dict:
    """Where it ran, for the JSON."""
    return {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()}


def run_record() -> dict:
    """The JSON's provenance: the command as run, :func:`machine` and the versions of cryoscore and torch.

    The command is ``python benchmarks/SCRIPT`` and the arguments, prefixed with ``OMP_NUM_THREADS=N``
    when that variable is set.
    """
    command = shlex.join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    if "OMP_NUM_THREADS" in os.environ:
        command = f"OMP_NUM_THREADS={shlex.quote(os.environ['OMP_NUM_THREADS'])} {command}"
    return {"command": command, "machine": machine(),
            "versions": {"cryoscore": __version__, "torch": torch.__version__}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budgets", type=int, nargs="*", default=[1, 2, 5])
    parser.add_argument("--denoisers", nargs="+", default=["raw", "lowpass"],
                        help="from raw, lowpass, default, adapted, topaz (raw first for the paired differences)")
    parser.add_argument("--topaz-dir", type=Path, help="Topaz-Denoise outputs NAME.mrc of the 10 micrographs")
    parser.add_argument("--lowpass-a", type=float, default=20.0)
    parser.add_argument("--steps", type=int, help="picker training steps (default: the picker's)")
    parser.add_argument("--adapt-learning-rate", type=float, default=AdaptSettings().learning_rate,
                        help="learning rate of the adapted denoiser's fine-tuning (default: --adapt's)")
    args = parser.parse_args()
    paths, raw, pixel_a, truths = real_set()
    radius_px = DIAMETER_A / pixel_a / 2
    settings = LearnedJudgeSettings(folds=args.folds, seeds=tuple(args.seeds), steps=args.steps)
    document = {**run_record(),
                "micrographs": [path.stem for path in paths], "pixel_size_a": pixel_a, "diameter_a": DIAMETER_A,
                "settings": {"folds": settings.folds, "seeds": list(settings.seeds), "steps": settings.steps,
                             "batch_size": settings.batch_size, "bootstrap": settings.bootstrap},
                "denoisers": {}}

    def save() -> None:
        args.output.write_text(json.dumps(document, indent=2) + "\n")

    cross_validated = {}
    for name in args.denoisers:
        images = outputs(name, raw, pixel_a, lowpass_a=args.lowpass_a, paths=paths, topaz_dir=args.topaz_dir,
                         adapted_path=args.output.with_name(args.output.stem + "-adapted.pt"),
                         adapt=AdaptSettings(learning_rate=args.adapt_learning_rate))
        entry = document["denoisers"].setdefault(name, {})
        started = time.perf_counter()
        blob_row = blob_results(images, truths, pixel_a)
        entry["blob"] = {statistic: pooled(blob_row, statistic) for statistic in ("ap", "f1")}
        entry["blob"].update({f"{statistic}_ci": bootstrap_interval([blob_row], statistic) for statistic in ("ap", "f1")})
        entry["blob"]["seconds"] = time.perf_counter() - started
        save()
        full = cross_validated[name] = cross_validate(images, truths, pixel_a, DIAMETER_A, radius_px, settings)
        entry["learned"] = full.summary(settings)
        if name != "raw" and "raw" in cross_validated:
            entry["learned_minus_raw"] = {statistic: paired_difference(full.results, cross_validated["raw"].results,
                                                                       statistic) for statistic in ("ap", "f1")}
        entry["learned_minus_blob"] = {statistic: paired_difference(full.results, [blob_row] * len(full.results),
                                                                    statistic) for statistic in ("ap", "f1")}
        save()
        print(name, "learned", entry["learned"]["ap"], entry["learned"]["ap_ci"], "blob", entry["blob"]["ap"], flush=True)
        if name == "raw":
            budget_settings = LearnedJudgeSettings(folds=args.folds, seeds=tuple(args.seeds[:1]), steps=args.steps)
            entry["label_budget"] = {"seeds": list(budget_settings.seeds)}
            for budget in args.budgets:
                run = cross_validate(images, truths, pixel_a, DIAMETER_A, radius_px, budget_settings,
                                     label_budget=budget)
                entry["label_budget"][str(budget)] = run.summary(budget_settings)
                save()
                print(name, "budget", budget, entry["label_budget"][str(budget)]["ap"], flush=True)
    save()


if __name__ == "__main__":
    main()
