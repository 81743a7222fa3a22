"""Picks of background: random points on each micrograph at least one particle diameter from every
annotated particle (and half a diameter from the edges), the control for the 2D classifier's
per-class resolution (benchmarks/RESULTS.md, "2D classification")::

    python benchmarks/background_picks.py --micrographs ../shared/data/apoferritin-empiar10146/micrographs \
        --coordinates ../shared/data/apoferritin-empiar10146/coordinates --diameter 120 -o BACKGROUND-PICKS
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from cryoscore.io.coords import ParticleCoordinates, read_coordinates, write_coordinates
from cryoscore.io.mrc import read_mrc


def background_points(shape: tuple[int, int], particles: ParticleCoordinates, diameter_px: float, candidates: int,
                      rng: np.random.Generator) -> ParticleCoordinates:
    """Of ``candidates`` uniform points on a micrograph of ``shape`` (rows, cols) at least half a
    diameter from its edges, those at least one diameter (pixels) from every particle."""
    margin = diameter_px / 2
    x = rng.uniform(margin, shape[1] - margin, candidates)
    y = rng.uniform(margin, shape[0] - margin, candidates)
    distance = np.hypot(x[:, None] - particles.x_px[None, :], y[:, None] - particles.y_px[None, :])
    far = distance.min(axis=1, initial=np.inf) >= diameter_px
    return ParticleCoordinates(x_px=x[far], y_px=y[far])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--micrographs", type=Path, required=True, help="folder of .mrc micrographs")
    parser.add_argument("--coordinates", type=Path, required=True, help="folder of NAME.star annotations")
    parser.add_argument("--diameter", type=float, required=True, help="particle diameter, A")
    parser.add_argument("--candidates", type=int, default=200, help="random points tried per micrograph (default: 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for NAME.star background picks")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    total = 0
    for path in sorted(args.micrographs.glob("*.mrc")):
        micrograph, pixel_size_a = read_mrc(path)
        points = background_points(micrograph.shape, read_coordinates(args.coordinates / f"{path.stem}.star"),
                                   args.diameter / pixel_size_a, args.candidates, rng)
        write_coordinates(args.output / f"{path.stem}.star", points)
        total += len(points.x_px)
    print(f"{total} background picks in {args.output}")


if __name__ == "__main__":
    main()
