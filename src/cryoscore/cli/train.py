"""``cryoscore train``: its options (:func:`add_args`) and what it runs (:func:`main`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cryoscore.cli.common import input_error, non_negative_int, positive_float
from cryoscore.errors import InputError
from cryoscore.io.atomic import check_output_file
from cryoscore.settings import DEVICES, METHODS, GuidanceConfig, SettingError, TrainConfig, UNetConfig

EXAMPLES = """
examples:
  cryoscore train sim/ --method score -o score.pt                 # a dataset directory (even/ and odd/)
  cryoscore train --even even/ --odd odd/ --method n2n -o n2n.pt --steps 4000
  cryoscore train --movies movies/*.tif --pixel-size 0.83 --align --method score -o model.pt   # aligned first
  cryoscore train --micrographs mics/ --method score -o model.pt  # no frames: recorrupted pairs
  cryoscore train sim/ --method score -o score.pt --steps 4000 --resume   # continue a run
  cryoscore train sim/ --method guided --reference ref.mrc -o guided.pt   # target-guided
  cryoscore train sim/ --method guided --reference 7a4m.pdb --guidance-strength 2 --reference-resolution 30 -o guided.pt
"""

FLAGS = {"method": "--method", "guidance": "--reference", "steps": "--steps", "batch_size": "--batch-size",
         "crop_px": "--crop", "learning_rate": "--learning-rate", "seed": "--seed",
         "min_pixel_size_a": "--min-pixel-size", "strength": "--guidance-strength", "resolution_a": "--reference-resolution",
         "defocus_range_um": "--guide-defocus"}
"""The flag that sets each field of TrainConfig and GuidanceConfig."""


def add_args(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a denoiser on Noise2Noise pairs",
        description="Train a denoiser on independent noisy halves of micrographs (even/odd frame sums), "
        "or on pairs made from single micrographs. Methods: n2n (plain Noise2Noise, the Topaz recipe), "
        "score (Noise2Noise denoising score matching over a range of noise levels), guided (score plus "
        "synthetic examples made from a reference map or atomic model in the data's own noise and background, "
        "which teach the particle and that the low-frequency background is not signal).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("datasets", nargs="*", type=Path, metavar="DATASET_DIR",
                        help="dataset directories with even/ and odd/ (as written by cryoscore simulate); "
                        "several are pooled")
    parser.add_argument("--even", type=Path, metavar="DIR", help="folder of even-frame sums (with --odd)")
    parser.add_argument("--odd", type=Path, metavar="DIR", help="folder of odd-frame sums, same file names")
    parser.add_argument("--movies", type=Path, nargs="+", metavar="MOVIE", help="movies (MRC or TIFF) split by frame parity")
    parser.add_argument("--align", action="store_true",
                        help="with --movies: motion-correct each movie first, as cryoscore align does (each movie is "
                             "held in memory); without it the frames are summed as recorded")
    parser.add_argument("--micrographs", type=Path, metavar="DIR",
                        help="single micrographs without frames: recorrupted pairs (the image plus and minus noise of its own "
                        "measured level; its own grid)")
    parser.add_argument("--method", required=True, choices=METHODS, help="training objective")
    parser.add_argument("--reference", metavar="MAP_OR_MODEL",
                        help="guided: reference density, an MRC map, a PDB/mmCIF model or a built-in specimen name")
    parser.add_argument("--guidance-strength", "--lambda", dest="strength", type=float, metavar="L",
                        help="guided: weight of the guidance loss (lambda; bench's guidance_strength); 0 is the score "
                        f"method (default: {GuidanceConfig.strength:g})")
    parser.add_argument("--reference-resolution", type=positive_float, metavar="A",
                        help=f"guided: the reference guides wavelengths longer than this (default: {GuidanceConfig.resolution_a:g})")
    parser.add_argument("--guide-defocus", type=positive_float, nargs=2, metavar=("MIN_UM", "MAX_UM"),
                        help="guided: defocus range of the synthetic images, micrometres; use your data's "
                        "(default: %g %g)" % GuidanceConfig.defocus_range_um)
    parser.add_argument("--guide-ctf", type=Path, metavar="STAR",
                        help="guided: take that range (lowest defocus V to highest defocus U) and the optics "
                        "(voltage, Cs, amplitude contrast) from a micrograph STAR file instead, e.g. from cryoscore ctf")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="MODEL", help="model file to write (.pt)")
    parser.add_argument("--steps", type=int, default=TrainConfig.steps, metavar="N", help="optimiser steps (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=TrainConfig.batch_size, metavar="N",
                        help="crops per step (default: %(default)s)")
    parser.add_argument("--crop", type=int, default=TrainConfig.crop_px, metavar="PX",
                        help=f"crop edge, a multiple of the network's size multiple ({UNetConfig().required_multiple} for a new "
                        "network) (default: %(default)s)")
    parser.add_argument("--learning-rate", type=positive_float, default=TrainConfig.learning_rate, metavar="LR",
                        help="Adam step size (default: %(default)g)")
    parser.add_argument("--pixel-size", type=positive_float, metavar="A", help="A per pixel, overriding the files' headers")
    parser.add_argument("--seed", type=non_negative_int, default=TrainConfig.seed, metavar="S",
                        help="random seed (default: %(default)s)")
    parser.add_argument("--resume", action="store_true", help="continue from MODEL's saved training state")
    parser.add_argument("--device", choices=DEVICES,
                        help="where the network trains (default: cuda if available); the crops and noise drawn are the same")
    parser.add_argument("--init", metavar="MODEL|default",
                        help="fine-tune this model (a .pt file, or 'default' for the shipped one) on the data "
                        "instead of training from scratch; its network and pixel-size floor are kept")
    parser.add_argument("--min-pixel-size", type=positive_float, metavar="A",
                        help="Fourier-crop micrographs finer than A A/px to A, in training and later in denoising "
                        "(the shipped model's floor is 3 A); lets micrographs of different pixel sizes train one model "
                        "(default: none, one pixel size)")
    parser.set_defaults(handler=main)


def _training_pairs(args: argparse.Namespace) -> list:
    from cryoscore.pairs.halves import (
        pairs_from_dataset,
        pairs_from_directories,
        pairs_from_movies,
    )
    from cryoscore.pairs.single import pairs_from_single_micrographs

    sources = {
        "DATASET_DIR": bool(args.datasets),
        "--even/--odd": args.even is not None or args.odd is not None,
        "--movies": args.movies is not None,
        "--micrographs": args.micrographs is not None,
    }
    chosen = [name for name, given in sources.items() if given]
    if len(chosen) != 1:
        raise InputError("options", "give exactly one of DATASET_DIR, --even/--odd, --movies or --micrographs")
    if args.align and args.movies is None:
        raise InputError("--align", "applies to --movies only")
    if args.datasets:
        return [pair for root in args.datasets for pair in pairs_from_dataset(root, pixel_size_a=args.pixel_size)]
    if chosen == ["--even/--odd"]:
        if args.even is None or args.odd is None:
            raise InputError("options", "--even and --odd go together")
        return pairs_from_directories(args.even, args.odd, pixel_size_a=args.pixel_size)
    if args.movies is not None:
        from cryoscore.preprocess.align import AlignSettings

        return pairs_from_movies(args.movies, pixel_size_a=args.pixel_size, align=AlignSettings() if args.align else None)
    micrographs = sorted(args.micrographs.glob("*.mrc"))
    if not micrographs:
        raise InputError(args.micrographs, "no .mrc files")
    return pairs_from_single_micrographs(micrographs, pixel_size_a=args.pixel_size, seed=args.seed)


def _guidance_config(args: argparse.Namespace):
    if args.method != "guided":
        if args.reference is not None:
            raise InputError("--reference", "only --method guided takes a reference")
        return None
    if args.reference is None:
        raise InputError("--reference", "--method guided needs --reference MAP_OR_MODEL")
    if Path(args.reference).suffix and not Path(args.reference).is_file():
        raise InputError(args.reference, "reference file not found")
    if args.guide_defocus and args.guide_ctf:
        raise InputError("--guide-ctf", "give --guide-defocus or --guide-ctf, not both")
    given = {"strength": args.strength, "resolution_a": args.reference_resolution,
             "defocus_range_um": tuple(args.guide_defocus) if args.guide_defocus else None}
    if args.guide_ctf is not None:
        from cryoscore.io.ctf_star import read_ctf_star

        ctfs = list(read_ctf_star(args.guide_ctf).values())
        given.update(defocus_range_um=(min(ctf.defocus_v_um for ctf in ctfs), max(ctf.defocus_u_um for ctf in ctfs)),
                     voltage_kv=ctfs[0].voltage_kv, cs_mm=ctfs[0].cs_mm, amplitude_contrast=ctfs[0].amplitude_contrast)
    return GuidanceConfig(reference=args.reference, **{name: value for name, value in given.items() if value is not None})


def main(args: argparse.Namespace) -> int:
    from cryoscore.infer.denoise import resolve_device
    from cryoscore.train import train_model

    if args.output.suffix != ".pt":
        raise InputError(args.output, "model file name must end in .pt")
    check_output_file(args.output)
    initial = None
    architecture = {"min_pixel_size_a": args.min_pixel_size}
    if args.init is not None:
        from cryoscore.infer.denoise import load_denoiser

        initial = load_denoiser(None if args.init == "default" else args.init)
        if args.min_pixel_size is not None:
            raise InputError("--min-pixel-size", "a fine-tuned model keeps the floor of its --init model")
        architecture = {"unet": initial.model.net.config, "min_pixel_size_a": initial.metadata.get("min_pixel_size_a")}
    try:
        config = TrainConfig(method=args.method, steps=args.steps, batch_size=args.batch_size, crop_px=args.crop,
                             learning_rate=args.learning_rate, seed=args.seed, guidance=_guidance_config(args),
                             **architecture)
    except SettingError as error:
        raise input_error(error, FLAGS) from None
    device = resolve_device(args.device)
    pairs = _training_pairs(args)
    result = train_model(pairs, config, args.output, resume=args.resume, device=device,
                         initial=None if initial is None else initial.model,
                         extra={"command_line": args.command_line,
                                "single_image_pairs": args.micrographs is not None,
                                "initial_model": None if initial is None else initial.source})
    print(f"trained {args.method} on {len(pairs)} micrographs in {result.seconds:.0f} s "
          f"(final loss {sum(result.losses[-20:]) / len(result.losses[-20:]):.4f}); model: {result.model_path}")
    return 0
