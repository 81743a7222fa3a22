"""3D reconstruction of the real EMPIAR-10146 set from each set of picks, with its control (issue 15).

    OMP_NUM_THREADS=1 python benchmarks/bench_reconstruct_real.py -o benchmarks/reconstruct-real.json \
        [--denoisers raw default] [--learned]

The bench's reconstruction judge as it runs on real data (:func:`cryoscore.bench.judges.attach_reconstruction`
through :func:`cryoscore.bench.run.judge_all`): the picks are boxed from the raw micrographs, aligned
to the dataset's ``template`` (a featureless shell of apoferritin's diameters, independent of the
24-mer that guides training) low-passed to 25 A, searched over one asymmetric unit of the
octahedral group, reconstructed in two halves without CTF correction (these copies of the
micrographs carry no measurable CTF, benchmarks/RESULTS.md section 7) and averaged over the group.

Picks judged:

- ``annotated``: every annotated particle; ``annotated, N drawn``: as many as the control has,
  drawn at random (seed 0), so the two compare at equal numbers;
- ``background``: the control, boxes where no particle is (random points at least a diameter
  from every annotated particle and from each other, seed 0): what aligning noise to the
  reference gives (Einstein from noise);
- per denoiser, its blob picks at their best-F1 threshold, and with ``--learned`` its learned
  picks (seed 0, each micrograph picked by the fold's picker that did not see it, the real
  config's folds and steps) at theirs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from bench_learned_picker import run_record

from cryoscore.bench.config import TrainingSettings, load_bench_config
from cryoscore.bench.datasets import real_micrograph_paths, real_test_set
from cryoscore.bench.denoisers import denoise_functions, train_models
from cryoscore.bench.judges import DenoiserOutcome, attach_reconstruction, known_ctfs
from cryoscore.bench.run import judge_all
from cryoscore.io.coords import ParticleCoordinates
from cryoscore.simulate.volume import load_specimen

REAL_CONFIG = Path(__file__).with_name("real.toml")


def background_points(shape: tuple[int, int], truth: ParticleCoordinates, diameter_px: float,
                      rng: np.random.Generator, tries: int = 4000) -> ParticleCoordinates:
    """Points at least a diameter from every annotated particle, from each other and from the edge."""
    height, width = shape
    candidates = rng.uniform([diameter_px, diameter_px], [width - diameter_px, height - diameter_px], size=(tries, 2))
    annotated = np.stack([truth.x_px, truth.y_px], axis=1)
    far = np.min(np.linalg.norm(candidates[:, None] - annotated[None], axis=2), axis=1) >= diameter_px
    kept: list[np.ndarray] = []
    for point in candidates[far]:
        if all(np.linalg.norm(point - other) >= diameter_px for other in kept):
            kept.append(point)
    points = np.array(kept).reshape(-1, 2)
    return ParticleCoordinates(x_px=points[:, 0], y_px=points[:, 1])


def _summary(metrics: dict, seconds: float) -> dict:
    return {key: metrics.get(key) for key in ("picker", "aligned_to", "threshold", "n_particles", "ctf_corrected",
                                               "symmetry",
                                               "resolution_half_maps_a", "mean_pose_score", "fsc_half_maps", "error")
            } | {"seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--denoisers", nargs="*", default=["raw", "default"])
    parser.add_argument("--learned", action="store_true", help="also reconstruct from each denoiser's learned picks")
    args = parser.parse_args()
    config = load_bench_config(REAL_CONFIG)
    dataset = config.real[0]
    test_set = real_test_set(dataset, real_micrograph_paths(dataset))
    assert test_set.template is not None and test_set.symmetry is not None, "real.toml names both"
    template = load_specimen(test_set.template, test_set.pixel_size_a).volume_v
    diameter_px = test_set.diameter_a / test_set.pixel_size_a
    rng = np.random.default_rng(0)
    background = {m.name: background_points(m.full_sum.shape, m.truth, diameter_px, rng) for m in test_set.micrographs}
    n_background = sum(len(points) for points in background.values())
    annotated = {m.name: m.truth for m in test_set.micrographs}
    everything = [(name, index) for name, truth in annotated.items() for index in range(len(truth))]
    drawn = {name: [] for name in annotated}
    for choice in rng.choice(len(everything), n_background, replace=False):
        name, index = everything[choice]
        drawn[name].append(index)
    annotated_drawn = {name: dataclasses.replace(truth, x_px=truth.x_px[sorted(drawn[name])],
                                                 y_px=truth.y_px[sorted(drawn[name])], figure_of_merit=None)
                       for name, truth in annotated.items()}
    document: dict = {
        **run_record(),
        "dataset": test_set.label, "pixel_size_a": test_set.pixel_size_a, "diameter_a": test_set.diameter_a,
        "reference": test_set.template, "symmetry": test_set.symmetry,
        "ctf_corrected": known_ctfs(test_set) is not None, "picks": {},
    }

    def record(label: str, metrics: dict, seconds: float, ap: float | None = None) -> None:
        document["picks"][label] = _summary(metrics, seconds) | {"ap": ap}
        args.output.write_text(json.dumps(document, indent=2, default=float) + "\n")
        print(f"{label}: {metrics.get('n_particles')} particles, half maps {metrics.get('resolution_half_maps_a')} A, "
              f"pose score {metrics.get('mean_pose_score')}, {seconds:.0f} s", flush=True)

    for label, picks in (("annotated", annotated), (f"annotated, {n_background} drawn", annotated_drawn),
                         ("background", background)):
        started = time.perf_counter()
        outcome = DenoiserOutcome(metrics={}, picks=picks, matches=None, example=np.zeros((1, 1)),
                                  spectrum=(np.zeros(1), np.zeros(1)))
        attach_reconstruction(test_set, outcome, template, aligned_to=test_set.template)
        record(label, outcome.metrics["reconstruction"], time.perf_counter() - started)

    models = train_models([], [name for name in args.denoisers if name in ("default",)], TrainingSettings(),
                          args.output.parent, reference=None)
    functions = denoise_functions(args.denoisers, models, test_set.pixel_size_a, 20.0)
    learned = dataclasses.replace(config.learned, seeds=(0,), label_budgets=())
    for name, function in functions.items():
        for judges in [("blob", "reconstruction")] + ([("learned", "blob", "reconstruction")] if args.learned else []):
            started = time.perf_counter()
            outcome = judge_all(test_set, {name: function}, judges, learned=learned)[name]
            metrics = outcome.metrics["reconstruction"]
            picker = metrics["picker"]
            record(f"{name}, {picker} picks", metrics, time.perf_counter() - started,
                   ap=outcome.metrics[picker]["ap"])


if __name__ == "__main__":
    main()
