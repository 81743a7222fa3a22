"""What a denoiser keeps in the particles' band: the noise-free particles, or the ice?

    OMP_NUM_THREADS=1 python benchmarks/bench_particle_band.py DATASET_DIR -o OUT.json \
        [--denoisers raw lowpass default NAME=MODEL.pt ...] [--micrographs 2]

On a simulated dataset (``cryoscore simulate``: ``clean/`` holds the noise-free particles,
``background/`` the noise-free ice and carbon), each denoiser's output of the first
micrographs is band-passed to the particles' scales (wavelengths from a particle diameter
/ 8 to 2 diameters, hard edges) and correlated there with the band-passed particles, the
background and their sum. A denoiser that helps a picker raises the correlation with the
particles; one that keeps the ice and shrinks the particles raises only the other two.
The band measures (``pairs.guidance.band_power``) exclude each image's edges, which the plain FFT once
counted as power at every frequency (benchmarks/RESULTS.md section 6, "A correction"; the ``--periodic``
option of that correction measured as this script now always does). Prints a table and writes every number to OUT.json,
with the background's band power over the particles' per micrograph.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from bench_learned_picker import outputs, run_record

from cryoscore.bench.datasets import simulated_test_set
from cryoscore.io.mrc import read_mrc
from cryoscore.pairs.guidance import band_correlation, band_power, particle_band_a


def denoised_outputs(spec: str, images: list[np.ndarray], pixel_a: float) -> tuple[str, list[np.ndarray]]:
    """``raw``, ``lowpass`` (20 A), ``default`` (the shipped model) or ``NAME=MODEL.pt``: (name, outputs)."""
    name, _, model_path = spec.partition("=")
    if not model_path:
        return name, outputs(name, images, pixel_a)
    return name, outputs("default", images, pixel_a, model_path=Path(model_path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--denoisers", nargs="+", default=["raw", "lowpass", "default"])
    parser.add_argument("--micrographs", type=int, default=2, help="the first N micrographs (default: 2)")
    args = parser.parse_args()
    test_set = simulated_test_set(args.dataset, args.dataset.name)
    pixel_a, diameter_a = test_set.pixel_size_a, test_set.diameter_a
    band = particle_band_a(diameter_a)
    micrographs = test_set.micrographs[: args.micrographs]
    denoised = dict(denoised_outputs(spec, [micrograph.full_sum for micrograph in micrographs], pixel_a)
                    for spec in args.denoisers)
    rows, power_ratio = [], {}
    for index, micrograph in enumerate(micrographs):
        ice, _ = read_mrc(args.dataset / "background" / f"{micrograph.name}.mrc")
        truths = {"particles": micrograph.clean, "background": ice, "both": micrograph.clean + ice}
        power_ratio[micrograph.name] = (band_power(truths["background"], truths["background"], pixel_a, band[1], band[0])
                                        / band_power(truths["particles"], truths["particles"], pixel_a, band[1], band[0]))
        for name, images in denoised.items():
            output = images[index]
            rows.append({"micrograph": micrograph.name, "denoiser": name,
                         **{key: band_correlation(output, truth, pixel_a, *band) for key, truth in truths.items()}})
            print(" ".join(f"{value:.3f}" if isinstance(value, float) else value for value in rows[-1].values()),
                  flush=True)
    means = {name: {key: float(np.mean([row[key] for row in rows if row["denoiser"] == name]))
                    for key in ("particles", "background", "both")} for name in denoised}
    print("\n| denoiser | particles | background | both |\n|---|---|---|---|")
    for name, mean in means.items():
        print(f"| {name} | {mean['particles']:.3f} | {mean['background']:.3f} | {mean['both']:.3f} |")
    print("background's band power over the particles':", {name: round(ratio, 3) for name, ratio in power_ratio.items()})
    args.output.write_text(json.dumps({**run_record(), "dataset": str(args.dataset), "band_a": list(band),
                                       "background_over_particles_power": power_ratio,
                                       "rows": rows, "means": means}, indent=1) + "\n")


if __name__ == "__main__":
    main()
