"""Does guidance stabilise score learning at low dose? (issue 12): the spread of picking AP over training seeds.

    OMP_NUM_THREADS=1 python benchmarks/bench_seed_stability.py -o benchmarks/seed-stability [--dose 8]
        [--seeds 0 1 2] [--steps 400] [--config benchmarks/ice-reallike.toml]
    python benchmarks/bench_seed_stability.py -o OUTDIR --combine DIR [DIR ...]

One simulated condition at a low dose (default 8 e/A^2: apoferritin at 3 A/px in the default
benchmark's ice, 4 training and 3 test micrographs of 512 x 512 px, as ``cryoscore bench``
simulates them; with ``--config``, the first ``[[simulated]]`` specimen of a bench config at
``--dose``, with that config's ``[simulation]``, ``[training]`` and ``[learned]`` folds and steps).
``score`` and ``guided`` (the specimen's reference, the bench's guidance settings) are trained on
the same pairs once per training seed; only the seed changes (initial weights, crops, added
noise). Each model is judged on the same test micrographs by the blob picker, the learned picker
(k-fold over the test micrographs, one picker seed, so that the spread measured is the
denoiser's) and the correlation with the clean particle image. Writes OUTDIR/results.json (every
number and each run's loss curve), OUTDIR/results.md and OUTDIR/loss_curves.svg.

``--combine`` joins runs of the same condition made for different ``--seeds`` (e.g. one process per
seed, side by side on the cores) into OUTDIR's summary; their raw rows must agree.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from bench_learned_picker import run_record

from cryoscore.bench.config import (
    BenchConfig,
    LearnedJudgeSettings,
    SimulatedSpecimen,
    SimulationSettings,
    TrainingSettings,
    load_bench_config,
)
from cryoscore.bench.datasets import simulate_specimen, simulated_test_set
from cryoscore.bench.denoisers import denoise_functions, train_models
from cryoscore.bench.plots import line_chart_svg
from cryoscore.bench.run import judge_all
from cryoscore.pairs.halves import pairs_from_dataset

METHODS = ("score", "guided")


def _spread(values: list[float]) -> dict[str, float]:
    """Mean, sample standard deviation and range of per-seed values."""
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
            "range": float(array.max() - array.min())}


def _condition(args: argparse.Namespace) -> tuple[BenchConfig, TrainingSettings, LearnedJudgeSettings]:
    """The bench config of the one condition (its specimen at ``args.dose``), its training and its learned judge."""
    if args.config is None:
        config = BenchConfig(simulated=(SimulatedSpecimen("apoferritin", doses=(args.dose,)),),
                             denoisers=("raw",) + METHODS, simulation=SimulationSettings())
        training = TrainingSettings(steps=args.steps or TrainingSettings().steps)
        return config, training, LearnedJudgeSettings(folds=3, seeds=(0,), steps=args.picker_steps)
    loaded = load_bench_config(args.config).with_absolute_paths()
    specimen = replace(loaded.simulated[0], doses=(args.dose,), decoy=None)
    config = replace(loaded, simulated=(specimen,), denoisers=("raw",) + METHODS)
    training = replace(config.training, steps=args.steps or config.training.steps)
    learned = LearnedJudgeSettings(folds=config.learned.folds, seeds=(0,), background=config.learned.background,
                                   steps=args.picker_steps or config.learned.steps)
    return config, training, learned


def run_seeds(args: argparse.Namespace) -> dict:
    """Train and judge both methods once per seed of ``args.seeds`` (raw judged with the first)."""
    config, training, learned = _condition(args)
    specimen = config.simulated[0]
    train_dirs, test_dirs, _ = simulate_specimen(config, 0, args.output / "data")
    pairs = [pair for directory in train_dirs for pair in pairs_from_dataset(directory)]
    test_set = simulated_test_set(test_dirs[0], f"{specimen.specimen} {args.dose:g} e/A^2")
    results: dict = {
        **run_record(),
        "condition": {"specimen": specimen.specimen, "dose_e_per_a2": args.dose, "pixel_size_a": test_set.pixel_size_a,
                      "config": None if args.config is None else str(args.config),
                      "simulation": asdict(config.simulation), "training_steps": training.steps,
                      "learned": {"folds": learned.folds, "steps": learned.steps},
                      "train_micrographs": len(pairs), "test_micrographs": len(test_set.micrographs),
                      "test_particles": int(sum(len(m.truth) for m in test_set.micrographs))},
        "runs": [],
    }
    for seed in args.seeds:
        models = train_models(pairs, METHODS, replace(training, seed=seed), args.output / f"models-seed{seed}",
                              reference=str(train_dirs[0] / "reference.mrc"),
                              defocus_range_um=config.simulation.defocus_range_um)
        functions = denoise_functions(("raw",) if seed == args.seeds[0] else (), models, test_set.pixel_size_a,
                                      config.lowpass_a)
        outcomes = judge_all(test_set, functions, ("pixel", "blob", "learned"), learned)
        for name, outcome in outcomes.items():
            run = {"denoiser": name, "seed": seed, "blob_ap": outcome.metrics["blob"]["ap"],
                   "learned_ap": outcome.metrics["learned"]["ap"],
                   "correlation_with_clean": outcome.metrics["pixel"]["correlation"]}
            if name in models:
                run["loss_curve"] = models[name].record["loss_curve"]
                run["train_seconds"] = models[name].record["seconds"]
            results["runs"].append(run)
            print(json.dumps({key: value for key, value in run.items() if key != "loss_curve"}), flush=True)
        (args.output / "results.json").write_text(json.dumps(results, indent=1))
    return results


def combine(directories: list[Path]) -> dict:
    """The runs of several ``run_seeds`` outputs of one condition as one result (one raw row)."""
    parts = [json.loads((directory / "results.json").read_text()) for directory in directories]
    if any(part["condition"] != parts[0]["condition"] for part in parts):
        raise SystemExit("--combine: the runs are of different conditions")
    raw_rows = [run for part in parts for run in part["runs"] if run["denoiser"] == "raw"]
    if any(row[key] != raw_rows[0][key] for row in raw_rows for key in ("blob_ap", "learned_ap")):
        raise SystemExit(f"--combine: the runs' raw rows differ: {raw_rows}")
    runs = raw_rows[:1] + sorted((run for part in parts for run in part["runs"] if run["denoiser"] != "raw"),
                                 key=lambda run: (run["seed"], run["denoiser"]))
    return {**run_record(), "combined": [str(directory) for directory in directories],
            "condition": parts[0]["condition"], "runs": runs,
            "seconds_each": [part.get("seconds") for part in parts]}


def summarise(results: dict, output: Path) -> None:
    """Add the spread over seeds to ``results`` and write OUTDIR/results.json, results.md and loss_curves.svg."""
    seeds = sorted({run["seed"] for run in results["runs"] if run["denoiser"] != "raw"})
    results["spread"] = {
        name: {metric: _spread([run[metric] for run in results["runs"] if run["denoiser"] == name])
               for metric in ("blob_ap", "learned_ap", "correlation_with_clean")}
        for name in METHODS}
    (output / "results.json").write_text(json.dumps(results, indent=1))
    condition = results["condition"]
    curves = [(f"{run['denoiser']} seed {run['seed']}", [step for step, _ in run["loss_curve"]],
               [loss for _, loss in run["loss_curve"]]) for run in results["runs"] if "loss_curve" in run]
    (output / "loss_curves.svg").write_text(line_chart_svg(
        curves, title=f"training loss, {condition['specimen']} {condition['dose_e_per_a2']:g} e/A^2",
        x_label="step", y_label="loss"))
    raw = next(run for run in results["runs"] if run["denoiser"] == "raw")
    lines = [f"Raw: blob AP {raw['blob_ap']:.3f}, learned AP {raw['learned_ap']:.3f}.", "",
             "| denoiser | metric | " + " | ".join(f"seed {seed}" for seed in seeds) + " | mean | std | range |",
             "|---|---|" + "---|" * (len(seeds) + 3)]
    for name in METHODS:
        for metric in ("blob_ap", "learned_ap", "correlation_with_clean"):
            values = [run[metric] for run in results["runs"] if run["denoiser"] == name]
            spread = results["spread"][name][metric]
            lines.append(f"| {name} | {metric} | " + " | ".join(f"{value:.3f}" for value in values)
                         + f" | {spread['mean']:.3f} | {spread['std']:.3f} | {spread['range']:.3f} |")
    (output / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--dose", type=float, default=8.0, help="e/A^2 (default: 8)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, help="training steps per model (default: the bench's)")
    parser.add_argument("--picker-steps", type=int, help="learned picker training steps (default: the picker's, "
                        "or the config's)")
    parser.add_argument("--config", type=Path, help="a bench config whose first [[simulated]] specimen, simulation, "
                        "training and learned folds and steps make the condition")
    parser.add_argument("--combine", type=Path, nargs="+", metavar="DIR", help="join these runs' results instead")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results = combine(args.combine) if args.combine else run_seeds(args)
    results["seconds"] = time.perf_counter() - started
    summarise(results, args.output)


if __name__ == "__main__":
    main()
