"""``cryoscore reconstruct``: its options (:func:`add_args`) and what it runs (:func:`main`)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

from cryoscore.cli.common import input_error, non_negative_int, positive_float, require_empty_output
from cryoscore.errors import InputError
from cryoscore.settings import ReconstructionSettings, SettingError

logger = logging.getLogger(__name__)

EXAMPLES = """
examples:
  cryoscore reconstruct sim/ -o recon-truth/                        # the true coordinates
  cryoscore reconstruct sim/ --picks picks/ --threshold 3 -o recon/ # picks from cryoscore pick
  cryoscore reconstruct sim/ --ctf ctf.star -o recon-ctf/           # CTFs estimated by cryoscore ctf
  cryoscore reconstruct sim/ --picks picks/ --threshold 3 --box 96 --max-particles 2000 -o recon/
  cryoscore reconstruct micrographs/ --picks picks/ --diameter 120 --reference shell:120:80 \\
      --symmetry O --ctf ctf.star -o recon/                         # real micrographs, no manifest
"""


DEFAULTS = ReconstructionSettings()
FLAGS = {"box_px": "--box", "max_particles": "--max-particles", "reference_resolution_a": "--reference-resolution",
         "seed": "--seed", "symmetry": "--symmetry"}
"""The ReconstructionSettings field each flag sets (a setting's error names the flag)."""

MICROGRAPH_ONLY = ("diameter", "reference", "pixel_size")
"""Options that describe micrographs without a manifest; a dataset's manifest gives them."""


def add_args(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reconstruct",
        help="3D reconstruction from picks: half maps, FSC resolution",
        description="Box the picked particles from the raw micrographs, assign poses by projection matching against "
                    "a reference low-passed to --reference-resolution, reconstruct two random halves with CTF "
                    "correction, average each over the point group (--symmetry), and report the half-map FSC "
                    "resolution (0.143) and, for a simulated dataset, the resolution against its true map (0.5). "
                    "INPUT is either a cryoscore dataset directory (manifest.json with the pixel size, particle "
                    "diameter, symmetry and each micrograph's CTF; reference.mrc) or micrographs (MRC files, "
                    "directories of them or quoted glob patterns) with --picks, --diameter and --reference; their "
                    "CTFs come from --ctf, and without it the particles are reconstructed without CTF correction, "
                    "valid only up to the CTF's first zero. Writes OUTDIR/half1.mrc, half2.mrc, map.mrc and "
                    "reconstruction.json.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", type=Path, nargs="+", metavar="INPUT",
                        help="a dataset directory written by cryoscore simulate, or micrographs")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR")
    parser.add_argument("--picks", type=Path, metavar="DIR",
                        help="NAME.star (or .box, .csv) per micrograph, e.g. from cryoscore pick (default for a "
                             "dataset: its true coordinates)")
    parser.add_argument("--threshold", type=float, metavar="T", help="use picks scoring at least T (default: all)")
    parser.add_argument("--ctf", type=Path, metavar="STAR",
                        help="each micrograph's CTF from this micrograph STAR file, e.g. from cryoscore ctf "
                             "(default: a dataset's manifest; micrographs: no CTF correction)")
    parser.add_argument("--diameter", type=positive_float, metavar="A", help="micrographs: particle diameter, A")
    parser.add_argument("--reference", metavar="DENSITY",
                        help="micrographs: the alignment reference (MRC map, atomic model, built-in name or "
                             "shell:OUTER_A:INNER_A); to judge picks, one independent of what made them")
    parser.add_argument("--pixel-size", type=positive_float, metavar="A",
                        help="micrographs: A/px (default: the MRC header)")
    parser.add_argument("--symmetry", metavar="GROUP",
                        help="point group: Cn, Dn (about z) or O, RELION's axes (default: a dataset's manifest, "
                             "else C1)")
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


def _is_dataset(inputs: list[Path]) -> bool:
    return len(inputs) == 1 and (inputs[0] / "manifest.json").is_file()


def main(args: argparse.Namespace) -> int:
    from cryoscore.jobs import expand_inputs
    from cryoscore.reconstruct.pipeline import reconstruct_dataset, reconstruct_micrographs, write_reconstruction

    if args.picks is not None and not args.picks.is_dir():
        raise InputError(args.picks, "picks directory not found")
    try:
        settings = ReconstructionSettings(box_px=args.box, max_particles=args.max_particles,
                                          reference_resolution_a=args.reference_resolution, seed=args.seed,
                                          symmetry=args.symmetry)
    except SettingError as error:
        raise input_error(error, FLAGS) from None
    require_empty_output(args.output, args.overwrite)
    dataset = _is_dataset(args.inputs)
    paths: list[Path] = []  # the micrographs, when INPUT is not a dataset
    if dataset:
        given = [name for name in MICROGRAPH_ONLY if getattr(args, name) is not None]
        if given:
            raise InputError(args.inputs[0], f"--{given[0].replace('_', '-')} is for micrographs; a dataset's "
                                             "manifest gives the pixel size, diameter and reference")
    else:
        missing = [flag for flag, value in (("--picks", args.picks), ("--diameter", args.diameter),
                                            ("--reference", args.reference)) if value is None]
        if missing:
            raise InputError(args.inputs[0], f"not a dataset directory (no manifest.json): micrographs need "
                                             f"{', '.join(missing)}")
        paths = expand_inputs(args.inputs)
    try:
        if dataset:
            result = reconstruct_dataset(args.inputs[0], args.picks, threshold=args.threshold, ctf_star=args.ctf,
                                         settings=settings)
        else:
            if args.ctf is None:
                logger.warning("no --ctf: reconstructing without CTF correction (valid only to the CTF's first zero)")
            result = reconstruct_micrographs(paths, args.picks, args.reference, args.diameter, settings,
                                             ctf_star=args.ctf, pixel_size_a=args.pixel_size, threshold=args.threshold)
    except SettingError as error:
        raise input_error(error, FLAGS) from None
    ctf_source = str(args.ctf) if args.ctf is not None else ("manifest" if dataset else "none")
    source = ({"dataset": str(args.inputs[0])} if dataset else {"micrographs": [str(path) for path in paths]})
    inputs = {**source, "picks": str(args.picks or "truth"),
              "threshold": args.threshold, "ctf": ctf_source, "reference": args.reference or "dataset",
              "settings": dataclasses.asdict(settings), "command_line": args.command_line}
    write_reconstruction(args.output, result, inputs)
    truth = ("" if result.truth_resolution_a is None
             else f", against the true map {result.truth_resolution_a:.1f} A (FSC 0.5)")
    print(f"{result.n_particles} particles of {result.n_picks} picks, {result.box_px} px at "
          f"{result.pixel_size_a:.3g} A/px: half maps {result.half_map_resolution_a:.1f} A (FSC 0.143){truth}; "
          f"maps in {args.output}")
    return 0
