"""Do the denoisers that make particles out of empty ice pick worse? (issues 12 and 13)

    python benchmarks/empty_ice_picks_vs_ap.py METRICS.json... [--without topaz]

Reads the metrics.json of ``cryoscore bench`` runs with the learned judge and the particle-free
control. For each simulated dataset, over its denoisers, the Spearman rank correlation between
the learned picker's AP on the test micrographs and the learned picks per particle-free
micrograph (each fold's picker, trained on that denoiser's outputs, applied to its outputs of
micrographs without particles at the threshold of its best F1). A negative rho says the outputs
on which the picker finds particles in empty ice are the ones it picks worse on. Prints one
Markdown row per run and dataset; ``--without`` leaves denoisers out (Topaz-Denoise's pretrained model
is the one output made by another program).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scipy.stats import spearmanr


def rank_correlation_rows(metrics: dict, run: str, without: set[str]) -> list[str]:
    """One Markdown row per dataset of a bench's metrics that has a learned particle-free count:
    run, dataset, denoisers, Spearman rho, two-sided p, and the denoisers with the most and fewest
    learned picks per particle-free micrograph."""
    rows = []
    for name, dataset in metrics["datasets"].items():
        empty = dataset.get("particle_free", {})
        names = [d for d, result in dataset["denoisers"].items()
                 if d not in without and "learned" in result and "learned_picks_per_micrograph" in empty.get(d, {})]
        if len(names) < 3:
            continue
        aps = [dataset["denoisers"][d]["learned"]["ap"] for d in names]
        picks = [empty[d]["learned_picks_per_micrograph"] for d in names]
        rho, p = spearmanr(aps, picks)
        by_picks = sorted(zip(picks, names))
        rows.append(f"| {run} | {name} | {len(names)} | {rho:+.2f} | {p:.3f} | "
                    f"{by_picks[-1][1]} {by_picks[-1][0]:.1f}, {by_picks[0][1]} {by_picks[0][0]:.1f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", nargs="+", type=Path, help="metrics.json of cryoscore bench runs")
    parser.add_argument("--without", nargs="*", default=[], help="denoisers to leave out")
    args = parser.parse_args()
    print("| run | dataset | denoisers | Spearman rho (AP, empty-ice picks) | p | most, fewest picks per empty micrograph |")
    print("|---|---|---|---|---|---|")
    for path in args.metrics:
        for row in rank_correlation_rows(json.loads(path.read_text()), path.stem, set(args.without)):
            print(row)


if __name__ == "__main__":
    main()
