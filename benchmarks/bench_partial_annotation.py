"""Does an incomplete annotation explain the default model's learned-picker gain on the real set? (issue 12)

    OMP_NUM_THREADS=1 python benchmarks/bench_partial_annotation.py SIMULATED_DATASET -o OUT.json \\
        [--keep 0.7] [--selection random|visible] [--folds 4] [--steps 800] [--seed 0]

The real EMPIAR-10146 annotation is a person's: it may miss particles, and the ones it misses
are not random. On a simulated dataset (a ``cryoscore simulate`` directory: its true
coordinates and its particles-only ``clean`` images) each micrograph's annotation is cut to
the fraction ``--keep`` of its particles, for the picker's training and its scoring alike, and
the learned picker judges raw against the shipped default model (k-fold over the micrographs,
one picker seed, paired bootstrap interval of the AP difference).

``--selection random`` keeps a random subset (``numpy.random.default_rng([5, i])`` for
micrograph ``i``). ``--selection visible`` keeps the most visible particles, as a person who
annotates what they see might: a particle's visibility is the contrast of the clean image,
low-passed at 20 A, between its disc (the particle's diameter) and the ring from 1.1 to 1.5
radii around it, times the square root of the disc's pixel count; so a particle cut by the
micrograph's edge, lying on a neighbour or seen in a faint view ranks low.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from bench_learned_picker import run_record

from cryoscore.bench.config import LearnedJudgeSettings
from cryoscore.bench.crossval import cross_validate, paired_difference
from cryoscore.bench.datasets import TestMicrograph, simulated_test_set
from cryoscore.filters import lowpass_filter
from cryoscore.infer.denoise import denoise_image, load_denoiser
from cryoscore.io.coords import ParticleCoordinates

VISIBILITY_LOWPASS_A = 20.0
"""Wavelength (A) below which the clean image is smoothed away before a particle's contrast is measured."""


def visibility(micrograph: TestMicrograph, pixel_size_a: float, radius_px: float) -> np.ndarray:
    """Each annotated particle's visibility in ``micrograph`` (see the module docstring), (n,)."""
    assert micrograph.clean is not None, "a simulated micrograph has its clean image"
    clean = lowpass_filter(micrograph.clean, pixel_size_a, VISIBILITY_LOWPASS_A)
    rows, cols = np.indices(clean.shape)
    scores = []
    for x, y in zip(micrograph.truth.x_px, micrograph.truth.y_px):
        distance = np.hypot(rows - y, cols - x)
        disc, ring = distance <= radius_px, (distance > 1.1 * radius_px) & (distance <= 1.5 * radius_px)
        inside = float(clean[disc].mean()) if disc.any() else 0.0
        outside = float(clean[ring].mean()) if ring.any() else 0.0
        scores.append(abs(inside - outside) * np.sqrt(max(int(disc.sum()), 1)))
    return np.asarray(scores)


def kept_annotation(micrograph: TestMicrograph, index: int, keep: float, selection: str, pixel_size_a: float,
                    radius_px: float) -> ParticleCoordinates:
    """The part of ``micrograph``'s annotation that ``selection`` keeps (``keep`` of it, rounded)."""
    count = len(micrograph.truth.x_px)
    kept = int(round(keep * count))
    if selection == "random":
        chosen = np.random.default_rng([5, index]).choice(count, kept, replace=False)
    else:
        chosen = np.argsort(-visibility(micrograph, pixel_size_a, radius_px), kind="stable")[:kept]
    return micrograph.truth.take(np.sort(chosen))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", type=Path, help="a simulated dataset directory")
    parser.add_argument("-o", "--output", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--keep", type=float, default=0.7, help="fraction of each annotation kept (default: 0.7)")
    parser.add_argument("--selection", choices=("random", "visible"), default="visible")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=800, help="picker training steps (default: 800)")
    parser.add_argument("--seed", type=int, default=0, help="picker seed (default: 0)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where the model and the pickers run (default: cpu)")
    args = parser.parse_args()
    if not 0 < args.keep <= 1:
        parser.error("--keep must lie in (0, 1]")
    started = time.perf_counter()
    test_set = simulated_test_set(args.dataset, args.dataset.name)
    pixel_size_a, diameter_a = test_set.pixel_size_a, test_set.diameter_a
    radius_px = diameter_a / pixel_size_a / 2
    truths = [kept_annotation(micrograph, index, args.keep, args.selection, pixel_size_a, radius_px)
              for index, micrograph in enumerate(test_set.micrographs)]
    raw = [micrograph.full_sum for micrograph in test_set.micrographs]
    model = load_denoiser(device=args.device)
    denoised = [denoise_image(model, image, pixel_size_a=pixel_size_a) for image in raw]
    settings = LearnedJudgeSettings(folds=args.folds, seeds=(args.seed,), steps=args.steps, device=args.device)
    document = {
        **run_record(),
        "annotation": {"kept_fraction": args.keep, "selection": args.selection,
                       "kept_per_micrograph": [len(truth.x_px) for truth in truths]},
        "rows": [],
    }
    runs = {}
    for name, images in (("raw", raw), ("default", denoised)):
        runs[name] = cross_validate(images, truths, pixel_size_a, diameter_a, radius_px, settings)
        row = {"denoiser": name, **runs[name].summary(settings)}
        if name != "raw":
            row["minus_raw"] = paired_difference(runs[name].results, runs["raw"].results, "ap")
        document["rows"].append(row)
        print(name, f"AP {row['ap']:.3f}", row.get("minus_raw", ""), flush=True)
    document["seconds"] = time.perf_counter() - started
    args.output.write_text(json.dumps(document, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
