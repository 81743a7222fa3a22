"""What `cryoscore denoise --flatten auto` measures on each micrograph, what it chooses, and whether that keeps more particles.

    OMP_NUM_THREADS=1 python benchmarks/bench_flatten_choice.py -o OUT.json [DATASET_DIR ...] [--real] [--periodic]

For every micrograph of each simulated dataset (``cryoscore simulate``) and, with ``--real``, of the
real EMPIAR-10146 set: the correlation of the shipped model's posterior mean with its background
estimate in the particles' band (:func:`cryoscore.infer.denoise.background_correlation`; ``--flatten auto``
flattens a dataset whose median is above :data:`~cryoscore.infer.denoise.BACKGROUND_CORRELATION_TO_FLATTEN`:
:func:`~cryoscore.infer.denoise.should_flatten`), and the ratio of their powers there.
Where the noise-free particles are known (simulated data), also the particle-band correlation with them
of the raw micrograph, the posterior mean and the flattened micrograph: the output a choice should prefer
holds more of the particles. With ``--periodic`` every image is measured without its edges (the periodic
part of its periodic-plus-smooth decomposition), which the plain measure, as ``--flatten auto`` takes it,
counts as power in the band (benchmarks/RESULTS.md section 6, "A correction"); the choice printed is then
what the threshold would choose on that measure. Prints a row per dataset and writes every number to OUT.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from bench_learned_picker import DIAMETER_A, real_set, run_record

from cryoscore.bench.datasets import simulated_test_set
from cryoscore.filters import lowpass_filter, periodic_smooth_decomposition
from cryoscore.infer import FLATTEN_LOWPASS_A
from cryoscore.infer.denoise import (
    BACKGROUND_CORRELATION_TO_FLATTEN,
    background_image,
    denoise_image,
    load_denoiser,
    should_flatten,
)
from cryoscore.pairs.guidance import band_correlation, band_power, particle_band_a


def micrograph_row(model, image: np.ndarray, pixel_a: float, diameter_a: float,
                   particles: np.ndarray | None, periodic: bool = False) -> dict[str, float | bool]:
    """One micrograph's numbers: what ``--flatten auto`` decides by (the computation of ``background_correlation``,
    whose two outputs are needed here anyway), and (with the noise-free ``particles``) what each output holds of
    them, all in the particles' band; with ``periodic``, each image without its edges."""
    def measured(picture: np.ndarray) -> np.ndarray:
        return periodic_smooth_decomposition(picture.astype(np.float32))[0] if periodic else picture

    band = particle_band_a(diameter_a)
    posterior_mean = measured(denoise_image(model, image, pixel_size_a=pixel_a))
    background_estimate = background_image(model, image, pixel_size_a=pixel_a)
    background = measured(background_estimate)
    correlation = band_correlation(posterior_mean, background, pixel_a, *band)
    row: dict[str, float | bool] = {
        "background_correlation": correlation, "above_threshold": correlation > BACKGROUND_CORRELATION_TO_FLATTEN,
        "power_ratio": (band_power(posterior_mean, posterior_mean, pixel_a, band[1], band[0])
                        / band_power(background, background, pixel_a, band[1], band[0]))}
    if particles is not None:
        flattened = lowpass_filter(image - background_estimate, pixel_a, FLATTEN_LOWPASS_A)
        for name, output in (("raw", measured(image)), ("posterior_mean", posterior_mean),
                             ("flattened", measured(flattened))):
            row[f"particles_{name}"] = band_correlation(output, measured(particles), pixel_a, *band)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="*", type=Path, help="simulated dataset directories")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--real", action="store_true", help="also the real EMPIAR-10146 set in ../shared/data")
    parser.add_argument("--periodic", action="store_true", help="measure without the micrographs' edges")
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
    document = {**run_record(), "threshold": BACKGROUND_CORRELATION_TO_FLATTEN, "periodic": args.periodic,
                "datasets": []}
    for label, pixel_a, diameter_a, micrographs in sets:
        rows = [micrograph_row(model, image, pixel_a, diameter_a, particles, args.periodic)
                for image, particles in micrographs]
        means = {key: float(np.mean([row[key] for row in rows])) for key in rows[0] if key != "above_threshold"}
        correlations = [float(row["background_correlation"]) for row in rows]
        document["datasets"].append({"dataset": label, "pixel_size_a": pixel_a, "diameter_a": diameter_a,
                                     "flattened": should_flatten(correlations),
                                     "median_correlation": float(np.median(correlations)),
                                     "above_threshold": sum(bool(row["above_threshold"]) for row in rows),
                                     "micrographs": len(rows), "means": means, "rows": rows})
        args.output.write_text(json.dumps(document, indent=1) + "\n")
        print(label, "flattened" if should_flatten(correlations) else "posterior mean",
              f"median {np.median(correlations):.3f}, above {document['datasets'][-1]['above_threshold']}/{len(rows)}",
              f"correlation {min(correlations):.3f}-{max(correlations):.3f}",
              " ".join(f"{key} {value:.3f}" for key, value in means.items()), flush=True)


if __name__ == "__main__":
    main()
