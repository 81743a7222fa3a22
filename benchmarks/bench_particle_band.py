"""What a denoiser keeps in the particles' band: the noise-free particles, or the ice?

    OMP_NUM_THREADS=1 python benchmarks/bench_particle_band.py DATASET_DIR -o OUT.json \
        [--denoisers raw lowpass default NAME=MODEL.pt ...] [--micrographs 2]

On a simulated dataset (``cryoscore simulate``: ``clean/`` holds the noise-free particles,
``background/`` the noise-free ice and carbon), each denoiser's output of the first
micrographs is band-passed to the particles' scales (wavelengths from a particle diameter
/ 8 to 2 diameters, hard edges) and correlated there with the band-passed particles, the
background and their sum. A denoiser that helps a picker raises the correlation with the
particles; one that keeps the ice and shrinks the particles raises only the other two.
Prints a table and writes every number to OUT.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from cryoscore.bench.datasets import simulated_test_set
from cryoscore.filters import lowpass_filter
from cryoscore.infer.denoise import denoise_image, load_denoiser
from cryoscore.io.mrc import read_mrc

LOWPASS_A = 20.0


def band_pass(image: np.ndarray, pixel_a: float, shortest_a: float, longest_a: float) -> np.ndarray:
    """``image`` (H, W) keeping only the wavelengths from ``shortest_a`` to ``longest_a`` Angstrom."""
    frequency = np.hypot(np.fft.fftfreq(image.shape[0], pixel_a)[:, None], np.fft.rfftfreq(image.shape[1], pixel_a)[None])
    kept = (frequency >= 1 / longest_a) & (frequency <= 1 / shortest_a)
    return np.fft.irfft2(np.fft.rfft2(image - image.mean()) * kept, s=image.shape)


def correlation(first: np.ndarray, second: np.ndarray) -> float:
    first, second = first - first.mean(), second - second.mean()
    return float(np.sum(first * second) / np.sqrt(np.sum(first**2) * np.sum(second**2)))


def denoiser_function(spec: str, pixel_a: float):
    """``raw``, ``lowpass`` (20 A), ``default`` (the shipped model) or ``NAME=MODEL.pt``; returns (name, function)."""
    if spec == "raw":
        return spec, lambda image: image
    if spec == "lowpass":
        return spec, lambda image: lowpass_filter(image, pixel_a, LOWPASS_A)
    name, _, path = spec.partition("=")
    model = load_denoiser(None if spec == "default" else Path(path))
    return name, lambda image: denoise_image(model, image, pixel_size_a=pixel_a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--denoisers", nargs="+", default=["raw", "lowpass", "default"])
    parser.add_argument("--micrographs", type=int, default=2, help="the first N micrographs (default: 2)")
    args = parser.parse_args()
    test_set = simulated_test_set(args.dataset, args.dataset.name)
    pixel_a, diameter_a = test_set.pixel_size_a, test_set.diameter_a
    shortest_a, longest_a = diameter_a / 8, 2 * diameter_a
    functions = dict(denoiser_function(spec, pixel_a) for spec in args.denoisers)
    rows = []
    for micrograph in test_set.micrographs[: args.micrographs]:
        background, _ = read_mrc(args.dataset / "background" / f"{micrograph.name}.mrc")
        particles = band_pass(micrograph.clean, pixel_a, shortest_a, longest_a)
        ice = band_pass(background, pixel_a, shortest_a, longest_a)
        for name, function in functions.items():
            output = band_pass(function(micrograph.full_sum), pixel_a, shortest_a, longest_a)
            rows.append({"micrograph": micrograph.name, "denoiser": name, "particles": correlation(output, particles),
                         "background": correlation(output, ice), "both": correlation(output, particles + ice)})
            print(" ".join(f"{value:.3f}" if isinstance(value, float) else value for value in rows[-1].values()),
                  flush=True)
    means = {name: {key: float(np.mean([row[key] for row in rows if row["denoiser"] == name]))
                    for key in ("particles", "background", "both")} for name in functions}
    print("\n| denoiser | particles | background | both |\n|---|---|---|---|")
    for name, mean in means.items():
        print(f"| {name} | {mean['particles']:.3f} | {mean['background']:.3f} | {mean['both']:.3f} |")
    args.output.write_text(json.dumps({"dataset": str(args.dataset), "band_a": [shortest_a, longest_a],
                                       "rows": rows, "means": means}, indent=1) + "\n")


if __name__ == "__main__":
    main()
