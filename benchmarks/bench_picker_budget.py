"""The learned picker's AP against its budgets, training steps and annotated micrographs, raw against denoised.

    OMP_NUM_THREADS=1 python benchmarks/bench_picker_budget.py -o OUT.json --steps 100 400 1600 [--dataset DIR]
    OMP_NUM_THREADS=1 python benchmarks/bench_picker_budget.py -o OUT.json --steps 800 --label-budgets 2 5

The learned judge (cryoscore.bench.crossval) trains one picker per fold and seed for a fixed
number of steps. Too few steps understate some denoisers more than others, so the judge's
step count is chosen here by convergence: for each step count, the k-fold learned AP and
F1 (pooled over micrographs, 95 % bootstrap intervals) of raw micrographs and of each
denoiser's outputs, and their paired difference (denoiser minus raw, same folds and seeds).
``--label-budgets`` repeats that with each fold's picker trained on only that many of the
other folds' micrographs (drawn per seed and fold, the same for every denoiser), the regime
where a denoiser's prior can matter; without it every other fold's micrograph is used.
``--dataset`` is a simulated dataset directory (``cryoscore simulate``); without it the real
EMPIAR-10146 set in ../shared/data. The JSON is rewritten after every row.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

from bench_learned_picker import DIAMETER_A, outputs, real_set, run_record

from cryoscore.bench.config import LearnedJudgeSettings
from cryoscore.bench.crossval import cross_validate, paired_difference
from cryoscore.bench.datasets import simulated_test_set
from cryoscore.infer import FLATTEN_LOWPASS_A
from cryoscore.settings import BACKGROUND_METHODS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, help="a simulated dataset directory (default: the real set)")
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 200, 400, 800, 1600])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--label-budgets", type=int, nargs="+", help="annotated micrographs per fold "
                        "(default: all of the other folds')")
    parser.add_argument("--denoisers", nargs="+", default=["raw", "default"], help="raw first, then any of "
                        "lowpass, default, flattened, adapted, topaz (benchmarks/bench_learned_picker.py's outputs)")
    parser.add_argument("--flatten-lowpass", type=float, default=FLATTEN_LOWPASS_A, metavar="A",
                        help=f"the flattened output's low-pass, Angstrom (default {FLATTEN_LOWPASS_A:g}, as denoise --flatten)")
    parser.add_argument("--topaz-dir", type=Path, help="Topaz-Denoise outputs NAME.mrc of the micrographs")
    parser.add_argument("--model", type=Path, help="judge this model as 'default' instead of the shipped one")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where the denoisers and pickers run (default: cpu)")
    parser.add_argument("--background", choices=BACKGROUND_METHODS, default=BACKGROUND_METHODS[0],
                        help="how the picker removes the micrographs' background (default: %(default)s)")
    args = parser.parse_args()
    if args.model is not None and args.output.resolve() == args.model.with_suffix(".json").resolve():
        parser.error(f"-o {args.output} is the sidecar of --model {args.model}; write the results elsewhere")
    if args.dataset is None:
        paths, images, pixel_a, truths = real_set()
        diameter_a, label = DIAMETER_A, "EMPIAR-10146"
    else:
        test_set = simulated_test_set(args.dataset, args.dataset.name)
        paths = [args.dataset / "micrographs" / f"{micrograph.name}.mrc" for micrograph in test_set.micrographs]
        images = [micrograph.full_sum for micrograph in test_set.micrographs]
        truths = [micrograph.truth for micrograph in test_set.micrographs]
        pixel_a, diameter_a, label = test_set.pixel_size_a, test_set.diameter_a, str(args.dataset)
    radius_px = diameter_a / pixel_a / 2
    document = {**run_record(),
                "dataset": label, "pixel_size_a": pixel_a, "diameter_a": diameter_a, "background": args.background,
                "folds": args.folds, "seeds": args.seeds, "rows": []}
    adapted_path = args.output.with_name(args.output.stem + "-adapted.pt")
    denoised = {name: outputs(name, images, pixel_a, flatten_lowpass_a=args.flatten_lowpass, paths=paths,
                              topaz_dir=args.topaz_dir, model_path=args.model, adapted_path=adapted_path,
                              device=args.device)
                for name in args.denoisers}
    for steps, label_budget in itertools.product(args.steps, args.label_budgets or [None]):
        settings = LearnedJudgeSettings(folds=args.folds, seeds=tuple(args.seeds), steps=steps, device=args.device,
                                        background=args.background)
        runs = {}
        for name, outputs_of_name in denoised.items():
            runs[name] = cross_validate(outputs_of_name, truths, pixel_a, diameter_a, radius_px, settings,
                                        label_budget=label_budget)
            row = {"steps": steps, "label_budget": label_budget, "denoiser": name, **runs[name].summary(settings)}
            if name != args.denoisers[0]:
                row["minus_" + args.denoisers[0]] = {
                    statistic: paired_difference(runs[name].results, runs[args.denoisers[0]].results, statistic)
                    for statistic in ("ap", "f1")}
            document["rows"].append(row)
            args.output.write_text(json.dumps(document, indent=2) + "\n")
            print(steps, label_budget, name, round(row["ap"], 3), [round(value, 3) for value in row["ap_ci"]],
                  round(row["seconds"]), flush=True)


if __name__ == "__main__":
    main()
