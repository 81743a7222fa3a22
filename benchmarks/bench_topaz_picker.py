"""Topaz's own picker against cryoscore's learned picker on the real set, the same k-fold split (issue 13).

    topaz-venv/bin/python benchmarks/topaz_picker.py ../shared/data/apoferritin-empiar10146/micrographs \\
        ../shared/data/apoferritin-empiar10146/coordinates -o TOPAZPICK --folds 5 --seeds 0 --epochs 5 --epoch-size 200
    OMP_NUM_THREADS=1 python benchmarks/bench_topaz_picker.py TOPAZPICK -o OUT.json --ours raw default --steps 800
    cryoscore denoise MICROGRAPHS -o DENOISED   # Topaz's picker on denoised micrographs: topaz_picker.py DENOISED ..., then --topaz-denoiser default

Scores ``topaz_picker.py``'s picks (one file per seed, fold and epoch; micrograph ``i`` of
the sorted names in fold ``i mod k``, the split of ``cryoscore.bench.crossval``) exactly
as the learned judge scores its own: every peak matched to the annotations within half a
diameter, AP and best F1 pooled over micrographs, 95 % bootstrap intervals over
micrographs and seeds. With ``--ours`` it also runs cryoscore's learned picker
(``--steps``) on those denoisers' outputs with the same folds and seeds, and reports the
paired difference of Topaz's picker (its last epoch) minus each. ``--topaz-denoiser`` names
what Topaz's picker was given (``topaz_picker.py`` reads any folder of MRC micrographs, e.g.
``cryoscore denoise``'s outputs). cryoscore's runs are
kept in OUT.ours.pkl and reused when their settings match, so they can run while Topaz
trains: without Topaz's picks yet, the script runs them, keeps them and stops. The JSON is
rewritten after every row.
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import numpy as np
from bench_learned_picker import DIAMETER_A, outputs, real_set, run_record

from cryoscore.bench.config import LearnedJudgeSettings
from cryoscore.bench.crossval import CrossValidation, cross_validate, fold_of_each, paired_difference
from cryoscore.metrics.picking import MatchResult, match_picks


def read_topaz_picks(path: Path) -> dict[str, np.ndarray]:
    """``topaz extract``'s coordinate file: micrograph name -> (N, 3) rows of x, y (pixels) and score."""
    rows: dict[str, list[tuple[float, float, float]]] = {}
    for line in path.read_text().splitlines()[1:]:
        name, x, y, score = line.split("\t")
        rows.setdefault(name, []).append((float(x), float(y), float(score)))
    return {name: np.asarray(values) for name, values in rows.items()}


def topaz_record(directory: Path) -> dict | None:
    """``topaz_picker.py``'s records in ``directory`` merged (one per process when folds were spread):
    the shared settings, ``commands`` and ``seconds`` of all; None until every fold has one.
    SystemExit when the records disagree on a setting."""
    records = [json.loads(path.read_text()) for path in sorted(directory.glob("topaz_picker*.json"))]
    if not records:
        return None
    shared = ("topaz", "torch", "threads", "names", "folds", "seeds", "scale", "extract_radius_px", "epochs",
              "epoch_size")
    if any({key: record[key] for key in shared} != {key: records[0][key] for key in shared} for record in records):
        raise SystemExit(f"{directory}: Topaz's records disagree on their settings")
    folds = {fold for record in records
             for fold in (record.get("run_folds") or range(min(record["folds"], len(record["names"]))))}
    if folds != set(range(min(records[0]["folds"], len(records[0]["names"])))):
        return None
    return {**{key: records[0][key] for key in shared}, "commands": [record["command"] for record in records],
            "seconds": {key: value for record in records for key, value in record["seconds"].items()}}


def topaz_results(directory: Path, names: list[str], truths: list, seeds: list[int], folds: int, epoch: int,
                  radius_px: float, diameter_px: float) -> list[list[MatchResult]]:
    """``results[s][i]``: Topaz's picks of micrograph ``i`` by the seed-``s`` picker of its fold, after ``epoch``."""
    fold = fold_of_each(len(names), folds)
    results = []
    for seed in seeds:
        row: list[MatchResult | None] = [None] * len(names)
        for held_out in range(int(fold.max()) + 1):
            picks = read_topaz_picks(directory / f"picks_seed{seed}_fold{held_out}_epoch{epoch}.txt")
            for index in np.flatnonzero(fold == held_out).tolist():
                found = picks.get(names[index], np.zeros((0, 3)))
                truth = truths[index]
                row[index] = match_picks(found[:, :2], found[:, 2], np.stack([truth.x_px, truth.y_px], axis=1),
                                         radius_px, diameter_px=diameter_px)
        results.append(row)
    return results  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("topaz_picks", type=Path, help="topaz_picker.py's output folder")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--ours", nargs="*", default=[], help="cryoscore's learned picker on these denoisers' "
                        "outputs (raw, lowpass, default, topaz)")
    parser.add_argument("--steps", type=int, default=800, help="cryoscore picker's training steps")
    parser.add_argument("--topaz-dir", type=Path, help="Topaz-Denoise outputs NAME.mrc (for --ours topaz)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--topaz-denoiser", default="raw", help="what Topaz's picker was given, for the table: "
                        "raw, or the denoiser whose outputs topaz_picker.py read")
    parser.add_argument("--minus-topaz", type=Path, metavar="TOPAZPICK", help="also the paired difference of "
                        "this Topaz run (last epoch) minus another's on the same folds, e.g. denoised minus raw")
    args = parser.parse_args()
    paths, images, pixel_a, truths = real_set()
    names = [path.stem for path in paths]
    radius_px, diameter_px = DIAMETER_A / pixel_a / 2, DIAMETER_A / pixel_a
    settings = LearnedJudgeSettings(folds=args.folds, seeds=tuple(args.seeds), steps=args.steps)
    cache_path = args.output.with_suffix(".ours.pkl")
    cache = pickle.loads(cache_path.read_bytes()) if cache_path.exists() else {}
    ours = {}
    for name in args.ours:
        key = (name, args.steps, args.folds, tuple(args.seeds))
        if key not in cache:
            images_of_name = outputs(name, images, pixel_a, paths=paths, topaz_dir=args.topaz_dir)
            cache[key] = cross_validate(images_of_name, truths, pixel_a, DIAMETER_A, radius_px, settings)
            cache_path.write_bytes(pickle.dumps(cache))
            print("cryoscore picker on", name, "done", flush=True)
        ours[name] = cache[key]
    record = topaz_record(args.topaz_picks)
    if record is None:
        raise SystemExit(f"{args.topaz_picks}: Topaz's picks are not all there yet; cryoscore's runs are kept in "
                         f"{cache_path}, run again when they are")
    if names != record["names"] or record["folds"] != args.folds or record["seeds"] != args.seeds:
        raise SystemExit(f"{args.topaz_picks}: Topaz's picks are of other micrographs, folds or seeds")
    document = {**run_record(),
                "topaz_commands": record["commands"], "topaz_denoiser": args.topaz_denoiser, "topaz_settings": {key: record[key] for key in (
                    "topaz", "torch", "threads", "scale", "extract_radius_px", "epochs", "epoch_size", "seconds")},
                "dataset": "EMPIAR-10146", "pixel_size_a": pixel_a, "diameter_a": DIAMETER_A,
                "folds": args.folds, "seeds": args.seeds, "rows": []}

    def add_row(row: dict) -> None:
        document["rows"].append(row)
        args.output.write_text(json.dumps(document, indent=2) + "\n")
        print(row["picker"], row["denoiser"], row.get("updates", row.get("steps")), round(row["ap"], 3),
              [round(value, 3) for value in row["ap_ci"]], flush=True)

    topaz_last: list[list[MatchResult]] = []
    for epoch in range(1, record["epochs"] + 1):
        topaz_last = topaz_results(args.topaz_picks, names, truths, args.seeds, args.folds, epoch,
                                   radius_px, diameter_px)
        run = CrossValidation(topaz_last, [], [], tuple(args.seeds), args.folds, [], 0, 0.0)
        add_row({"picker": "topaz", "denoiser": args.topaz_denoiser, "epoch": epoch, "updates": epoch * record["epoch_size"],
                 **run.summary(settings)})
    if args.minus_topaz is not None:
        other = topaz_record(args.minus_topaz)
        if other is None or other["names"] != names or other["epochs"] != record["epochs"]:
            raise SystemExit(f"{args.minus_topaz}: not a finished Topaz run of the same micrographs and epochs")
        other_results = topaz_results(args.minus_topaz, names, truths, args.seeds, args.folds, record["epochs"],
                                      radius_px, diameter_px)
        document["minus_topaz"] = {"other": str(args.minus_topaz), **{
            statistic: paired_difference(topaz_last, other_results, statistic) for statistic in ("ap", "f1")}}
        print("minus the other Topaz run:", document["minus_topaz"]["ap"], flush=True)
    for name, run in ours.items():
        add_row({"picker": "cryoscore", "denoiser": name, "steps": args.steps, **run.summary(settings),
                 "topaz_picker_minus_this": {statistic: paired_difference(topaz_last, run.results, statistic)
                                                    for statistic in ("ap", "f1")}})


if __name__ == "__main__":
    main()
