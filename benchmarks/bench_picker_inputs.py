"""What a learned picker gains from each picker input made of a raw micrograph and the default model's output.

    OMP_NUM_THREADS=1 python benchmarks/bench_picker_inputs.py DATASET_DIR -o OUT.json \
        [--inputs raw lowpass default raw-highpass lowpass-highpass default-highpass blend]

On a simulated test set (e.g. ``cryoscore bench``'s ``work/SPECIMEN/test-DOSEe``), the learned
judge of ``cryoscore bench`` (k-fold over the micrographs, 800 picker steps, seed 0 unless
told) on:

- ``raw``, ``lowpass`` (Gaussian, 20 A) and ``default`` (the shipped model), as the bench makes them;
- ``*-highpass``: the same minus its Gaussian blur of one particle diameter (sigma in pixels =
  diameter / pixel size): the background (ice, carbon, contamination) removed, nothing else;
- ``blend``: the mean of the default model's output and the low-pass, each standardised
  (zero mean, unit standard deviation over the micrograph).

It separates what a denoiser's output loses for a picker (the posterior mean's shrinkage of
weak particles) from what removing noise linearly and removing the background gain. The JSON
is rewritten after every input.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from bench_learned_picker import outputs, run_record
from scipy.ndimage import gaussian_filter

from cryoscore.bench.config import LearnedJudgeSettings
from cryoscore.bench.crossval import cross_validate
from cryoscore.bench.datasets import simulated_test_set

INPUTS = ("raw", "lowpass", "default", "raw-highpass", "lowpass-highpass", "default-highpass", "blend")


def _standardised(image: np.ndarray) -> np.ndarray:
    return (image - image.mean()) / image.std()


def picker_inputs(names: list[str], images: list[np.ndarray], pixel_a: float,
                  diameter_a: float) -> dict[str, list[np.ndarray]]:
    """Each input of ``names`` (see the module docstring) for every (H, W) micrograph of ``images``;
    each of raw, lowpass and default is made once, whichever inputs need it."""
    made: dict[str, list[np.ndarray]] = {}

    def base(name: str) -> list[np.ndarray]:
        if name not in made:
            made[name] = outputs(name, images, pixel_a)
        return made[name]

    inputs = {}
    for name in names:
        source, _, highpass = name.partition("-")
        if name == "blend":
            inputs[name] = [0.5 * _standardised(denoised) + 0.5 * _standardised(smoothed)
                            for denoised, smoothed in zip(base("default"), base("lowpass"))]
        elif highpass:
            inputs[name] = [image - gaussian_filter(image, diameter_a / pixel_a) for image in base(source)]
        else:
            inputs[name] = base(name)
    return inputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path, help="a simulated dataset directory")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--inputs", nargs="+", choices=INPUTS, default=list(INPUTS))
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=800)
    args = parser.parse_args()
    test_set = simulated_test_set(args.dataset, args.dataset.name)
    pixel_a, diameter_a = test_set.pixel_size_a, test_set.diameter_a
    truths = [micrograph.truth for micrograph in test_set.micrographs]
    inputs = picker_inputs(args.inputs, [micrograph.full_sum for micrograph in test_set.micrographs], pixel_a,
                           diameter_a)
    settings = LearnedJudgeSettings(folds=args.folds, seeds=tuple(args.seeds), steps=args.steps)
    document = {**run_record(),
                "dataset": str(args.dataset), "pixel_size_a": pixel_a, "diameter_a": diameter_a, "rows": []}
    for name, images in inputs.items():
        run = cross_validate(images, truths, pixel_a, diameter_a, diameter_a / pixel_a / 2, settings)
        row = {"input": name, **run.summary(settings)}
        document["rows"].append(row)
        args.output.write_text(json.dumps(document, indent=2) + "\n")
        print(name, round(row["ap"], 3), [round(value, 3) for value in row["ap_ci"]], flush=True)


if __name__ == "__main__":
    main()
