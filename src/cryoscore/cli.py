"""The ``cryoscore`` command line: one subcommand per stage, argparse only here.

Every subcommand builds the library's frozen configuration objects from its arguments
and calls the library; user errors (``InputError``, invalid options) end in one line on
stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
from pathlib import Path
from typing import Callable, Sequence

from cryoscore import __version__
from cryoscore.errors import InputError
from cryoscore.infer import DEFAULT_TILE_PX
from cryoscore.io.atomic import check_output_directory, check_output_file

logger = logging.getLogger("cryoscore")

SIMULATE_EXAMPLES = """
examples:
  cryoscore simulate -o sim/                                  # 4 apoferritin micrographs, 1024 px
  cryoscore simulate -o sim/ --specimen elongated --dose 20 --micrographs 10 --seed 3
  cryoscore simulate -o sim/ --specimen 3j5p.pdb --pixel-size 1.2 --frames 50 --write-frames
  cryoscore simulate -o sim/ --carbon-edge --contamination 3 --background-strength 2
"""

ALIGN_EXAMPLES = """
examples:
  cryoscore align movies/*.tif -o aligned/ --pixel-size 0.83 --gain gain.mrc   # TIFF needs --pixel-size
  cryoscore align movies/*.mrcs -o aligned/ --patch 1024                        # larger patches: near-global motion
  cryoscore train aligned/ --method score -o model.pt                           # then train on its even/odd sums
"""

CTF_EXAMPLES = """
examples:
  cryoscore ctf micrographs/*.mrc -o ctf.star                           # 300 kV, Cs 2.7 mm, amplitude contrast 0.07
  cryoscore ctf micrographs/ -o ctf.star --voltage 200 --cs 2.0 --defocus-range 0.5 4
  cryoscore ctf micrographs/ -o ctf.star --pixel-size 1.06 --resolution-range 25 4
"""

TRAIN_EXAMPLES = """
examples:
  cryoscore train sim/ --method score -o score.pt                 # a dataset directory (even/ and odd/)
  cryoscore train --even even/ --odd odd/ --method n2n -o n2n.pt --steps 4000
  cryoscore train --movies movies/*.tif --pixel-size 0.83 --align --method score -o model.pt   # aligned first
  cryoscore train --micrographs mics/ --method score -o model.pt  # no frames: recorrupted pairs
  cryoscore train sim/ --method score -o score.pt --steps 4000 --resume   # continue a run
  cryoscore train sim/ --method guided --reference ref.mrc -o guided.pt   # target-guided
  cryoscore train sim/ --method guided --reference 7a4m.pdb --lambda 2 --reference-resolution 30 -o guided.pt
"""

DENOISE_EXAMPLES = """
examples:
  cryoscore denoise micrographs/*.mrc -o denoised/                      # the shipped default model
  cryoscore denoise micrographs/*.mrc -o denoised/ --model score.pt     # your own model, full frame sums
  cryoscore denoise mic.mrc -o out/ --uncertainty 8                     # + out/mic_std.mrc, 8 samples
  cryoscore denoise even/*.mrc -o denoised_even/ --model score.pt --halves 1
  cryoscore denoise micrographs/*.mrc -o lowpassed/ --lowpass 20        # Gaussian low-pass at 20 A
  cryoscore denoise mic.mrc -o out/ --model score.pt --float16 --tile 512
  cryoscore denoise micrographs/ -o denoised/ --workers 4               # 4 processes on this machine
  cryoscore denoise micrographs/ -o denoised/ --scheduler tcp://head:8786   # an existing Dask cluster
"""

PICK_EXAMPLES = """
examples:
  cryoscore pick denoised/*.mrc -o picks/ --diameter 120                  # blob picker, reference-free
  cryoscore pick denoised/*.mrc -o picks/ --diameter 120 --threshold 3    # keep picks scoring >= 3
  cryoscore pick denoised/*.mrc -o picks/ --diameter 120 --picker template --reference ref.mrc
  cryoscore pick denoised/ -o picks/ --diameter 120 --workers 2           # a directory, 2 processes
  cryoscore pick test/*.mrc -o picks/ --diameter 120 --method learned \
      --train-micrographs train/*.mrc --train-coordinates train_coords/ --save-model picker.pt
  cryoscore pick more/*.mrc -o picks2/ --method learned --model picker.pt     # reuse a trained picker
"""

SCORE_EXAMPLES = """
examples:
  cryoscore score picks/ sim/coordinates/                     # scale from picks/pick.json or sim/manifest.json
  cryoscore score picks/ truth/ --diameter 120 --pixel-size 1.85 --json score.json
"""

RECONSTRUCT_EXAMPLES = """
examples:
  cryoscore reconstruct sim/ -o recon-truth/                        # the true coordinates
  cryoscore reconstruct sim/ --picks picks/ --threshold 3 -o recon/ # picks from cryoscore pick
  cryoscore reconstruct sim/ --ctf ctf.star -o recon-ctf/           # CTFs estimated by cryoscore ctf
  cryoscore reconstruct sim/ --picks picks/ --threshold 3 --box 96 --max-particles 2000 -o recon/
"""

CLASSIFY2D_EXAMPLES = """
examples:
  cryoscore classify2d micrographs/*.mrc --picks picks/ --diameter 120 -o class2d/
  cryoscore classify2d micrographs/ --picks picks/ --diameter 120 --ctf ctf.star --classes 20 -o class2d/
  cryoscore classify2d micrographs/ --picks picks/ --threshold 3 --diameter 120 --max-particles 2000 -o class2d/
  cryoscore classify2d micrographs/ --picks picks/ --diameter 120 --template shell:120:80 -o class2d/
"""

BENCH_EXAMPLES = """
examples:
  cryoscore bench --quick -o bench-quick/          # a smoke run, about 30 s on 2 cores
  cryoscore bench -o bench/                        # the default simulated benchmark
  cryoscore bench benchmarks/real.toml -o bench-real/
"""

DEMO_EXAMPLES = """
examples:
  cryoscore demo                    # writes ./cryoscore-demo/
  cryoscore demo -o /tmp/demo --seed 7
"""


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def _require_empty_output(path: Path, overwrite: bool) -> None:
    """InputError unless ``path`` can be created or is an empty directory (any directory with ``overwrite``)."""
    check_output_directory(path)
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise InputError(path, "output directory is not empty; choose another or pass --overwrite")


def _add_simulate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="simulate micrographs with exact ground truth",
        description="Simulate cryo-EM micrographs (even/odd halves, clean and background ground truth, "
        "coordinates with poses and CTF) from a built-in specimen, a map or an atomic model.",
        epilog=SIMULATE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="DIR", help="dataset directory to write")
    parser.add_argument(
        "--specimen", default="apoferritin", metavar="NAME|MAP.mrc|MODEL.pdb",
        help="built-in specimen (apoferritin, elongated, small), random-compact:SEED, random-elongated:SEED, "
        "shell:OUTER_A:INNER_A (a hollow sphere), an MRC map or a PDB/mmCIF model "
        "(default: %(default)s)",
    )
    parser.add_argument("--micrographs", type=int, default=4, metavar="N", help="number of micrographs (default: 4)")
    parser.add_argument("--size", type=int, default=1024, metavar="PX", help="micrograph edge in pixels (default: 1024)")
    parser.add_argument("--pixel-size", type=_positive_float, default=1.5, metavar="A", help="A per pixel (default: 1.5)")
    parser.add_argument("--particles", type=_non_negative_int, metavar="N",
                        help="particles per micrograph (default: 40 per 1024 x 1024 px, scaled with the area)")
    parser.add_argument("--dose", type=_positive_float, default=40.0, metavar="E_PER_A2", help="total dose in e/A^2 (default: 40)")
    parser.add_argument("--frames", type=int, default=40, metavar="N", help="movie frames (default: 40)")
    parser.add_argument("--seed", type=_non_negative_int, default=0, metavar="S", help="random seed (default: 0)")
    parser.add_argument("--defocus", type=_positive_float, nargs=2, default=(1.0, 2.5), metavar=("MIN_UM", "MAX_UM"),
                        help="defocus range in micrometres, underfocus positive (default: 1.0 2.5)")
    parser.add_argument("--voltage", type=_positive_float, default=300.0, metavar="KV", help="(default: 300)")
    parser.add_argument("--cs", type=float, default=2.7, metavar="MM", help="spherical aberration (default: 2.7)")
    parser.add_argument("--bfactor", type=float, default=60.0, metavar="A2", help="B-factor envelope (default: 60)")
    parser.add_argument("--background-strength", type=float, default=1.0, metavar="X",
                        help="scales the ice-thickness variation and gradient; 0 = flat (default: 1)")
    parser.add_argument("--carbon-edge", action="store_true", help="add the edge of a carbon film")
    parser.add_argument("--vitreous-ice", type=float, default=0.0, metavar="A",
                        help="simulate the phase contrast of this thickness of vitreous ice itself (Thon rings "
                             "between particles, as in real micrographs); 0 = particles only (default: 0)")
    parser.add_argument("--detector", choices=("ideal", "counting"), default="ideal",
                        help="ideal: every electron counted once, no MTF; counting: a counting camera's MTF (pixel "
                             "aperture, 0.2 px event localisation) and 10%% of electrons counted again in a neighbour "
                             "(noise correlated between neighbouring pixels) (default: ideal)")
    parser.add_argument("--contamination", type=_non_negative_int, default=0, metavar="N", help="contamination blobs per micrograph")
    parser.add_argument("--cluster-fraction", type=float, default=0.0, metavar="F", help="fraction of particles placed touching another")
    parser.add_argument("--edge-particles", action="store_true", help="let particles be cut by the micrograph edge")
    parser.add_argument("--drift", type=float, default=0.0, metavar="A", help="total stage drift per movie in A (default: 0)")
    parser.add_argument("--write-frames", action="store_true", help="also write the movie frames (frames/NAME.mrcs)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output directory")
    parser.set_defaults(handler=_run_simulate)


def _run_simulate(args: argparse.Namespace) -> int:
    from cryoscore.simulate.background import BackgroundParams
    from cryoscore.simulate.dataset import SimulationConfig, default_particle_count, write_dataset
    from cryoscore.simulate.detector import PRESETS

    _require_empty_output(args.output, args.overwrite)
    particles = default_particle_count(args.size) if args.particles is None else args.particles
    try:
        config = SimulationConfig(
            specimen=args.specimen,
            n_micrographs=args.micrographs,
            size_px=args.size,
            pixel_size_a=args.pixel_size,
            particles_per_micrograph=particles,
            dose_e_per_a2=args.dose,
            n_frames=args.frames,
            defocus_range_um=tuple(args.defocus),
            voltage_kv=args.voltage,
            cs_mm=args.cs,
            bfactor_a2=args.bfactor,
            background=BackgroundParams(
                strength=args.background_strength,
                carbon_edge=args.carbon_edge,
                n_contamination=args.contamination,
                vitreous_ice_a=args.vitreous_ice,
            ),
            detector=PRESETS[args.detector],
            edge_particles=args.edge_particles,
            cluster_fraction=args.cluster_fraction,
            drift_a=args.drift,
            write_frames=args.write_frames,
            seed=args.seed,
        )
    except ValueError as error:
        raise InputError("options", str(error)) from None
    manifest = write_dataset(config, args.output, command_line=["cryoscore", *sys.argv[1:]])
    print(f"wrote {config.n_micrographs} micrographs; manifest: {manifest}")
    return 0


def _add_align(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "align",
        help="motion-correct movies into full, even and odd sums (the layout train reads)",
        description="Align each movie's frames (torch-motion-correction: patch cross-correlation against the other "
                    "frames, a smooth deformation field, frames resampled along it) and write OUTDIR/micrographs/, "
                    "OUTDIR/even/ and OUTDIR/odd/ NAME.mrc (full sum and the sums of even- and odd-indexed frames) "
                    "and OUTDIR/motion/NAME.star (per-frame shifts, RELION style), plus OUTDIR/align.json.",
        epilog=ALIGN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="MOVIE", help="MRC/MRCS or TIFF movies")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR")
    parser.add_argument("--pixel-size", type=_positive_float, metavar="A", help="A/px (default: the MRC header; "
                                                                                 "required for TIFF)")
    parser.add_argument("--gain", type=Path, metavar="MRC", help="gain reference that multiplies every frame")
    parser.add_argument("--patch", type=int, default=512, metavar="PX",
                        help="side of the patches whose motion is measured (default: 512)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output directory")
    parser.set_defaults(handler=_run_align)


def _run_align(args: argparse.Namespace) -> int:
    import dataclasses

    from cryoscore.io.layout import write_json
    from cryoscore.preprocess.align import AlignSettings, align_movies

    _require_empty_output(args.output, args.overwrite)
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


def _add_ctf(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ctf",
        help="estimate each micrograph's CTF (defocus, astigmatism) into a RELION STAR file",
        description="Fit the CTF to each micrograph's Thon rings (the amplitude spectrum of overlapping tiles; a 1D "
                    "defocus search on its rotational average, then a 2D fit with astigmatism, CTFFIND-style) and "
                    "write RELION micrograph STAR (data_optics and data_micrographs: rlnDefocusU/V in A, "
                    "rlnDefocusAngle, rlnCtfMaxResolution, rlnCtfFigureOfMerit).",
        epilog=CTF_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="MICROGRAPH",
                        help="MRC micrographs, directories of them or quoted glob patterns")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="STAR", help="output STAR file")
    parser.add_argument("--pixel-size", type=_positive_float, metavar="A", help="A/px (default: each MRC header)")
    parser.add_argument("--voltage", type=_positive_float, default=300.0, metavar="KV", help="(default: 300)")
    parser.add_argument("--cs", type=float, default=2.7, metavar="MM", help="spherical aberration (default: 2.7)")
    parser.add_argument("--amplitude-contrast", type=float, default=0.07, metavar="F", help="(default: 0.07)")
    parser.add_argument("--defocus-range", type=_positive_float, nargs=2, default=(0.3, 5.0),
                        metavar=("MIN_UM", "MAX_UM"), help="mean defocus searched, um, underfocus positive "
                                                           "(default: 0.3 5)")
    parser.add_argument("--resolution-range", type=_positive_float, nargs=2, default=(30.0, 5.0),
                        metavar=("LOW_A", "HIGH_A"), help="resolutions fitted, A (default: 30 5)")
    parser.add_argument("--max-astigmatism", type=float, default=0.5, metavar="UM",
                        help="largest (U - V) / 2 accepted, um (default: 0.5)")
    parser.add_argument("--tile", type=int, default=512, metavar="PX", help="spectrum tile size, even (default: 512)")
    parser.set_defaults(handler=_run_ctf)


def _run_ctf(args: argparse.Namespace) -> int:
    from cryoscore.infer.batch import expand_inputs
    from cryoscore.io.ctf_star import write_ctf_star
    from cryoscore.preprocess.ctf import RELIABLE_FIGURE_OF_MERIT, CtfSearch, estimate_ctf_files

    output = check_output_file(args.output)
    try:
        search = CtfSearch(voltage_kv=args.voltage, cs_mm=args.cs, amplitude_contrast=args.amplitude_contrast,
                           defocus_range_um=tuple(args.defocus_range), resolution_range_a=tuple(args.resolution_range),
                           max_astigmatism_um=args.max_astigmatism, tile_px=args.tile)
    except ValueError as error:
        raise InputError("--defocus-range/--resolution-range/--tile", str(error)) from None

    def report(result) -> None:
        params = result.params
        print(f"{result.name}: defocus U {params.defocus_u_um * 1e4:.0f} A, V {params.defocus_v_um * 1e4:.0f} A, "
              f"angle {params.astigmatism_angle_deg:.1f} deg; Thon rings fitted to {result.fit_resolution_a:.1f} A "
              f"(figure of merit {result.figure_of_merit:.3f})"
              + ("" if result.figure_of_merit >= RELIABLE_FIGURE_OF_MERIT else
                 "; no Thon rings found: this defocus is unreliable"), flush=True)

    results, pixel_size_a = estimate_ctf_files(expand_inputs(args.inputs), search, pixel_size_a=args.pixel_size,
                                               report=report)
    write_ctf_star(output, results, pixel_size_a)
    print(f"{len(results)} micrographs; CTFs in {output}")
    return 0


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a denoiser on Noise2Noise pairs",
        description="Train a denoiser on independent noisy halves of micrographs (even/odd frame sums), "
        "or on pairs made from single micrographs. Methods: n2n (plain Noise2Noise, the Topaz recipe), "
        "score (Noise2Noise denoising score matching over a range of noise levels), guided (score plus "
        "synthetic examples made from a reference map or atomic model in the data's own noise and background, "
        "which teach the particle and that the low-frequency background is not signal).",
        epilog=TRAIN_EXAMPLES,
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
    parser.add_argument("--method", required=True, choices=("n2n", "score", "guided"), help="training objective")
    parser.add_argument("--reference", metavar="MAP_OR_MODEL",
                        help="guided: reference density, an MRC map, a PDB/mmCIF model or a built-in specimen name")
    parser.add_argument("--lambda", dest="strength", type=float, metavar="L",
                        help="guided: weight of the guidance loss; 0 is the score method (default: 3)")
    parser.add_argument("--reference-resolution", type=_positive_float, metavar="A",
                        help="guided: the reference guides wavelengths longer than this (default: 25)")
    parser.add_argument("--guide-defocus", type=_positive_float, nargs=2, metavar=("MIN_UM", "MAX_UM"),
                        help="guided: defocus range of the synthetic images, micrometres; use your data's "
                        "(default: 1.0 2.5)")
    parser.add_argument("--guide-ctf", type=Path, metavar="STAR",
                        help="guided: take that range (lowest defocus V to highest defocus U) and the optics "
                        "(voltage, Cs, amplitude contrast) from a micrograph STAR file instead, e.g. from cryoscore ctf")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="MODEL", help="model file to write (.pt)")
    parser.add_argument("--steps", type=int, default=2000, metavar="N", help="optimiser steps (default: 2000)")
    parser.add_argument("--batch-size", type=int, default=8, metavar="N", help="crops per step (default: 8)")
    parser.add_argument("--crop", type=int, default=256, metavar="PX", help="crop edge, a multiple of 32 (default: 256)")
    parser.add_argument("--learning-rate", type=_positive_float, default=5e-4, metavar="LR", help="Adam step size (default: 5e-4)")
    parser.add_argument("--pixel-size", type=_positive_float, metavar="A", help="A per pixel, overriding the files' headers")
    parser.add_argument("--seed", type=_non_negative_int, default=0, metavar="S", help="random seed (default: 0)")
    parser.add_argument("--resume", action="store_true", help="continue from MODEL's saved training state")
    parser.add_argument("--init", metavar="MODEL|default",
                        help="fine-tune this model (a .pt file, or 'default' for the shipped one) on the data "
                        "instead of training from scratch; its network and pixel-size floor are kept")
    parser.add_argument("--min-pixel-size", type=_positive_float, metavar="A",
                        help="Fourier-crop micrographs finer than A A/px to A, in training and later in denoising "
                        "(the shipped model's floor is 3 A); lets micrographs of different pixel sizes train one model "
                        "(default: none, one pixel size)")
    parser.set_defaults(handler=_run_train)


def _training_pairs(args: argparse.Namespace) -> list:
    from cryoscore.pairs.halves import pairs_from_dataset, pairs_from_directories, pairs_from_movies
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
    from cryoscore.train import GuidanceConfig

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


def _run_train(args: argparse.Namespace) -> int:
    from cryoscore.train import TrainConfig, train_model

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
    except ValueError as error:
        raise InputError("options", str(error)) from None
    pairs = _training_pairs(args)
    result = train_model(pairs, config, args.output, resume=args.resume,
                         initial=None if initial is None else initial.model,
                         extra={"command_line": ["cryoscore", *sys.argv[1:]],
                                "single_image_pairs": args.micrographs is not None,
                                "initial_model": None if initial is None else initial.source})
    print(f"trained {args.method} on {len(pairs)} micrographs in {result.seconds:.0f} s "
          f"(final loss {sum(result.losses[-20:]) / len(result.losses[-20:]):.4f}); model: {result.model_path}")
    return 0


def _add_parallel_options(parser: argparse.ArgumentParser, verb: str) -> None:
    """--workers, --scheduler and --threads: where the micrographs are processed (cryoscore.infer.batch)."""
    parser.add_argument("--workers", type=int, metavar="N",
                        help=f"{verb} N micrographs at a time, in N single-threaded processes of a local Dask "
                        "cluster; the output is the same for every N (default: one after another in this process, "
                        "with all cores)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="run on an existing Dask distributed cluster, e.g. tcp://host:8786; jobs and results "
                        "travel as pickles, which run code when loaded, so use only a cluster you trust")
    parser.add_argument("--threads", type=int, metavar="T",
                        help="torch threads per micrograph (default: all cores in this process, 1 with --workers "
                        "or --scheduler); CPU results depend on it by float32 round-off only")


def _check_parallel_options(args: argparse.Namespace) -> None:
    if args.workers is not None and args.scheduler is not None:
        raise InputError("options", "give --workers N (a local cluster) or --scheduler ADDRESS, not both")


def _failure_reporter(command: str) -> Callable:
    """A ``report`` callback for a batch run: one stderr line per failed micrograph, at once."""
    from tqdm import tqdm

    def report(record) -> None:
        if record.status == "failed":
            tqdm.write(f"cryoscore {command}: failed: {record.error}", file=sys.stderr)

    return report


def _batch_exit_code(records) -> int:
    """2 when any micrograph of a batch run failed (each was reported on its own line), else 0."""
    return 2 if any(record.status == "failed" for record in records) else 0


def _add_denoise(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "denoise",
        help="denoise micrographs with a trained model or a low-pass filter",
        description="Denoise MRC micrographs: one-step Tweedie estimate of a model from cryoscore train (or of "
        "the default model shipped with cryoscore), tiled so memory stays bounded, a stochastic sampler with a "
        "per-pixel standard deviation map, or the low-pass baseline. Writes one MRC per input, with the "
        "input's file name and pixel size, into OUTDIR (and NAME_std.mrc with --uncertainty), atomically. "
        "A rerun skips micrographs whose outputs are complete; a micrograph that cannot be read is reported "
        "and the others go on (exit code 2 at the end). MRC may be files, directories or quoted glob patterns.",
        epilog=DENOISE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="MRC", help="micrographs to denoise")
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR", help="folder for the results")
    parser.add_argument("--model", type=Path, metavar="MODEL",
                        help="model file from cryoscore train (.pt); default: the model shipped with cryoscore")
    parser.add_argument("--lowpass", type=_positive_float, metavar="A", help="low-pass at this resolution instead")
    parser.add_argument("--lowpass-kind", choices=("gaussian", "butterworth"), default="gaussian",
                        help="low-pass filter shape (default: gaussian)")
    parser.add_argument("--halves", type=int, choices=(1, 2), default=2,
                        help="how many frame halves an input holds: 2 for full sums, 1 for even/odd sums (default: 2)")
    parser.add_argument("--pixel-size", type=_positive_float, metavar="A", help="A per pixel, overriding the headers")
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE_PX, metavar="PX",
                        help=f"tile edge for inference; smaller tiles use less memory (default: {DEFAULT_TILE_PX})")
    parser.add_argument("--sampler", choices=("tweedie", "sde"), default="tweedie",
                        help="tweedie: one deterministic step; sde: reverse-diffusion samples (default: tweedie)")
    parser.add_argument("--steps", type=int, default=10, metavar="N", help="sde: steps per sample (default: 10)")
    parser.add_argument("--uncertainty", type=int, metavar="K",
                        help="draw K sde samples: write their mean and their per-pixel std (NAME_std.mrc)")
    parser.add_argument("--seed", type=_non_negative_int, default=0, metavar="S", help="sde: random seed (default: 0)")
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
    _add_parallel_options(parser, "denoise")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="where the model runs (default: cuda if available)")
    parser.add_argument("--overwrite", action="store_true",
                        help="recompute outputs that already exist (default: skip micrographs whose outputs are "
                        "complete, so an interrupted run can be restarted)")
    parser.set_defaults(handler=_run_denoise)


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
    from cryoscore.infer.adapt import AdaptSettings, adapt_denoiser
    from cryoscore.infer.batch import expand_inputs
    from cryoscore.infer.denoise import load_denoiser

    if args.lowpass is not None:
        raise InputError("--adapt", "adapts a model; it does not go with --lowpass")
    path = check_output_directory(args.output) / "adapted.pt"
    if path.is_file() and not args.overwrite:
        print(f"using the adapted model {path} of an earlier run (--overwrite adapts again)", file=sys.stderr)
        return str(path)
    try:
        settings = AdaptSettings(steps=args.adapt, seed=args.seed)
    except ValueError as error:
        raise InputError("--adapt", str(error)) from None
    args.output.mkdir(parents=True, exist_ok=True)
    denoiser, micrographs = load_denoiser(args.model), expand_inputs(args.inputs)
    result = adapt_denoiser(denoiser, micrographs, path, settings, pixel_size_a=args.pixel_size)
    verdict = ("kept" if result.kept else f"not kept, {path} holds {denoiser.source} unchanged")
    print(f"adapted {denoiser.source} to {len(micrographs)} micrographs in {result.seconds:.0f} s; "
          f"held-out Noise2Noise loss {result.initial_loss:.4f} -> {result.adapted_loss:.4f} ({verdict}): {path}",
          file=sys.stderr)
    return str(path)


def _run_denoise(args: argparse.Namespace) -> int:
    from cryoscore.infer.batch import DenoiseSettings, denoise_micrographs, summary_line

    _check_parallel_options(args)
    model = None if args.model is None else str(args.model)
    if args.adapt is not None:
        model = _adapted_model(args)
    settings = DenoiseSettings(
        model=model, lowpass_a=args.lowpass, lowpass_kind=args.lowpass_kind,
        halves=args.halves, pixel_size_a=args.pixel_size, tile_px=args.tile, sampler=_sampler_config(args),
        write_std=args.uncertainty is not None, float16=args.float16, device=args.device, overwrite=args.overwrite,
        precision=args.precision, tile_batch=args.tile_batch, bin_factor=args.bin,
    )
    records = denoise_micrographs(args.inputs, args.output, settings, workers=args.workers,
                                  scheduler=args.scheduler, torch_threads=args.threads,
                                  report=_failure_reporter("denoise"))
    print(f"{summary_line(records)}; outputs in {args.output}")
    return _batch_exit_code(records)


def _add_pick(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pick",
        help="pick particles: one RELION coordinate STAR per micrograph",
        description="Pick particles with the reference-free blob picker (Difference of Gaussians sized from the "
                    "diameter), a template picker (cross-correlation with projections of a reference) or a learned "
                    "picker (a small convolutional network trained, positive-unlabelled, on annotated micrographs; "
                    "or reused with --model). Writes OUTDIR/NAME.star per input with rlnAutopickFigureOfMerit, and "
                    "OUTDIR/pick.json. A micrograph that cannot be used is reported and the others go on (exit code "
                    "2 at the end).",
        epilog=PICK_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="MRC",
                        help="micrographs (raw or denoised): files, directories of *.mrc or quoted globs")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR", help="where the STAR files go")
    parser.add_argument("--diameter", type=_positive_float, metavar="A",
                        help="particle diameter, A (required, except for a learned picker given with --model)")
    parser.add_argument("--picker", "--method", dest="picker", choices=("blob", "template", "learned"),
                        default="blob", help="default: blob")
    parser.add_argument("--reference", metavar="MAP_OR_MODEL",
                        help="template picker: MRC map, atomic model or built-in specimen name")
    parser.add_argument("--threshold", type=float, metavar="T",
                        help="keep picks scoring at least T (default: every local maximum, for a PR curve)")
    parser.add_argument("--max-picks", type=int, metavar="N", help="keep at most N picks per micrograph")
    parser.add_argument("--pixel-size", type=_positive_float, metavar="A",
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
    learned.add_argument("--expected-particles", type=_positive_float, metavar="N",
                         help="particles per micrograph, annotated or not, for the positive-unlabelled loss "
                         "(default: the mean annotated count, i.e. annotations nearly complete)")
    learned.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="default: cpu")
    _add_parallel_options(parser, "pick")
    parser.set_defaults(handler=_run_pick)


def _run_pick(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from cryoscore.infer.batch import expand_inputs, summary_line
    from cryoscore.pick.learned import PickerTraining
    from cryoscore.pick.run import pick_micrographs

    _check_parallel_options(args)
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
                               torch_threads=args.threads, report=_failure_reporter("pick"), model=args.model,
                               train_micrographs=train_micrographs, train_coordinates=args.train_coordinates,
                               save_model=args.save_model, training=training, device=args.device)
    print(f"{summary_line(records, 'picked')}; outputs in {args.output}")
    return _batch_exit_code(records)


def _add_score(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score",
        help="score picks against true coordinates: precision, recall, F1, AP",
        description="Match picks one-to-one to true particle centres (maximum matching within a fraction of the "
                    "diameter) at every score threshold; print precision, recall and F1 at the best threshold and "
                    "the average precision, per micrograph and pooled.",
        epilog=SCORE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("picks", type=Path, metavar="PICKS_DIR", help="NAME.star (or .box/.csv) per micrograph")
    parser.add_argument("truth", type=Path, metavar="TRUTH_DIR", help="true coordinates, same file names")
    parser.add_argument("--radius-fraction", type=_positive_float, default=0.5, metavar="F",
                        help="match within F particle diameters (default: 0.5)")
    parser.add_argument("--diameter", type=_positive_float, metavar="A",
                        help="particle diameter, A (default: from PICKS_DIR/pick.json or the dataset manifest)")
    parser.add_argument("--pixel-size", type=_positive_float, metavar="A", help="pixel size, A (default: as --diameter)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every number as JSON")
    parser.set_defaults(handler=_run_score)


def _run_score(args: argparse.Namespace) -> int:
    from cryoscore.metrics.picking import score_directories, write_score_json

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


def _add_reconstruct(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "reconstruct",
        help="3D reconstruction from picks: half maps, FSC resolution",
        description="Box the picked particles from the dataset's raw micrographs, assign poses by projection "
                    "matching against the dataset's reference low-passed to --reference-resolution, reconstruct two "
                    "random halves with CTF correction and report the half-map FSC resolution (0.143) and the "
                    "resolution against the reference (0.5). DATASET_DIR is a cryoscore dataset (manifest.json with "
                    "the pixel size, particle diameter and each micrograph's CTF; reference.mrc). Writes "
                    "OUTDIR/half1.mrc, half2.mrc, map.mrc and reconstruction.json.",
        epilog=RECONSTRUCT_EXAMPLES,
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
    parser.add_argument("--box", type=int, default=64, metavar="PX",
                        help="processing box, even, pixels; larger boxes are Fourier-cropped to it (default: 64)")
    parser.add_argument("--max-particles", type=int, default=5000, metavar="N",
                        help="at most N particles, drawn at random (default: 5000)")
    parser.add_argument("--reference-resolution", type=_positive_float, default=25.0, metavar="A",
                        help="the reference is used for alignment up to this resolution, A (default: 25)")
    parser.add_argument("--seed", type=_non_negative_int, default=0, metavar="S",
                        help="seeds the particle subset and the half split (default: 0)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output directory")
    parser.set_defaults(handler=_run_reconstruct)


def _run_reconstruct(args: argparse.Namespace) -> int:
    from cryoscore.reconstruct.pipeline import reconstruct_dataset, write_reconstruction

    if args.picks is not None and not args.picks.is_dir():
        raise InputError(args.picks, "picks directory not found")
    _require_empty_output(args.output, args.overwrite)
    result = reconstruct_dataset(args.dataset, args.picks, threshold=args.threshold, ctf_star=args.ctf, box_px=args.box,
                                 max_particles=args.max_particles, reference_resolution_a=args.reference_resolution,
                                 seed=args.seed)
    write_reconstruction(args.output, result, {"dataset": str(args.dataset), "picks": str(args.picks or "truth"),
                                               "threshold": args.threshold, "ctf": str(args.ctf or "manifest")})
    truth = "-" if result.truth_resolution_a is None else f"{result.truth_resolution_a:.1f} A"
    print(f"{result.n_particles} particles of {result.n_picks} picks, {result.box_px} px at "
          f"{result.pixel_size_a:.3g} A/px: half maps {result.half_map_resolution_a:.1f} A (FSC 0.143), "
          f"vs reference {truth} (FSC 0.5); maps in {args.output}")
    return 0


def _add_classify2d(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "classify2d",
        help="reference-free 2D classification of picked particles: class averages, particles per class",
        description="Box the picks from the raw micrographs, phase-flip them by their micrographs' CTFs (--ctf), and "
                    "classify them without a reference (expectation maximisation over classes, in-plane angles and "
                    "shifts, the averages re-centred every iteration). Writes OUTDIR/class_averages.mrcs, classes.png, "
                    "particles.star (RELION: class, in-plane angle and origin per particle) and classify2d.json "
                    "(particles and gold-standard FRC resolution per class, from two halves refined on their own).",
        epilog=CLASSIFY2D_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="MICROGRAPH",
                        help="raw MRC micrographs, directories of them or quoted glob patterns")
    parser.add_argument("--picks", type=Path, required=True, metavar="DIR",
                        help="NAME.star (or .box, .csv) per micrograph, e.g. from cryoscore pick")
    parser.add_argument("--diameter", type=_positive_float, required=True, metavar="A", help="particle diameter, A")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR")
    parser.add_argument("--ctf", type=Path, metavar="STAR", help="micrograph CTFs (e.g. from cryoscore ctf) for "
                                                                  "phase flipping (default: no CTF correction)")
    parser.add_argument("--pixel-size", type=_positive_float, metavar="A", help="A/px (default: the MRC header)")
    parser.add_argument("--threshold", type=float, metavar="T", help="use picks scoring at least T (default: all)")
    parser.add_argument("--classes", type=int, default=10, metavar="K", help="(default: 10)")
    parser.add_argument("--iterations", type=int, default=12, metavar="N", help="(default: 12)")
    parser.add_argument("--half-iterations", type=int, default=4, metavar="N",
                        help="iterations of each half on its own for the gold-standard resolution (default: 4)")
    parser.add_argument("--box", type=int, default=64, metavar="PX",
                        help="processing box, even; larger boxes are Fourier-cropped to it (default: 64)")
    parser.add_argument("--max-particles", type=int, default=5000, metavar="N", help="(default: 5000, drawn at random)")
    parser.add_argument("--template", metavar="DENSITY",
                        help="match every class average against projections of this density (MRC map, atomic model, "
                             "built-in or shell:OUTER_A:INNER_A) and count the particles in classes that look like it")
    parser.add_argument("--seed", type=_non_negative_int, default=0, metavar="S", help="(default: 0)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output directory")
    parser.set_defaults(handler=_run_classify2d)


def _run_classify2d(args: argparse.Namespace) -> int:
    from cryoscore.classify.match import PARTICLE_LIKE_MATCH
    from cryoscore.classify.run import classify_micrographs
    from cryoscore.classify.twod import Classification2DSettings
    from cryoscore.infer.batch import expand_inputs

    if not args.picks.is_dir():
        raise InputError(args.picks, "picks directory not found")
    if args.box < 16 or args.box % 2 or args.max_particles < 2:
        raise InputError("--box/--max-particles", "the box must be an even number >= 16 px and at least 2 particles used")
    _require_empty_output(args.output, args.overwrite)
    try:
        settings = Classification2DSettings(classes=args.classes, iterations=args.iterations,
                                            half_iterations=args.half_iterations, seed=args.seed)
    except ValueError as error:
        raise InputError("--classes/--iterations/--half-iterations", str(error)) from None
    result, judgement = classify_micrographs(
        expand_inputs(args.inputs), args.picks, args.diameter, args.output, settings, ctf_star=args.ctf,
        pixel_size_a=args.pixel_size, threshold=args.threshold, box_px=args.box, max_particles=args.max_particles,
        template=args.template, progress=lambda iteration, counts: print(f"iteration {iteration}: particles per class "
                                                 f"{' '.join(str(int(count)) for count in counts)}", flush=True))
    print(f"{int(result.counts.sum())} particles in {len(result.counts)} classes "
          f"({'phase-flipped' if args.ctf else 'no CTF correction'}); averages in {args.output}/class_averages.mrcs, "
          f"gallery {args.output}/classes.png")
    if judgement is not None:
        print(f"{judgement['particle_like_fraction']:.0%} of the particles in classes matching {args.template} "
              f"(template match >= {PARTICLE_LIKE_MATCH}): " + ", ".join(
                  f"class {index + 1} {match:.2f}" for index, match in enumerate(judgement["template_match"])))
    return 0


def _add_bench(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="judge denoisers by picking, 3D reconstruction and pixel metrics; write a report",
        description="Simulate (or read) datasets, train the learned denoisers, judge every denoiser with the same "
                    "pickers, reconstruction and pixel metrics, run the bias controls, and write OUTDIR/metrics.json, "
                    "OUTDIR/report.html and OUTDIR/summary.md. Without CONFIG: the default simulated benchmark.",
        epilog=BENCH_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", nargs="?", type=Path, metavar="CONFIG", help="benchmark TOML file")
    parser.add_argument("--quick", action="store_true", help="the built-in smoke benchmark (about 30 s on 2 cores)")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output directory")
    parser.set_defaults(handler=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    from cryoscore.bench.config import DEFAULT_CONFIG, QUICK_CONFIG, load_bench_config
    from cryoscore.bench.report import headline_markdown
    from cryoscore.bench.run import run_bench

    if args.quick and args.config is not None:
        raise InputError("options", "give CONFIG or --quick, not both")
    config = QUICK_CONFIG if args.quick else DEFAULT_CONFIG if args.config is None else load_bench_config(args.config)
    _require_empty_output(args.output, args.overwrite)
    document = run_bench(config, args.output, command_line=["cryoscore", *sys.argv[1:]])
    print(headline_markdown(document), end="")
    print(f"report: {args.output / 'report.html'}; every number: {args.output / 'metrics.json'}")
    return 0


def _add_demo(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the main job on built-in data (no download)",
        description="Simulate a small apoferritin dataset from the built-in specimen, denoise it with the shipped "
                    "default model, pick, score, reconstruct and write report.html; no download.",
        epilog=DEMO_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-o", "--output", type=Path, default=Path("cryoscore-demo"), metavar="DIR",
                        help="where to write (default: ./cryoscore-demo)")
    parser.add_argument("--seed", type=_non_negative_int, default=0, metavar="S", help="random seed (default: 0)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output directory")
    parser.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from cryoscore.demo import run_demo

    _require_empty_output(args.output, args.overwrite)
    summary = run_demo(args.output, seed=args.seed,
                       stage=lambda text: print(f"cryoscore demo: {text} ...", file=sys.stderr, flush=True))
    print(summary)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cryoscore",
        description="Target-guided score-based denoising for cryo-EM micrographs.",
        epilog=textwrap.dedent(
            """
            examples:
              cryoscore demo                         # simulate, denoise, pick, reconstruct, report
              cryoscore simulate -o sim/ --dose 20   # a simulated dataset with ground truth
              cryoscore simulate --help
            """
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cryoscore {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    adders: list[Callable[[argparse._SubParsersAction], None]] = [
        _add_simulate, _add_align, _add_ctf, _add_train, _add_denoise, _add_pick, _add_score, _add_classify2d,
        _add_reconstruct, _add_bench, _add_demo,
    ]
    for add in adders:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "info" if args.verbose else "warning")  # Dask reads it on import
    try:
        return args.handler(args)
    except InputError as error:
        print(f"cryoscore {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cryoscore {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
