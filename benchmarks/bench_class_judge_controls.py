"""Why the blob picks of real micrographs make no particle classes: centring error or false picks (issues 13, 15).

    OMP_NUM_THREADS=1 python benchmarks/bench_class_judge_controls.py -o benchmarks/class-judge-controls.json

On the real EMPIAR-10146 set the 2D class judge finds no particle-like class among the blob
picker's picks (template match 0.03-0.16), while the annotated coordinates give 0.59-0.60. Blob
picks differ from the annotations in two ways: the true ones sit off centre (matched within half
a diameter) and some are false. This script separates the two on the blob picks of the raw
micrographs at their best-F1 threshold, a 2 x 2 design, each classified by the bench's own class
judge (:func:`cryoscore.bench.judges.attach_classes`, ``[classes]`` defaults, the same 400-pick draw):

- ``blob``: the picks as they are;
- ``blob, true centred``: every true pick moved onto the annotated particle it matched (centring
  removed, false picks kept);
- ``blob, true only``: the false picks dropped (impurity removed, centring kept);
- ``blob, true only, centred``: both removed (the matched annotations themselves);
- ``annotated``: every annotated particle, for reference.

For scale, the same matching of uniformly random points (as many per micrograph as blob picks,
at least a radius from the edge, seed 0): how many fall within half a diameter of an annotated
particle by chance, and how far from its centre.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from bench_learned_picker import run_record

from cryoscore.bench.config import ClassJudgeSettings, load_bench_config
from cryoscore.bench.datasets import real_micrograph_paths, real_test_set
from cryoscore.bench.judges import RADIUS_FRACTION, DenoiserOutcome, attach_classes, picks_above
from cryoscore.io.coords import ParticleCoordinates
from cryoscore.metrics.picking import match_picks, pool_matches
from cryoscore.pick.blob import pick_blobs

REAL_CONFIG = Path(__file__).with_name("real.toml")


def _coordinates(x_px: np.ndarray, y_px: np.ndarray) -> ParticleCoordinates:
    return ParticleCoordinates(x_px=np.asarray(x_px, dtype=float), y_px=np.asarray(y_px, dtype=float))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    config = load_bench_config(REAL_CONFIG)
    dataset = config.real[0]
    test_set = real_test_set(dataset, real_micrograph_paths(dataset))
    settings = ClassJudgeSettings()
    diameter_px = test_set.diameter_a / test_set.pixel_size_a
    radius_px = RADIUS_FRACTION * diameter_px

    blob = {m.name: pick_blobs(m.full_sum, test_set.pixel_size_a, test_set.diameter_a) for m in test_set.micrographs}
    pooled = pool_matches([match_picks(np.stack([blob[m.name].x_px, blob[m.name].y_px], 1), blob[m.name].figure_of_merit,
                                       np.stack([m.truth.x_px, m.truth.y_px], 1), radius_px, diameter_px=diameter_px)
                           for m in test_set.micrographs])
    kept = picks_above(blob, pooled.threshold)
    variants: dict[str, dict[str, ParticleCoordinates]] = {key: {} for key in (
        "blob", "blob, true centred", "blob, true only", "blob, true only, centred", "annotated")}
    offsets = []
    for micrograph in test_set.micrographs:
        found, truth = kept[micrograph.name], micrograph.truth
        xy, true_xy = np.stack([found.x_px, found.y_px], 1), np.stack([truth.x_px, truth.y_px], 1)
        match = match_picks(xy, None, true_xy, radius_px)  # least-distance pairs within half a diameter
        is_true = np.zeros(len(xy), dtype=bool)
        is_true[match.pick_index] = True
        centred = xy.copy()
        centred[match.pick_index] = true_xy[match.truth_index]
        offsets.extend(match.distance_px)
        variants["blob"][micrograph.name] = _coordinates(xy[:, 0], xy[:, 1])
        variants["blob, true centred"][micrograph.name] = _coordinates(centred[:, 0], centred[:, 1])
        variants["blob, true only"][micrograph.name] = _coordinates(xy[is_true, 0], xy[is_true, 1])
        variants["blob, true only, centred"][micrograph.name] = _coordinates(centred[is_true, 0], centred[is_true, 1])
        variants["annotated"][micrograph.name] = _coordinates(truth.x_px, truth.y_px)

    rng = np.random.default_rng(0)
    chance_matched, chance_offsets, chance_points = 0, [], 0
    for micrograph in test_set.micrographs:
        (height, width), count = micrograph.full_sum.shape, len(kept[micrograph.name].x_px)
        points = np.stack([rng.uniform(radius_px, width - radius_px, count),
                           rng.uniform(radius_px, height - radius_px, count)], 1)
        match = match_picks(points, None, np.stack([micrograph.truth.x_px, micrograph.truth.y_px], 1), radius_px)
        chance_matched += len(match.pick_index)
        chance_points += count
        chance_offsets.extend(match.distance_px / diameter_px)

    offsets_diameters = np.asarray(offsets) / diameter_px
    document = {**run_record(),
                "dataset": test_set.label, "pixel_size_a": test_set.pixel_size_a, "diameter_a": test_set.diameter_a,
                "class_settings": settings.__dict__,
                "blob": {"threshold": pooled.threshold, "ap": pooled.average_precision, "f1": pooled.f1,
                         "picks": int(sum(len(p.x_px) for p in kept.values())),
                         "true": int(len(offsets)),
                         "centring_error_diameters": {"median": float(np.median(offsets_diameters)),
                                                      "rms": float(np.sqrt(np.mean(offsets_diameters**2))),
                                                      "p90": float(np.quantile(offsets_diameters, 0.9))}},
                "random_points": {"points": chance_points, "true": chance_matched,
                                  "centring_error_diameters": {"median": float(np.median(chance_offsets))}},
                "variants": {}}
    for name, picks in variants.items():
        started = time.perf_counter()
        outcome = DenoiserOutcome(metrics={}, picks=picks, matches=None, example=np.zeros((1, 1)),
                                  spectrum=(np.zeros(1), np.zeros(1)))
        attach_classes(test_set, outcome, settings)
        document["variants"][name] = {**outcome.metrics["classes"], "picks": int(sum(len(p.x_px) for p in picks.values())),
                                      "seconds": time.perf_counter() - started}
        args.output.write_text(json.dumps(document, indent=2, default=float) + "\n")
        summary = outcome.metrics["classes"]
        print(name, {key: summary.get(key) for key in ("true_fraction", "particle_like_fraction", "template_match")},
              f"{time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
