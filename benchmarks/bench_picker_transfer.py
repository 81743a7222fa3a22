"""The learned picker across datasets and below one annotated micrograph, raw against denoised (issue 13).

    OMP_NUM_THREADS=1 python benchmarks/bench_picker_transfer.py -o benchmarks/picker-transfer.json

Two measurements on the real EMPIAR-10146 set (10 micrographs, 1.85 A/px, 120 A apoferritin),
each for raw micrographs and denoiser outputs (the 20 A low-pass, the shipped default model, and with
``--topaz-dir`` Topaz-Denoise's pretrained model):

1. **Transfer** (issue 13 item (b)). A simulated apoferritin dataset at the real set's pixel
   size (:data:`SIMULATION`: low dose, strong ice reaching towards the particle scale) with
   exact coordinates: ``--sim-train`` micrographs to train on, ``--sim-test`` more to test on.
   *sim -> real*: per seed, one picker trained on every training simulation (the denoiser's
   output of them) and applied unchanged to the same denoiser's output of the 10 real
   micrographs, scored against their annotations; the same pickers on the test simulations
   give the in-domain reference. *real -> sim*: per seed, one picker trained on all 10 real
   micrographs, applied to the test simulations. Paired differences against raw (same
   micrographs and seeds).
2. **Particle budgets below one micrograph**: the k-fold of bench_learned_picker.py (5 folds,
   micrograph ``i`` in fold ``i mod 5``), each fold's picker trained on *one* of the other
   folds' micrographs (drawn with ``default_rng([seed, fold])``) with only ``B`` of its
   annotations (``default_rng([seed, fold, 1])``, the same particles for every denoiser), the
   PU prior from that micrograph's full annotated count (what its annotator sees); scored
   against every annotation of the held-out micrographs. ``--anchor`` adds the same with all of
   the one micrograph's annotations.

Topaz-Denoise runs in its own venv, so its outputs are made beforehand (benchmarks/topaz_denoise.py):
``TOPAZ/real/NAME.mrc`` for the real micrographs and ``TOPAZ/sim/NAME.mrc`` for the simulated ones,
which this script writes to ``WORK_DIR/sim/micrographs`` (``--stages simulate`` writes only them).
``--trained NAME=REAL.pt,SIM.pt`` adds a denoiser trained on each dataset's own micrographs, as a
user trains n2n, score or guided on their data: REAL.pt denoises the real micrographs and SIM.pt
the simulated ones (``cryoscore train``, made beforehand).

Statistics from cryoscore.bench.crossval: AP and best F1 pooled over micrographs, mean over
seeds, 95 % intervals by bootstrap over micrographs and seeds, paired differences. The JSON is
rewritten after every stage, so an interrupted run keeps what it finished.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from bench_learned_picker import DIAMETER_A, blob_results, outputs, real_set, run_record

from cryoscore.bench.config import LearnedJudgeSettings
from cryoscore.bench.crossval import CrossValidation, bootstrap_interval, cross_validate, paired_difference, pooled
from cryoscore.bench.crossval import transfer as transfer_judge
from cryoscore.bench.datasets import simulated_test_set
from cryoscore.io.layout import DatasetLayout
from cryoscore.simulate.background import BackgroundParams
from cryoscore.simulate.dataset import SimulationConfig, write_dataset

#: The simulated source dataset: apoferritin at the real set's 1.85 A/px, 10 e/A^2, ice 3x the
#: default strength with a flatter spectrum reaching 400 A (blob AP about 0.58 on raw, against
#: 0.45 on the real set; chosen from the blob picker on simulations alone, before any transfer).
SIMULATION = SimulationConfig(specimen="apoferritin", size_px=1024, pixel_size_a=1.85, particles_per_micrograph=80,
                              dose_e_per_a2=10.0,
                              background=BackgroundParams(strength=3.0, spectral_exponent=2.5,
                                                          shortest_wavelength_a=400.0),
                              seed=8146)
STATISTICS = ("ap", "f1")


def split(run: CrossValidation, sizes: list[int]) -> list[CrossValidation]:
    """``run`` over concatenated target sets cut back into one CrossValidation per set (sizes in order)."""
    cuts = np.cumsum([0, *sizes])
    return [replace(run, results=[row[start:stop] for row in run.results], picks=run.picks[start:stop])
            for start, stop in zip(cuts[:-1], cuts[1:])]


def differences(run: CrossValidation, raw: CrossValidation, settings: LearnedJudgeSettings) -> dict:
    """``run`` minus ``raw`` for each statistic, paired bootstrap."""
    return {statistic: paired_difference(run.results, raw.results, statistic, settings.bootstrap, settings.confidence)
            for statistic in STATISTICS}


def blob_summary(images: list[np.ndarray], truths: list, pixel_a: float) -> dict:
    """The blob picker's pooled AP/F1 and their intervals (bootstrap over micrographs)."""
    row = blob_results(images, truths, pixel_a)
    summary = {statistic: pooled(row, statistic) for statistic in STATISTICS}
    summary.update({f"{statistic}_ci": bootstrap_interval([row], statistic) for statistic in STATISTICS})
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/cryoscore-picker-transfer"),
                        help="where the simulated dataset is written (reused when complete)")
    parser.add_argument("--stages", nargs="+", default=["transfer", "budget"],
                        choices=["simulate", "transfer", "budget"], help="simulate: only write the simulated set")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--denoisers", nargs="+", default=["raw", "lowpass", "default"],
                        help="transfer: from raw, lowpass, default, topaz (raw first for the paired differences)")
    parser.add_argument("--sim-train", type=int, default=8)
    parser.add_argument("--sim-test", type=int, default=8)
    parser.add_argument("--steps", type=int, help="transfer pickers' training steps (default: the picker's)")
    parser.add_argument("--budgets", type=int, nargs="+", default=[10, 30, 80], help="annotated particles per fold")
    parser.add_argument("--budget-denoisers", nargs="+", default=["raw", "default"])
    parser.add_argument("--budget-steps", type=int, default=100)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--anchor", action="store_true",
                        help="budget stage: also one whole annotated micrograph per fold")
    parser.add_argument("--lowpass-a", type=float, default=20.0)
    parser.add_argument("--topaz-dir", type=Path,
                        help="Topaz-Denoise outputs: TOPAZ/real/NAME.mrc and TOPAZ/sim/NAME.mrc (for denoiser topaz)")
    parser.add_argument("--trained", nargs="+", default=[], metavar="NAME=REAL.pt,SIM.pt",
                        help="transfer: a denoiser trained per dataset, REAL.pt on the real micrographs and SIM.pt "
                        "on the simulated ones; NAME joins --denoisers")
    args = parser.parse_args()
    trained = {}
    for item in args.trained:
        name, _, models = item.partition("=")
        real_model, _, sim_model = models.partition(",")
        if not (name and real_model and sim_model):
            parser.error(f"--trained {item}: expected NAME=REAL.pt,SIM.pt")
        trained[name] = {"real": Path(real_model), "sim": Path(sim_model)}
    paths, real, pixel_a, real_truths = real_set()
    radius_px = DIAMETER_A / pixel_a / 2
    document = {**run_record(),
                "trained_per_dataset": {name: {dataset: str(path) for dataset, path in models.items()}
                                        for name, models in trained.items()},
                "real": {"micrographs": [path.stem for path in paths], "pixel_size_a": pixel_a,
                         "diameter_a": DIAMETER_A, "annotated": [len(truth) for truth in real_truths]}}
    if args.output.is_file():  # keep the stages of an earlier run that this one does not redo
        earlier = json.loads(args.output.read_text())
        document.update({key: earlier[key] for key in ("transfer", "budget") if key in earlier})

    def save() -> None:
        args.output.write_text(json.dumps(document, indent=2) + "\n")

    directory = args.work_dir / "sim"
    config = replace(SIMULATION, n_micrographs=args.sim_train + args.sim_test)
    if {"simulate", "transfer"} & set(args.stages) and not (directory / "manifest.json").is_file():
        write_dataset(config, directory, progress=False)  # the budget stage uses only the real set
    if "transfer" in args.stages:
        started = time.perf_counter()
        simulated = simulated_test_set(directory, "simulated apoferritin")
        if abs(simulated.pixel_size_a - pixel_a) > 1e-6 or simulated.diameter_a != DIAMETER_A:
            raise SystemExit(f"simulation at {simulated.pixel_size_a} A/px, {simulated.diameter_a} A: "
                             f"not the real set's {pixel_a}, {DIAMETER_A}")
        sim_raw = [micrograph.full_sum for micrograph in simulated.micrographs]
        sim_truths = [micrograph.truth for micrograph in simulated.micrographs]
        sim_paths = [DatasetLayout(directory).micrograph(micrograph.name) for micrograph in simulated.micrographs]
        train, test = slice(0, args.sim_train), slice(args.sim_train, None)
        settings = LearnedJudgeSettings(seeds=tuple(args.seeds), steps=args.steps)
        document["transfer"] = section = {
            "simulation": {**config.to_dict(), "seconds": time.perf_counter() - started,
                           "particles": [len(truth) for truth in sim_truths],
                           "train": [m.name for m in simulated.micrographs[train]],
                           "test": [m.name for m in simulated.micrographs[test]]},
            "settings": {"seeds": list(settings.seeds), "steps": settings.steps, "bootstrap": settings.bootstrap},
            "denoisers": {}}
        save()
        runs: dict[str, dict[str, CrossValidation]] = {}
        for name in [*args.denoisers, *trained]:
            started = time.perf_counter()
            real_images, sim_images = (
                outputs("default" if name in trained else name, images, pixel_a, lowpass_a=args.lowpass_a,
                        paths=dataset_paths, topaz_dir=args.topaz_dir and args.topaz_dir / dataset,
                        model_path=trained[name][dataset] if name in trained else None)
                for dataset, images, dataset_paths in (("real", real, paths), ("sim", sim_raw, sim_paths)))
            entry = section["denoisers"][name] = {"denoise_seconds": time.perf_counter() - started}
            entry["blob"] = {"real": blob_summary(real_images, real_truths, pixel_a),
                             "sim_test": blob_summary(sim_images[test], sim_truths[test], pixel_a)}
            save()
            forward = transfer_judge(sim_images[train], sim_truths[train], pixel_a,
                                     real_images + sim_images[test], real_truths + sim_truths[test], pixel_a,
                                     DIAMETER_A, radius_px, settings)
            on_real, on_sim = split(forward, [len(real_images), len(sim_images[test])])
            backward = transfer_judge(real_images, real_truths, pixel_a, sim_images[test], sim_truths[test], pixel_a,
                                      DIAMETER_A, radius_px, settings)
            runs[name] = {"sim_to_real": on_real, "sim_to_sim": on_sim, "real_to_sim": backward}
            for direction, run in runs[name].items():
                entry[direction] = run.summary(settings)
                if name != "raw" and "raw" in runs:
                    entry[direction]["minus_raw"] = differences(run, runs["raw"][direction], settings)
            entry["sim_to_real"]["real_minus_sim"] = {  # the same pickers on the two targets: the transfer gap
                statistic: entry["sim_to_real"][statistic] - entry["sim_to_sim"][statistic] for statistic in STATISTICS}
            save()
            print("transfer", name, {direction: round(entry[direction]["ap"], 3) for direction in runs[name]},
                  f"{time.perf_counter() - started:.0f} s", flush=True)

    if "budget" in args.stages:
        settings = LearnedJudgeSettings(folds=args.folds, seeds=tuple(args.seeds), steps=args.budget_steps)
        document["budget"] = section = {
            "settings": {"folds": settings.folds, "seeds": list(settings.seeds), "steps": settings.steps,
                         "bootstrap": settings.bootstrap, "training_micrographs_per_fold": 1,
                         "prior": "full annotated count of the training micrograph"},
            "budgets": {}}
        images = {}
        for name in args.budget_denoisers:
            started = time.perf_counter()
            images[name] = outputs(name, real, pixel_a, lowpass_a=args.lowpass_a, paths=paths,
                                   topaz_dir=args.topaz_dir and args.topaz_dir / "real")
            section.setdefault("denoise_seconds", {})[name] = time.perf_counter() - started
        budgets: list[int | None] = [*args.budgets, *([None] if args.anchor else [])]
        for budget in budgets:
            key = "micrograph" if budget is None else str(budget)
            runs = {}
            for name in args.budget_denoisers:
                runs[name] = cross_validate(images[name], real_truths, pixel_a, DIAMETER_A, radius_px, settings,
                                            label_budget=1, particle_budget=budget)
                entry = section["budgets"].setdefault(key, {})[name] = runs[name].summary(settings)
                if name != "raw" and "raw" in runs:
                    entry["minus_raw"] = differences(runs[name], runs["raw"], settings)
                save()
                print("budget", key, name, round(entry["ap"], 3), entry["ap_ci"], f"{runs[name].seconds:.0f} s",
                      flush=True)
    save()


if __name__ == "__main__":
    main()
