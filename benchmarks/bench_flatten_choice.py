"""What `cryoscore denoise --flatten auto` measures on each micrograph, what it chooses, and whether that keeps more particles.

    OMP_NUM_THREADS=1 python benchmarks/bench_flatten_choice.py -o OUT.json [DATASET_DIR ...] [--real]

For every micrograph of each simulated dataset (``cryoscore simulate``) and, with ``--real``, of the
real EMPIAR-10146 set: the background strength ``--flatten auto`` decides by
(:func:`cryoscore.infer.denoise.background_strength`: the shipped model's background estimate at scales
longer than two particle diameters over what its posterior mean holds beyond it at the particles' scales;
a dataset whose median is above :data:`~cryoscore.infer.denoise.BACKGROUND_STRENGTH_TO_FLATTEN` is
flattened: :func:`~cryoscore.infer.denoise.should_flatten`), and, in the particles' band, the correlation
of the posterior mean with the background estimate and the ratio of their powers.
Where the noise-free particles are known (simulated data), also the particle-band correlation with them
of the raw micrograph, the posterior mean and the flattened micrograph. Band measures exclude the images'
edges (``pairs.guidance.band_power``). Prints a row per dataset and writes every number to OUT.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from bench_learned_picker import DIAMETER_A, real_set, run_record

from cryoscore.bench.datasets import simulated_test_set
from cryoscore.filters import lowpass_filter
from cryoscore.infer import FLATTEN_LOWPASS_A
from cryoscore.infer.denoise import (
    BACKGROUND_STRENGTH_TO_FLATTEN,
    background_image,
    background_strength_of,
    denoise_image,
    load_denoiser,
    should_flatten,
)
from cryoscore.pairs.guidance import band_correlation, band_power, particle_band_a


def micrograph_row(model, image: np.ndarray, pixel_a: float, diameter_a: float,
                   particles: np.ndarray | None) -> dict[str, float | bool]:
    """One micrograph's numbers: what ``--flatten auto`` decides by (as ``background_strength`` computes it,
    from the two outputs that are needed here anyway), and (with the noise-free ``particles``) what each
    output holds of them in the particles' band."""
    band = particle_band_a(diameter_a)
    posterior_mean = denoise_image(model, image, pixel_size_a=pixel_a)
    background = background_image(model, image, pixel_size_a=pixel_a)
    strength = background_strength_of(posterior_mean, background, pixel_size_a=pixel_a, diameter_a=diameter_a)
    row: dict[str, float | bool] = {
        "background_strength": strength, "above_threshold": strength > BACKGROUND_STRENGTH_TO_FLATTEN,
        "band_correlation_with_background": band_correlation(posterior_mean, background, pixel_a, *band),
        "band_power_ratio": (band_power(posterior_mean, posterior_mean, pixel_a, band[1], band[0])
                             / band_power(background, background, pixel_a, band[1], band[0]))}
    if particles is not None:
        flattened = lowpass_filter(image - background, pixel_a, FLATTEN_LOWPASS_A)
        for name, output in (("raw", image), ("posterior_mean", posterior_mean), ("flattened", flattened)):
            row[f"particles_{name}"] = band_correlation(output, particles, pixel_a, *band)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="*", type=Path, help="simulated dataset directories")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--real", action="store_true", help="also the real EMPIAR-10146 set in ../shared/data")
    args = parser.parse_args()
    model = load_denoiser()
    sets = []
    if args.real:
        _, images, pixel_a, _ = real_set()
        sets.append(("EMPIAR-10146", pixel_a, DIAMETER_A, [(image, None) for image in images]))
    for directory in args.datasets:
        test_set = simulated_test_set(directory, directory.name)
        sets.append((str(directory), test_set.pixel_size_a, test_set.diameter_a,
                     [(micrograph.full_sum, micrograph.clean) for micrograph in test_set.micrographs]))
    document = {**run_record(), "threshold": BACKGROUND_STRENGTH_TO_FLATTEN, "datasets": []}
    for label, pixel_a, diameter_a, micrographs in sets:
        rows = [micrograph_row(model, image, pixel_a, diameter_a, particles)
                for image, particles in micrographs]
        means = {key: float(np.mean([row[key] for row in rows])) for key in rows[0] if key != "above_threshold"}
        strengths = [float(row["background_strength"]) for row in rows]
        document["datasets"].append({"dataset": label, "pixel_size_a": pixel_a, "diameter_a": diameter_a,
                                     "flattened": should_flatten(strengths),
                                     "median_strength": float(np.median(strengths)),
                                     "above_threshold": sum(bool(row["above_threshold"]) for row in rows),
                                     "micrographs": len(rows), "means": means, "rows": rows})
        args.output.write_text(json.dumps(document, indent=1) + "\n")
        print(label, "flattened" if should_flatten(strengths) else "posterior mean",
              f"median {np.median(strengths):.3f}, above {document['datasets'][-1]['above_threshold']}/{len(rows)}",
              f"strength {min(strengths):.3f}-{max(strengths):.3f}",
              " ".join(f"{key} {value:.3f}" for key, value in means.items()), flush=True)


if __name__ == "__main__":
    main()
