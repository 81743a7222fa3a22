"""``cryoscore demo``: its options (:func:`add_args`) and what it runs (:func:`main`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cryoscore.cli.common import non_negative_int, require_empty_output

EXAMPLES = """
examples:
  cryoscore demo                    # writes ./cryoscore-demo/
  cryoscore demo -o /tmp/demo --seed 7
"""


def add_args(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the main job on built-in data (no download)",
        description="Simulate a small apoferritin dataset from the built-in specimen, denoise it with the shipped "
                    "default model, pick, score, reconstruct and write report.html; no download.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-o", "--output", type=Path, default=Path("cryoscore-demo"), metavar="DIR",
                        help="where to write (default: ./cryoscore-demo)")
    parser.add_argument("--seed", type=non_negative_int, default=0, metavar="S", help="random seed (default: 0)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output directory")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from cryoscore.demo import run_demo

    require_empty_output(args.output, args.overwrite)
    summary = run_demo(args.output, seed=args.seed,
                       stage=lambda text: print(f"cryoscore demo: {text} ...", file=sys.stderr, flush=True))
    print(summary)
    return 0
