"""``cryoscore denoise``: its options (:func:`add_args`) and what it runs (:func:`main`)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from cryoscore.cli.common import (
    add_parallel_options,
    batch_exit_code,
    check_parallel_options,
    failure_reporter,
    non_negative_int,
    positive_float,
)
from cryoscore.errors import InputError
from cryoscore.infer import DEFAULT_TILE_PX, FLATTEN_LOWPASS_A
from cryoscore.io.atomic import check_output_directory
from cryoscore.settings import DEVICES

EXAMPLES = """
examples:
  cryoscore denoise micrographs/*.mrc -o denoised/                      # the shipped default model
  cryoscore denoise micrographs/*.mrc -o denoised/ --model score.pt     # your own model, full frame sums
  cryoscore denoise mic.mrc -o out/ --uncertainty 8                     # + out/mic_std.mrc, 8 samples
  cryoscore denoise even/*.mrc -o denoised_even/ --model score.pt --halves 1
  cryoscore denoise micrographs/*.mrc -o lowpassed/ --lowpass 20        # Gaussian low-pass at 20 A
  cryoscore denoise micrographs/*.mrc -o flattened/ --flatten           # background removed, for picking
  cryoscore denoise micrographs/*.mrc -o picking/ --flatten auto --diameter 120   # whichever suits picking
  cryoscore denoise micrographs/*.mrc -o adapted/ --adapt --adapt-check picks/ --diameter 120   # kept if it picks better
  cryoscore denoise mic.mrc -o out/ --model score.pt --float16 --tile 512
  cryoscore denoise micrographs/ -o denoised/ --workers 4               # 4 processes on this machine
  cryoscore denoise micrographs/ -o denoised/ --scheduler tcp://head:8786   # an existing Dask cluster
"""


def add_args(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "denoise",
        help="denoise micrographs with a trained model or a low-pass filter",
        description="Denoise MRC micrographs: one-step Tweedie estimate of a model from cryoscore train (or of "
        "the default model shipped with cryoscore), tiled so memory stays bounded, a stochastic sampler with a "
        "per-pixel standard deviation map, or the low-pass baseline. Writes one MRC per input, with the "
        "input's file name and pixel size, into OUTDIR (and NAME_std.mrc with --uncertainty), atomically. "
        "A rerun skips micrographs whose outputs are complete; a micrograph that cannot be read is reported "
        "and the others go on (exit code 2 at the end). MRC may be files, directories or quoted glob patterns.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="MRC", help="micrographs to denoise")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR", help="folder for the results")
    parser.add_argument("--model", type=Path, metavar="MODEL",
                        help="model file from cryoscore train (.pt); default: the model shipped with cryoscore")
    parser.add_argument("--lowpass", type=positive_float, metavar="A", help="low-pass at this resolution instead")
    parser.add_argument("--lowpass-kind", choices=("gaussian", "butterworth"), default="gaussian",
                        help="low-pass filter shape (default: gaussian)")
    parser.add_argument("--flatten", type=_flatten_value, nargs="?", const=FLATTEN_LOWPASS_A, metavar="A|auto",
                        help="write each micrograph minus the model's estimate of its background (ice, carbon, "
                        "gradients), low-passed at A Angstrom (default: %(const)s): the particles on a flat "
                        "background, for picking. For faint, sparse particles, where the model's own output shows "
                        "the background and not the particles; where it shows them, use it instead. 'auto' "
                        "chooses for the whole run, measured on up to 5 of the micrographs: flattened if the model's "
                        "background estimate beyond two particle diameters (--diameter; gradients, carbon, "
                        "contamination) is strong against what its output holds at the particles' scale, the "
                        "model's output if not (benchmarks/RESULTS.md, section 6)")
    parser.add_argument("--diameter", type=positive_float, metavar="A",
                        help="particle diameter in Angstrom, for --flatten auto and --adapt-check")
    parser.add_argument("--halves", type=int, choices=(1, 2), default=2,
                        help="how many frame halves an input holds: 2 for full sums, 1 for even/odd sums (default: 2)")
    parser.add_argument("--pixel-size", type=positive_float, metavar="A", help="A per pixel, overriding the headers")
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE_PX, metavar="PX",
                        help=f"tile edge for inference; smaller tiles use less memory (default: {DEFAULT_TILE_PX})")
    parser.add_argument("--sampler", choices=("tweedie", "sde"), default="tweedie",
                        help="tweedie: one deterministic step; sde: reverse-diffusion samples (default: tweedie)")
    parser.add_argument("--steps", type=int, default=10, metavar="N", help="sde: steps per sample (default: 10)")
    parser.add_argument("--uncertainty", type=int, metavar="K",
                        help="draw K sde samples: write their mean and their per-pixel std (NAME_std.mrc)")
    parser.add_argument("--seed", type=non_negative_int, default=0, metavar="S", help="sde: random seed (default: 0)")
    parser.add_argument("--float16", action="store_true", help="write float16 MRC (mode 12)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"),
                        help="forward-pass arithmetic; bf16/fp16 are mixed precision (default: bf16 on a GPU, fp32 "
                        "on the CPU)")
    parser.add_argument("--tile-batch", type=int, default=1, metavar="N",
                        help="tiles per forward pass; more fill a GPU better (default: 1)")
    parser.add_argument("--bin", type=int, default=1, metavar="B",
                        help="block-average B x B pixels before denoising: B^2 times faster, B times the pixel size "
                        "(default: 1, no binning)")
    parser.add_argument("--adapt", type=int, nargs="?", const=300, metavar="STEPS",
                        help="first fine-tune the model on these micrographs (pairs from single images, no frames "
                        "needed) for STEPS steps (default: 300, a few minutes on 2 cores), on all but the last fifth of each "
                        "micrograph's rows; keep the result only if it lowers the Noise2Noise loss on that held-out "
                        "fifth; save it as OUTDIR/adapted.pt and denoise with it; a rerun reuses OUTDIR/adapted.pt. "
                        "Experimental: it lowered picking AP in cryoscore's benchmarks")
    parser.add_argument("--adapt-check", type=Path, metavar="DIR",
                        help="with --adapt: particle coordinates (NAME.star, .box or .csv, pixels) for at least 2 of "
                        "the inputs; keep the adapted model only if a learned picker, trained k-fold on those "
                        "micrographs, picks better on its outputs than on the initial model's (needs --diameter; "
                        "two picker trainings per annotated micrograph)")
    add_parallel_options(parser, "denoise")
    parser.add_argument("--device", choices=DEVICES,
                        help="where the model runs, and --adapt trains (default: cuda if available)")
    parser.add_argument("--overwrite", action="store_true",
                        help="recompute outputs that already exist (default: skip micrographs whose outputs are "
                        "complete, so an interrupted run can be restarted)")
    parser.set_defaults(handler=main)


def _flatten_value(text: str) -> float | str:
    """``--flatten``'s value: a low-pass resolution in Angstrom, or ``auto``."""
    return text if text == "auto" else positive_float(text)


def _flatten_settings(args: argparse.Namespace) -> dict[str, float | None]:
    """The :class:`~cryoscore.infer.batch.DenoiseSettings` fields of ``--flatten`` and ``--diameter``."""
    if args.flatten != "auto":
        if args.diameter is not None and args.adapt_check is None:
            raise InputError("--diameter", "is used only by --flatten auto and --adapt-check")
        return {"flatten_lowpass_a": args.flatten}
    if args.diameter is None:
        raise InputError("--flatten auto", "needs the particle diameter: add --diameter A (Angstrom)")
    return {"flatten_lowpass_a": FLATTEN_LOWPASS_A, "auto_flatten_diameter_a": args.diameter}


def _sampler_config(args: argparse.Namespace):
    """None for the one-step estimate, else the sampler the options ask for."""
    from cryoscore.infer.sampler import SamplerConfig

    if args.sampler == "tweedie" and args.uncertainty is None:
        return None
    try:
        return SamplerConfig(name="sde", steps=args.steps, samples=args.uncertainty or 1, seed=args.seed)
    except ValueError as error:
        raise InputError("options", str(error)) from None


def _adapted_model(args: argparse.Namespace) -> str:
    """Fine-tune --model (or the default model) on the inputs into OUTDIR/adapted.pt, unless it is there."""
    from cryoscore.infer.adapt import AdaptSettings, adapt_to_images, read_micrographs
    from cryoscore.infer.denoise import load_denoiser, resolve_device
    from cryoscore.jobs import expand_inputs

    if args.lowpass is not None:
        raise InputError("--adapt", "adapts a model; it does not go with --lowpass")
    if args.adapt_check is not None and args.diameter is None:
        raise InputError("--adapt-check", "needs the particle diameter: add --diameter A (Angstrom)")
    path = check_output_directory(args.output) / "adapted.pt"
    if path.is_file() and not args.overwrite:
        print(f"using the adapted model {path} of an earlier run (--overwrite adapts again)", file=sys.stderr)
        return str(path)
    try:
        settings = AdaptSettings(steps=args.adapt, seed=args.seed)
    except ValueError as error:
        raise InputError("--adapt", str(error)) from None
    denoiser, micrographs = load_denoiser(args.model), read_micrographs(expand_inputs(args.inputs), args.pixel_size)
    check = None if args.adapt_check is None else _picking_check(args.adapt_check, micrographs, args.diameter)
    args.output.mkdir(parents=True, exist_ok=True)
    result = adapt_to_images(denoiser, micrographs, path, settings, device=resolve_device(args.device))
    verdict = ("kept" if result.kept else f"not kept, {path} holds {denoiser.source} unchanged")
    print(f"adapted {denoiser.source} to {len(micrographs)} micrographs in {result.seconds:.0f} s; "
          f"held-out Noise2Noise loss {result.initial_loss:.4f} -> {result.adapted_loss:.4f} ({verdict}): {path}",
          file=sys.stderr)
    if check is not None and result.kept:
        from cryoscore.bench.picking_check import check_adaptation_by_picking

        picking = check_adaptation_by_picking(denoiser, path, micrographs, check)
        assert picking is not None  # the loss check kept the adapted model
        verdict = "kept" if picking.kept else f"not kept, {path} now holds {denoiser.source} unchanged"
        print(f"--adapt-check: learned-picker AP on {len(picking.micrographs)} annotated micrographs "
              f"{picking.initial_ap:.3f} -> {picking.adapted_ap:.3f} ({verdict}; {picking.seconds:.0f} s)",
              file=sys.stderr)
    return str(path)


def _picking_check(directory: Path, micrographs, diameter_a: float):
    """The :class:`~cryoscore.bench.picking_check.PickingCheck` of ``--adapt-check DIR`` for ``micrographs``."""
    from cryoscore.bench.picking_check import PickingCheck
    from cryoscore.io.coords import coordinate_file, read_coordinates

    if not directory.is_dir():
        raise InputError(directory, "coordinate directory not found")
    files = {micrograph.name: coordinate_file(directory, micrograph.name) for micrograph in micrographs}
    coordinates = {name: read_coordinates(file) for name, file in files.items() if file is not None}
    if len(coordinates) < 2:
        raise InputError(directory, f"needs coordinates (NAME.star, .box or .csv) for at least 2 of the "
                         f"micrographs being adapted to, found {len(coordinates)}")
    return PickingCheck(coordinates, diameter_a)


def main(args: argparse.Namespace) -> int:
    from cryoscore.infer.batch import DENOISE_RECORD_NAME, DenoiseSettings, denoise_micrographs
    from cryoscore.jobs import summary_line

    check_parallel_options(args)
    model = None if args.model is None else str(args.model)
    if args.adapt_check is not None and args.adapt is None:
        raise InputError("--adapt-check", "judges an adaptation: add --adapt")
    if args.adapt is not None:
        model = _adapted_model(args)
    settings = DenoiseSettings(
        model=model, lowpass_a=args.lowpass, lowpass_kind=args.lowpass_kind,
        halves=args.halves, pixel_size_a=args.pixel_size, tile_px=args.tile, sampler=_sampler_config(args),
        write_std=args.uncertainty is not None, float16=args.float16, device=args.device, overwrite=args.overwrite,
        precision=args.precision, tile_batch=args.tile_batch, bin_factor=args.bin, **_flatten_settings(args),
    )
    records = denoise_micrographs(args.inputs, args.output, settings, workers=args.workers,
                                  scheduler=args.scheduler, torch_threads=args.threads,
                                  report=failure_reporter("denoise"),
                                  command_line=args.command_line)
    if args.flatten == "auto":
        _print_flatten_choice(args.output / DENOISE_RECORD_NAME)
    print(f"{summary_line(records)}; outputs in {args.output}")
    return batch_exit_code(records)


def _print_flatten_choice(record_path: Path) -> None:
    """Say what ``--flatten auto`` chose, from the run record (``flatten_auto``)."""
    choice = json.loads(record_path.read_text())["flatten_auto"]
    strengths = list(choice["background_strengths"].values())
    measured = (f"median background strength {statistics.median(strengths):.2f} (large-scale background over the "
                f"particles' scale) over {len(strengths)} micrograph{'s' * (len(strengths) != 1)}" if strengths
                else "no micrograph readable")
    verdict = ("a strong background (gradient, carbon, contamination): wrote flattened micrographs"
               if choice["flattened"] else "a weak background: wrote the model's output")
    print(f"--flatten auto: {measured}; {verdict}", file=sys.stderr)
