"""Guided background against the band of wavelengths taken from the data (``BACKGROUND_DIAMETERS``).

    OMP_NUM_THREADS=1 python benchmarks/bench_guided_background.py OUTDIR --method guided --diameters 4
    # --method raw | n2n | guided; --specimen apoferritin --dose 20 --seed-index 0 for apoferritin

Simulates one condition of the default benchmark exactly as ``cryoscore bench`` does (its
``[[simulated]]`` specimen, dose and ``seed_index``; 3 test micrographs, 4 training micrographs,
particles at a fifth of the weak-phase contrast, ice at a tenth of the default strength), trains
the model as the bench trains it (400 steps, seed 0) with ``pairs.guidance.BACKGROUND_DIAMETERS``
set to ``--diameters``, and prints one JSON line: the background power left (low-frequency power in
particle-free areas, ``metrics.pixel``; mean and per micrograph), the blob picker's AP and the
training time. The denoised micrographs are written to OUTDIR as MRC files to look at.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from cryoscore.bench.config import BenchConfig, SimulatedSpecimen, SimulationSettings, TrainingSettings
from cryoscore.bench.datasets import simulate_specimen, simulated_test_set
from cryoscore.bench.denoisers import denoise_functions, train_models
from cryoscore.bench.judges import judge_denoiser
from cryoscore.io.mrc import write_mrc
from cryoscore.metrics.pixel import pixel_metrics
from cryoscore.pairs import guidance
from cryoscore.pairs.halves import pairs_from_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output", type=Path)
    parser.add_argument("--method", choices=("raw", "n2n", "guided"), default="guided")
    parser.add_argument("--diameters", type=float, default=guidance.BACKGROUND_DIAMETERS)
    parser.add_argument("--specimen", default="elongated")
    parser.add_argument("--dose", type=float, default=60.0)
    parser.add_argument("--seed-index", type=int, default=1)
    args = parser.parse_args()
    guidance.BACKGROUND_DIAMETERS = args.diameters
    specimen = SimulatedSpecimen(args.specimen, doses=(args.dose,), seed_index=args.seed_index)
    config = BenchConfig(simulated=(specimen,), simulation=SimulationSettings(contrast_scale=0.2, background_strength=0.1))
    train_dirs, test_dirs, _ = simulate_specimen(config, 0, args.output / "data")
    started = time.perf_counter()
    models = {} if args.method == "raw" else train_models(
        [pair for directory in train_dirs for pair in pairs_from_dataset(directory)], [args.method], TrainingSettings(),
        args.output / f"models-{args.diameters:g}", reference=str(train_dirs[0] / "reference.mrc"))
    seconds = time.perf_counter() - started
    test_set = simulated_test_set(test_dirs[0], f"{args.specimen} {args.dose:g} e/A^2")
    name, denoise = next(iter(denoise_functions(["raw"] if args.method == "raw" else [], models,
                                                test_set.pixel_size_a, 20.0).items()))
    estimates, per_micrograph = [], []
    for micrograph in test_set.micrographs:
        estimate = denoise(micrograph.full_sum)
        estimates.append(estimate)
        write_mrc(args.output / f"{name}-{args.diameters:g}-{micrograph.name}.mrc", estimate, test_set.pixel_size_a)
        centres_rc = [(y, x) for y, x in zip(micrograph.truth.y_px, micrograph.truth.x_px)]
        per_micrograph.append(pixel_metrics(estimate, micrograph.clean, centres_rc, test_set.diameter_a / test_set.pixel_size_a,
                                            test_set.pixel_size_a).background_power)
    denoised = iter(estimates)  # the blob judge takes the micrographs in the same order: each is denoised once
    outcome = judge_denoiser(test_set, name, lambda image: next(denoised), ("blob",))
    print(json.dumps({"condition": test_set.label, "method": name, "background_diameters": args.diameters,
                      "train_seconds": round(seconds, 1), "background_power": float(np.mean(per_micrograph)),
                      "background_power_per_micrograph": per_micrograph, "blob_ap": outcome.metrics["blob"]["ap"]}))


if __name__ == "__main__":
    main()
