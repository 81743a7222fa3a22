"""``cryoscore reconstruct``: its options (:func:`add_args`) and what it runs (:func:`main`)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from cryoscore.cli.common import input_error, non_negative_int, positive_float, require_empty_output
from cryoscore.errors import InputError
from cryoscore.settings import ReconstructionSettings, SettingError

EXAMPLES = """
examples:
  cryoscore reconstruct sim/ -o recon-truth/                        # the true coordinates
  cryoscore reconstruct sim/ --picks picks/ --threshold 3 -o recon/ # picks from cryoscore pick
  cryoscore reconstruct sim/ --ctf ctf.star -o recon-ctf/           # CTFs estimated by cryoscore ctf
  cryoscore reconstruct sim/ --picks picks/ --threshold 3 --box 96 --max-particles 2000 -o recon/
"""


DEFAULTS = ReconstructionSettings()
FLAGS = {"box_px": "--box", "max_particles": "--max-particles", "reference_resolution_a": "--reference-resolution",
         "seed": "--seed"}
"""The ReconstructionSettings field each flag sets (a setting's error names the flag)."""


def add_args(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reconstruct",
        help="3D reconstruction from picks: half maps, FSC resolution",
        description="Box the picked particles from the dataset's raw micrographs, assign poses by projection "
                    "matching against the dataset's reference low-passed to --reference-resolution, reconstruct two "
                    "random halves with CTF correction and report the half-map FSC resolution (0.143) and the "
                    "resolution against the reference (0.5). DATASET_DIR is a cryoscore dataset (manifest.json with "
                    "the pixel size, particle diameter and each micrograph's CTF; reference.mrc). Writes "
                    "OUTDIR/half1.mrc, half2.mrc, map.mrc and reconstruction.json.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dataset", type=Path, metavar="DATASET_DIR", help="dataset written by cryoscore simulate")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR")
    parser.add_argument("--picks", type=Path, metavar="DIR",
                        help="NAME.star per micrograph, e.g. from cryoscore pick (default: the true coordinates)")
    parser.add_argument("--threshold", type=float, metavar="T", help="use picks scoring at least T (default: all)")
    parser.add_argument("--ctf", type=Path, metavar="STAR",
                        help="each micrograph's CTF from this micrograph STAR file, e.g. from cryoscore ctf "
                             "(default: the manifest's)")
    parser.add_argument("--box", type=int, default=DEFAULTS.box_px, metavar="PX",
                        help=f"processing box, even, pixels; larger boxes are Fourier-cropped to it (default: {DEFAULTS.box_px})")
    parser.add_argument("--max-particles", type=int, default=DEFAULTS.max_particles, metavar="N",
                        help=f"at most N particles, drawn at random (default: {DEFAULTS.max_particles})")
    parser.add_argument("--reference-resolution", type=positive_float, default=DEFAULTS.reference_resolution_a,
                        metavar="A", help="the reference is used for alignment up to this resolution, A (default: "
                        f"{DEFAULTS.reference_resolution_a:g})")
    parser.add_argument("--seed", type=non_negative_int, default=DEFAULTS.seed, metavar="S",
                        help=f"seeds the particle subset and the half split (default: {DEFAULTS.seed})")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output directory")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from cryoscore.reconstruct.pipeline import reconstruct_dataset, write_reconstruction

    if args.picks is not None and not args.picks.is_dir():
        raise InputError(args.picks, "picks directory not found")
    require_empty_output(args.output, args.overwrite)
    try:
        settings = ReconstructionSettings(box_px=args.box, max_particles=args.max_particles,
                                          reference_resolution_a=args.reference_resolution, seed=args.seed)
        result = reconstruct_dataset(args.dataset, args.picks, threshold=args.threshold, ctf_star=args.ctf,
                                     settings=settings)
    except SettingError as error:
        raise input_error(error, FLAGS) from None
    write_reconstruction(args.output, result, {"dataset": str(args.dataset), "picks": str(args.picks or "truth"),
                                               "threshold": args.threshold, "ctf": str(args.ctf or "manifest"),
                                               "settings": dataclasses.asdict(settings),
                                               "command_line": args.command_line})
    truth = "-" if result.truth_resolution_a is None else f"{result.truth_resolution_a:.1f} A"
    print(f"{result.n_particles} particles of {result.n_picks} picks, {result.box_px} px at "
          f"{result.pixel_size_a:.3g} A/px: half maps {result.half_map_resolution_a:.1f} A (FSC 0.143), "
          f"vs reference {truth} (FSC 0.5); maps in {args.output}")
    return 0
