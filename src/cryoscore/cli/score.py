"""``cryoscore score``: its options (:func:`add_args`) and what it runs (:func:`main`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cryoscore.cli.common import positive_float
from cryoscore.errors import InputError
from cryoscore.io.atomic import check_output_file

EXAMPLES = """
examples:
  cryoscore score picks/ sim/coordinates/                     # scale from picks/pick.json or sim/manifest.json
  cryoscore score picks/ truth/ --diameter 120 --pixel-size 1.85 --json score.json
"""


def add_args(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score",
        help="score picks against true coordinates: precision, recall, F1, AP",
        description="Match picks one-to-one to true particle centres (maximum matching within a fraction of the "
                    "diameter) at every score threshold; print precision, recall and F1 at the best threshold and "
                    "the average precision, per micrograph and pooled.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("picks", type=Path, metavar="PICKS_DIR", help="NAME.star (or .box/.csv) per micrograph")
    parser.add_argument("truth", type=Path, metavar="TRUTH_DIR", help="true coordinates, same file names")
    parser.add_argument("--radius-fraction", type=positive_float, default=0.5, metavar="F",
                        help="match within F particle diameters (default: 0.5)")
    parser.add_argument("--diameter", type=positive_float, metavar="A",
                        help="particle diameter, A (default: from PICKS_DIR/pick.json or the dataset manifest)")
    parser.add_argument("--pixel-size", type=positive_float, metavar="A", help="pixel size, A (default: as --diameter)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every number as JSON")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from cryoscore.metrics.pick_score import score_directories, write_score_json

    for directory in (args.picks, args.truth):
        if not directory.is_dir():
            raise InputError(directory, "not a directory")
    if args.json is not None:
        check_output_file(args.json)
    score = score_directories(args.picks, args.truth, radius_fraction=args.radius_fraction,
                              diameter_a=args.diameter, pixel_size_a=args.pixel_size)
    print(score.table())
    if args.json is not None:
        write_score_json(args.json, score)
    return 0
