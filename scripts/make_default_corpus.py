"""Simulate the training corpus of the default model: many specimens, pixel sizes, doses and backgrounds.

    python scripts/make_default_corpus.py WORK_DIR [--micrographs 40] [--seed 0] [--detector ideal|drawn]
        [--contrast-range LOW HIGH]

Writes WORK_DIR/c000, c001, ...: one cryoscore dataset directory per micrograph, each drawn
at random (seeded) from the ranges below, and WORK_DIR/corpus.json listing them. Held out
(never drawn here, so the benchmarks can judge the model on them): the built-in
``apoferritin`` and ``elongated`` specimens, atomic models (TRPV1), real micrographs, and
the pixel sizes 1.5, 1.85, 2.0 and 4.0 A.

``--detector drawn`` also draws each micrograph's camera (:func:`draw_detector`) after all
the other settings, so the corpus is the ``ideal`` one (the shipped model's) with only the
detector changed. ``--contrast-range`` likewise draws, last, each micrograph's particle
contrast scale (``SimulationConfig.contrast_scale``) log-uniformly from that range; without it
every particle has the weak-phase model's full contrast (1), as in the shipped model's corpus.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from cryoscore.simulate.background import BackgroundParams
from cryoscore.simulate.dataset import SimulationConfig, write_dataset
from cryoscore.simulate.detector import IDEAL, DetectorParams
from cryoscore.simulate.volume import load_specimen

#: Input pixel sizes, Angstrom (the model Fourier-crops those under its 3 A floor).
PIXEL_SIZES_A = (0.8, 1.1, 1.3, 2.5, 3.2, 4.5)
#: Edge of a micrograph at the model's working scale, pixels (it is simulated finer when the
#: pixel size is under the floor, and cropped at training time).
WORKING_EDGE_PX = 512
FLOOR_A = 3.0
#: Largest specimen box rendered, voxels per edge (memory and time of the simulation).
MAX_BOX_PX = 256
#: Fraction of the micrographs with an ideal detector when the detector is drawn.
IDEAL_DETECTOR_FRACTION = 0.25


def draw_condition(rng: np.random.Generator, index: int) -> SimulationConfig:
    """One micrograph's settings, drawn from the corpus ranges."""
    kind = rng.choice(["random-compact", "random-compact", "random-elongated", "small"])
    specimen = "small" if kind == "small" else f"{kind}:{int(rng.integers(10**6))}"
    diameter = load_specimen(specimen, 4.0).diameter_a
    # The volume is rendered at the pixel size: keep its box under MAX_BOX_PX voxels.
    pixel_size = float(rng.choice([size for size in PIXEL_SIZES_A if 1.3 * diameter / size <= MAX_BOX_PX]))
    size_px = int(round(WORKING_EDGE_PX * max(FLOOR_A / pixel_size, 1.0) / 16) * 16)
    area_fraction = rng.uniform(0.05, 0.3)
    field_a2 = (size_px * pixel_size) ** 2
    particles = max(int(area_fraction * field_a2 / (math.pi * (diameter / 2) ** 2)), 2)
    defocus_low = rng.uniform(0.5, 2.5)
    background = BackgroundParams(
        strength=float(rng.uniform(0.0, 3.0)),
        spectral_exponent=float(rng.uniform(2.0, 4.0)),
        shortest_wavelength_a=float(rng.uniform(100.0, 800.0)),
        carbon_edge=bool(rng.random() < 0.25),
        n_contamination=int(rng.integers(0, 3)),
    )
    return SimulationConfig(
        specimen=specimen, n_micrographs=1, size_px=size_px, pixel_size_a=pixel_size,
        particles_per_micrograph=particles, dose_e_per_a2=float(np.exp(rng.uniform(np.log(10), np.log(80)))),
        defocus_range_um=(defocus_low, defocus_low + rng.uniform(0.2, 1.5)),
        bfactor_a2=float(rng.uniform(30.0, 150.0)), background=background,
        cluster_fraction=float(rng.uniform(0.0, 0.4)), edge_particles=True, seed=index,
    )


def draw_detector(rng: np.random.Generator) -> DetectorParams:
    """A camera: ideal (:data:`IDEAL_DETECTOR_FRACTION` of the time) or a counting camera with
    the pixel aperture, an event-localisation error of 0.1-0.35 px and 2-20 % of the electrons
    counted again in a neighbour (the real EMPIAR-10146 noise spectrum sits near 0.2 px and 10 %,
    :data:`cryoscore.simulate.detector.COUNTING`)."""
    if rng.random() < IDEAL_DETECTOR_FRACTION:
        return IDEAL
    return DetectorParams(pixel_aperture=True, localisation_px=float(rng.uniform(0.1, 0.35)),
                          double_count_fraction=float(rng.uniform(0.02, 0.2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work_dir", type=Path)
    parser.add_argument("--micrographs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--detector", choices=["ideal", "drawn"], default="ideal",
                        help="ideal: every micrograph with the ideal detector (the shipped model's corpus); "
                             "drawn: a camera drawn per micrograph (draw_detector)")
    parser.add_argument("--contrast-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                        help="draw each micrograph's particle contrast scale log-uniformly from this range "
                             "(default: 1 everywhere)")
    args = parser.parse_args()
    listing = []
    for index in range(args.micrographs):
        rng = np.random.default_rng([args.seed, index])
        for _attempt in range(5):
            config = draw_condition(rng, index)
            if args.detector == "drawn":
                config = dataclasses.replace(config, detector=draw_detector(rng))
            if args.contrast_range:
                low, high = np.log(args.contrast_range)
                config = dataclasses.replace(config, contrast_scale=float(np.exp(rng.uniform(low, high))))
            try:
                write_dataset(config, args.work_dir / f"c{index:03d}", progress=False)
                break
            except ValueError as error:  # too many particles to place: draw again
                print(f"c{index:03d}: {error}; drawing again")
        listing.append({"dir": f"c{index:03d}", **config.to_dict()})
        print(f"c{index:03d}: {config.specimen} {config.pixel_size_a} A/px {config.dose_e_per_a2:.0f} e/A^2 "
              f"{config.particles_per_micrograph} particles, contrast {config.contrast_scale:.2f}", flush=True)
    (args.work_dir / "corpus.json").write_text(json.dumps(listing, indent=1, default=str))


if __name__ == "__main__":
    main()
