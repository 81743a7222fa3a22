"""``cryoscore classify2d``: its options (:func:`add_args`) and what it runs (:func:`main`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cryoscore.cli.common import non_negative_int, positive_float, require_empty_output
from cryoscore.errors import InputError

EXAMPLES = """
examples:
  cryoscore classify2d micrographs/*.mrc --picks picks/ --diameter 120 -o class2d/
  cryoscore classify2d micrographs/ --picks picks/ --diameter 120 --ctf ctf.star --classes 20 -o class2d/
  cryoscore classify2d micrographs/ --picks picks/ --threshold 3 --diameter 120 --max-particles 2000 -o class2d/
  cryoscore classify2d micrographs/ --picks picks/ --diameter 120 --template shell:120:80 -o class2d/
"""


def add_args(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "classify2d",
        help="reference-free 2D classification of picked particles: class averages, particles per class",
        description="Box the picks from the raw micrographs, phase-flip them by their micrographs' CTFs (--ctf), and "
                    "classify them without a reference (expectation maximisation over classes, in-plane angles and "
                    "shifts, the averages re-centred every iteration). Writes OUTDIR/class_averages.mrcs, classes.png, "
                    "particles.star (RELION: class, in-plane angle and origin per particle) and classify2d.json "
                    "(particles and gold-standard FRC resolution per class, from two halves refined on their own).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="+", type=Path, metavar="MICROGRAPH",
                        help="raw MRC micrographs, directories of them or quoted glob patterns")
    parser.add_argument("--picks", type=Path, required=True, metavar="DIR",
                        help="NAME.star (or .box, .csv) per micrograph, e.g. from cryoscore pick")
    parser.add_argument("--diameter", type=positive_float, required=True, metavar="A", help="particle diameter, A")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR")
    parser.add_argument("--ctf", type=Path, metavar="STAR", help="micrograph CTFs (e.g. from cryoscore ctf) for "
                                                                  "phase flipping (default: no CTF correction)")
    parser.add_argument("--pixel-size", type=positive_float, metavar="A", help="A/px (default: the MRC header)")
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
    parser.add_argument("--seed", type=non_negative_int, default=0, metavar="S", help="(default: 0)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output directory")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from cryoscore.classify.match import PARTICLE_LIKE_MATCH
    from cryoscore.classify.run import classify_micrographs
    from cryoscore.classify.twod import Classification2DSettings
    from cryoscore.jobs import expand_inputs

    if not args.picks.is_dir():
        raise InputError(args.picks, "picks directory not found")
    if args.box < 16 or args.box % 2 or args.max_particles < 2:
        raise InputError("--box/--max-particles", "the box must be an even number >= 16 px and at least 2 particles used")
    require_empty_output(args.output, args.overwrite)
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
