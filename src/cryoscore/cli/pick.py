"""``cryoscore pick``: its options (:func:`add_args`) and what it runs (:func:`main`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cryoscore.cli.common import (
    add_parallel_options,
    batch_exit_code,
    check_parallel_options,
    failure_reporter,
    positive_float,
)
from cryoscore.errors import InputError
from cryoscore.settings import DEVICES

EXAMPLES = """
examples:
  cryoscore pick denoised/*.mrc -o picks/ --diameter 120                  # blob picker, reference-free
  cryoscore pick denoised/*.mrc -o picks/ --diameter 120 --threshold 3    # keep picks scoring >= 3
  cryoscore pick denoised/*.mrc -o picks/ --diameter 120 --picker template --reference ref.mrc
  cryoscore pick denoised/ -o picks/ --diameter 120 --workers 2           # a directory, 2 processes
  cryoscore pick test/*.mrc -o picks/ --diameter 120 --method learned \
      --train-micrographs train/*.mrc --train-coordinates train_coords/ --save-model picker.pt
  cryoscore pick more/*.mrc -o picks2/ --method learned --model picker.pt     # reuse a trained picker
"""


def add_args(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pick",
        help="pick particles: one RELION coordinate STAR per micrograph",
        description="Pick particles with the reference-free blob picker (Difference of Gaussians sized from the "
                    "diameter), a template picker (cross-correlation with projections of a reference) or a learned "
                    "picker (a small convolutional network trained, positive-unlabelled, on annotated micrographs; "
                    "or reused with --model). Writes OUTDIR/NAME.star per input with rlnAutopickFigureOfMerit, and "
                    "OUTDIR/pick.json. A micrograph that cannot be used is reported and the others go on (exit code "
                    "2 at the end).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="MRC",
                        help="micrographs (raw or denoised): files, directories of *.mrc or quoted globs")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR", help="where the STAR files go")
    parser.add_argument("--diameter", type=positive_float, metavar="A",
                        help="particle diameter, A (required, except for a learned picker given with --model)")
    parser.add_argument("--picker", "--method", dest="picker", choices=("blob", "template", "learned"),
                        default="blob", help="default: blob")
    parser.add_argument("--reference", metavar="MAP_OR_MODEL",
                        help="template picker: MRC map, atomic model or built-in specimen name")
    parser.add_argument("--threshold", type=float, metavar="T",
                        help="keep picks scoring at least T (default: every local maximum, for a PR curve)")
    parser.add_argument("--max-picks", type=int, metavar="N", help="keep at most N picks per micrograph")
    parser.add_argument("--pixel-size", type=positive_float, metavar="A",
                        help="pixel size, A (default: from the MRC header)")
    learned = parser.add_argument_group("learned picker")
    learned.add_argument("--model", type=Path, metavar="PICKER.pt", help="a picker saved by --save-model, to reuse")
    learned.add_argument("--train-micrographs", nargs="+", type=Path, metavar="MRC",
                         help="annotated micrographs to train on: files, directories or quoted globs")
    learned.add_argument("--train-coordinates", type=Path, metavar="DIR",
                         help="their particle coordinates, NAME.star (RELION), NAME.box (EMAN) or NAME.csv (x,y) "
                         "per micrograph NAME.mrc")
    learned.add_argument("--save-model", type=Path, metavar="PICKER.pt",
                         help="where the trained picker goes, with a PICKER.json sidecar (default: OUTDIR/picker.pt)")
    learned.add_argument("--train-steps", type=int, metavar="N",
                         help="training steps (default: 800, PickerTraining's; about two minutes on 2 CPU cores)")
    learned.add_argument("--seed", type=int, default=0, help="training seed (default: 0)")
    learned.add_argument("--expected-particles", type=positive_float, metavar="N",
                         help="particles per micrograph, annotated or not, for the positive-unlabelled loss "
                         "(default: the mean annotated count, i.e. annotations nearly complete)")
    learned.add_argument("--device", choices=DEVICES, default="cpu", help="default: cpu")
    add_parallel_options(parser, "pick")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from cryoscore.jobs import expand_inputs, summary_line
    from cryoscore.pick.learned_training import PickerTraining
    from cryoscore.pick.run import pick_micrographs

    check_parallel_options(args)
    learned_options = [name for name in ("model", "train_micrographs", "train_coordinates", "save_model",
                                         "expected_particles") if getattr(args, name) is not None]
    if args.picker != "learned" and learned_options:
        raise InputError("--" + learned_options[0].replace("_", "-"), "applies to --picker learned only")
    try:
        training = dataclasses.replace(PickerTraining(seed=args.seed, particles_per_micrograph=args.expected_particles),
                                       **({} if args.train_steps is None else {"steps": args.train_steps}))
    except ValueError as error:
        raise InputError("--train-steps/--seed", str(error)) from None
    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device", "CUDA is not available on this machine")
    train_micrographs = expand_inputs(args.train_micrographs) if args.train_micrographs else None
    records = pick_micrographs(expand_inputs(args.inputs), args.output, args.diameter, picker=args.picker,
                               reference=args.reference, pixel_size_a=args.pixel_size, max_picks=args.max_picks,
                               threshold=args.threshold, workers=args.workers, scheduler=args.scheduler,
                               torch_threads=args.threads, report=failure_reporter("pick"), model=args.model,
                               train_micrographs=train_micrographs, train_coordinates=args.train_coordinates,
                               save_model=args.save_model, training=training, device=args.device,
                               command_line=args.command_line)
    print(f"{summary_line(records, 'picked')}; outputs in {args.output}")
    return batch_exit_code(records)
