"""`--adapt-check` on held-out micrographs: does judging the adapted model by picking keep the AP?

    OMP_NUM_THREADS=1 python benchmarks/bench_adapt_check.py -o OUT [--config TOML] [--check 2] [--workers 2]

As a user would run `cryoscore denoise MICROGRAPHS --adapt --adapt-check DIR --diameter A`: the shipped
model is adapted (``--adapt``'s defaults) to every micrograph of a dataset (the real EMPIAR-10146 set,
or with ``--config`` the first test set of a bench config's first simulated specimen), and the
picking check (:func:`cryoscore.bench.picking_check.check_adaptation_by_picking`, its default judge)
sees the annotations of the first ``--check`` micrographs only. The remaining micrographs, which
neither the check nor anything else looked at, judge the default model, the adapted model, and the
one the check kept: the learned picker k-fold over them (``--folds``, ``--seeds``, 800 steps),
pooled AP with 95 % intervals and the paired difference against the default model. Writes
OUT/adapt_check.json and OUT/adapt_check.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bench_learned_picker import DIAMETER_A, real_set, run_record

from cryoscore.bench.config import LearnedJudgeSettings, load_bench_config
from cryoscore.bench.crossval import bootstrap_interval, cross_validate, paired_difference, pooled
from cryoscore.bench.datasets import simulate_specimen, simulated_test_set
from cryoscore.bench.picking_check import MATCH_RADIUS_DIAMETERS, PickingCheck, check_adaptation_by_picking
from cryoscore.infer.adapt import AdaptSettings, Micrograph, adapt_to_images
from cryoscore.infer.denoise import denoise_image, load_denoiser
from cryoscore.io.coords import ParticleCoordinates


def dataset(args: argparse.Namespace) -> tuple[str, list[Micrograph], list[ParticleCoordinates], float]:
    """(label, micrographs, their annotations, particle diameter in A) of the real set or ``--config``'s."""
    if args.config is None:
        paths, images, pixel_a, truths = real_set()
        return ("real EMPIAR-10146", [Micrograph(path.stem, image, pixel_a, str(path))
                                      for path, image in zip(paths, images)], truths, DIAMETER_A)
    _, tests, _ = simulate_specimen(load_bench_config(args.config), 0, args.output / "work")
    test_set = simulated_test_set(tests[0], tests[0].name)
    micrographs = [Micrograph(item.name, item.full_sum, test_set.pixel_size_a, str(tests[0] / item.name))
                   for item in test_set.micrographs]
    return (f"{args.config.stem} ({tests[0].name})", micrographs, [item.truth for item in test_set.micrographs],
            test_set.diameter_a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--config", type=Path, help="a bench config: its first simulated specimen (default: the real set)")
    parser.add_argument("--check", type=int, default=2, help="annotated micrographs the check sees (the first N)")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--workers", type=int, default=2, help="pickers trained at a time, check and judge")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    label, micrographs, truths, diameter_a = dataset(args)
    pixel_a = micrographs[0].pixel_size_a
    default, path = load_denoiser(), args.output / "adapted.pt"
    adaptation = adapt_to_images(default, micrographs, path, AdaptSettings(), progress=False)
    adapted = load_denoiser(path)  # before the check may replace the file with the default model
    check_names = {micrograph.name: truth for micrograph, truth in zip(micrographs[:args.check], truths)}
    check = PickingCheck(check_names, diameter_a, LearnedJudgeSettings(folds=5, seeds=(0,), workers=args.workers))
    verdict = check_adaptation_by_picking(default, path, micrographs, check)
    kept = verdict.kept if verdict is not None else False
    judge = LearnedJudgeSettings(folds=args.folds, seeds=tuple(args.seeds), steps=800, workers=args.workers)
    held_out, held_truths = micrographs[args.check:], truths[args.check:]
    results = {}
    for name, model in (("default", default), ("adapted", adapted)):
        outputs = [denoise_image(model, micrograph.image, pixel_size_a=pixel_a) for micrograph in held_out]
        results[name] = cross_validate(outputs, held_truths, pixel_a, diameter_a,
                                       MATCH_RADIUS_DIAMETERS * diameter_a / pixel_a, judge).results
    results["checked"] = results["adapted" if kept else "default"]
    rows = {name: {"ap": sum(pooled(row, "ap") or 0.0 for row in runs) / len(runs),
                   "ap_ci": bootstrap_interval(runs, "ap"),
                   "minus_default": paired_difference(runs, results["default"], "ap") if name != "default" else None}
            for name, runs in results.items()}
    document = {**run_record(), "dataset": label, "check_micrographs": list(check_names),
                "judged_micrographs": [micrograph.name for micrograph in held_out],
                "adaptation": {"initial_loss": adaptation.initial_loss, "adapted_loss": adaptation.adapted_loss,
                               "kept_by_loss": adaptation.kept, "seconds": adaptation.seconds},
                "picking_check": None if verdict is None else verdict.record(),
                "judge": {"folds": args.folds, "seeds": args.seeds, "steps": 800}, "rows": rows,
                "seconds": time.perf_counter() - started}
    (args.output / "adapt_check.json").write_text(json.dumps(document, indent=1))
    check_line = ("the loss check refused the adaptation" if verdict is None else
                  f"check on {len(check_names)} micrographs: AP {verdict.initial_ap:.3f} (default) -> "
                  f"{verdict.adapted_ap:.3f} (adapted), {'kept' if kept else 'refused'}, {verdict.seconds:.0f} s")
    lines = [f"{label}: held-out N2N loss {adaptation.initial_loss:.4f} -> {adaptation.adapted_loss:.4f}; {check_line}.",
             "", f"| judged on the other {len(held_out)} micrographs | learned AP [95 % CI] | minus default, paired |",
             "|---|---|---|"]
    for name, row in rows.items():
        difference = row["minus_default"]
        paired = "-" if difference is None else (f"{difference['difference']:+.3f} "
                                                 f"[{difference['ci'][0]:+.3f}, {difference['ci'][1]:+.3f}]")
        lines.append(f"| {name} | {row['ap']:.3f} [{row['ap_ci'][0]:.3f}, {row['ap_ci'][1]:.3f}] | {paired} |")
    (args.output / "adapt_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
