"""``cryoscore ctf``: its options (:func:`add_args`) and what it runs (:func:`main`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cryoscore.cli.common import positive_float
from cryoscore.errors import InputError
from cryoscore.io.atomic import check_output_file

EXAMPLES = """
examples:
  cryoscore ctf micrographs/*.mrc -o ctf.star                           # 300 kV, Cs 2.7 mm, amplitude contrast 0.07
  cryoscore ctf micrographs/ -o ctf.star --voltage 200 --cs 2.0 --defocus-range 0.5 4
  cryoscore ctf micrographs/ -o ctf.star --pixel-size 1.06 --resolution-range 25 4
"""


def add_args(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ctf",
        help="estimate each micrograph's CTF (defocus, astigmatism) into a RELION STAR file",
        description="Fit the CTF to each micrograph's Thon rings (the amplitude spectrum of overlapping tiles; a 1D "
                    "defocus search on its rotational average, then a 2D fit with astigmatism, CTFFIND-style) and "
                    "write RELION micrograph STAR (data_optics and data_micrographs: rlnDefocusU/V in A, "
                    "rlnDefocusAngle, rlnCtfMaxResolution, rlnCtfFigureOfMerit).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="MICROGRAPH",
                        help="MRC micrographs, directories of them or quoted glob patterns")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="STAR", help="output STAR file")
    parser.add_argument("--pixel-size", type=positive_float, metavar="A", help="A/px (default: each MRC header)")
    parser.add_argument("--voltage", type=positive_float, default=300.0, metavar="KV", help="(default: 300)")
    parser.add_argument("--cs", type=float, default=2.7, metavar="MM", help="spherical aberration (default: 2.7)")
    parser.add_argument("--amplitude-contrast", type=float, default=0.07, metavar="F", help="(default: 0.07)")
    parser.add_argument("--defocus-range", type=positive_float, nargs=2, default=(0.3, 5.0),
                        metavar=("MIN_UM", "MAX_UM"), help="mean defocus searched, um, underfocus positive "
                                                           "(default: 0.3 5)")
    parser.add_argument("--resolution-range", type=positive_float, nargs=2, default=(30.0, 5.0),
                        metavar=("LOW_A", "HIGH_A"), help="resolutions fitted, A (default: 30 5)")
    parser.add_argument("--max-astigmatism", type=float, default=0.5, metavar="UM",
                        help="largest (U - V) / 2 accepted, um (default: 0.5)")
    parser.add_argument("--tile", type=int, default=512, metavar="PX", help="spectrum tile size, even (default: 512)")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from cryoscore.io.ctf_star import write_ctf_star
    from cryoscore.jobs import expand_inputs
    from cryoscore.preprocess.ctf import (
        RELIABLE_FIGURE_OF_MERIT,
        CtfSearch,
        estimate_ctf_files,
    )

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
