"""``cryoscore simulate``: its options (:func:`add_args`) and what it runs (:func:`main`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cryoscore.cli.common import non_negative_int, positive_float, require_empty_output
from cryoscore.errors import InputError

EXAMPLES = """
examples:
  cryoscore simulate -o sim/                                  # 4 apoferritin micrographs, 1024 px
  cryoscore simulate -o sim/ --specimen elongated --dose 20 --micrographs 10 --seed 3
  cryoscore simulate -o sim/ --specimen 3j5p.pdb --pixel-size 1.2 --frames 50 --write-frames
  cryoscore simulate -o sim/ --carbon-edge --contamination 3 --background-strength 2
"""


def add_args(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="simulate micrographs with exact ground truth",
        description="Simulate cryo-EM micrographs (even/odd halves, clean and background ground truth, "
        "coordinates with poses and CTF) from a built-in specimen, a map or an atomic model.",
        epilog=EXAMPLES,
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
    parser.add_argument("--pixel-size", type=positive_float, default=1.5, metavar="A", help="A per pixel (default: 1.5)")
    parser.add_argument("--particles", type=non_negative_int, metavar="N",
                        help="particles per micrograph (default: 40 per 1024 x 1024 px, scaled with the area)")
    parser.add_argument("--dose", type=positive_float, default=40.0, metavar="E_PER_A2", help="total dose in e/A^2 (default: 40)")
    parser.add_argument("--frames", type=int, default=40, metavar="N", help="movie frames (default: 40)")
    parser.add_argument("--seed", type=non_negative_int, default=0, metavar="S", help="random seed (default: 0)")
    parser.add_argument("--defocus", type=positive_float, nargs=2, default=(1.0, 2.5), metavar=("MIN_UM", "MAX_UM"),
                        help="defocus range in micrometres, underfocus positive (default: 1.0 2.5)")
    parser.add_argument("--voltage", type=positive_float, default=300.0, metavar="KV", help="(default: 300)")
    parser.add_argument("--cs", type=float, default=2.7, metavar="MM", help="spherical aberration (default: 2.7)")
    parser.add_argument("--bfactor", type=float, default=60.0, metavar="A2", help="B-factor envelope (default: 60)")
    parser.add_argument("--contrast-scale", type=positive_float, default=1.0, metavar="F",
                        help="fraction of the weak-phase-object contrast the particles keep; real micrographs show "
                             "less (beam-induced motion, radiation damage): about 0.2 matches EMPIAR-10146 "
                             "(default: 1)")
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
    parser.add_argument("--contamination", type=non_negative_int, default=0, metavar="N", help="contamination blobs per micrograph")
    parser.add_argument("--cluster-fraction", type=float, default=0.0, metavar="F", help="fraction of particles placed touching another")
    parser.add_argument("--edge-particles", action="store_true", help="let particles be cut by the micrograph edge")
    parser.add_argument("--drift", type=float, default=0.0, metavar="A", help="total stage drift per movie in A (default: 0)")
    parser.add_argument("--write-frames", action="store_true", help="also write the movie frames (frames/NAME.mrcs)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output directory")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from cryoscore.simulate.background import BackgroundParams
    from cryoscore.simulate.dataset import (
        SimulationConfig,
        default_particle_count,
        write_dataset,
    )
    from cryoscore.simulate.detector import PRESETS

    require_empty_output(args.output, args.overwrite)
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
            contrast_scale=args.contrast_scale,
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
    manifest = write_dataset(config, args.output, command_line=args.command_line)
    print(f"wrote {config.n_micrographs} micrographs; manifest: {manifest}")
    return 0
