"""``cryoscore align``: its options (:func:`add_args`) and what it runs (:func:`main`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cryoscore.cli.common import positive_float, require_empty_output
from cryoscore.errors import InputError

EXAMPLES = """
examples:
  cryoscore align movies/*.tif -o aligned/ --pixel-size 0.83 --gain gain.mrc   # TIFF needs --pixel-size
  cryoscore align movies/*.mrcs -o aligned/ --patch 1024                        # larger patches: near-global motion
  cryoscore train aligned/ --method score -o model.pt                           # then train on its even/odd sums
"""


def add_args(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "align",
        help="motion-correct movies into full, even and odd sums (the layout train reads)",
        description="Align each movie's frames (the whole frame's drift: cross-correlation against the other frames "
                    "in rounds, fitted with a smooth trajectory; local motion on top with torch-motion-correction's "
                    "patch cross-correlation; frames resampled along the field) and write OUTDIR/micrographs/, "
                    "OUTDIR/even/ and OUTDIR/odd/ NAME.mrc (full sum and the sums of even- and odd-indexed frames) "
                    "and OUTDIR/motion/NAME.star (per-frame shifts, RELION style), plus OUTDIR/align.json.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="MOVIE", help="MRC/MRCS or TIFF movies")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR")
    parser.add_argument("--pixel-size", type=positive_float, metavar="A", help="A/px (default: the MRC header; "
                                                                                 "required for TIFF)")
    parser.add_argument("--gain", type=Path, metavar="MRC", help="gain reference that multiplies every frame")
    parser.add_argument("--patch", type=int, default=512, metavar="PX",
                        help="side of the patches whose motion is measured (default: 512)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output directory")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    import dataclasses

    from cryoscore.io.layout import write_json
    from cryoscore.preprocess.align import AlignSettings, align_movies

    require_empty_output(args.output, args.overwrite)
    try:
        settings = AlignSettings(patch_px=args.patch)
    except ValueError as error:
        raise InputError("--patch", str(error)) from None
    missing = [path for path in args.inputs if not path.is_file()]
    if missing:
        raise InputError(missing[0], "no such movie file")

    def report(record: dict) -> None:
        print(f"{record['name']}: {record['frames']} frames, drift {record['total_drift_px']:.2f} px along the path, "
              f"largest frame shift {record['largest_shift_px']:.2f} px", flush=True)

    records = align_movies(args.inputs, args.output, settings, pixel_size_a=args.pixel_size, gain=args.gain,
                           report=report)
    write_json(args.output / "align.json", {"settings": dataclasses.asdict(settings),
                                            "gain": None if args.gain is None else str(args.gain), "movies": records})
    print(f"{len(records)} movies aligned; sums in {args.output}/micrographs, even/, odd/")
    return 0
