"""The ``cryoscore`` command line: one subcommand per stage, argparse only here.

Each subcommand is one module of this package with ``EXAMPLES`` (its help epilog),
``add_args(subparsers)`` (its options) and ``main(args) -> exit code``. Every subcommand builds
the library's frozen configuration objects from its arguments and calls the library; user
errors (``InputError``, invalid options) end in one line on stderr and exit code 2, never a
traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
from typing import Sequence

from cryoscore import __version__
from cryoscore.cli import (
    align,
    bench,
    classify2d,
    ctf,
    demo,
    denoise,
    pick,
    reconstruct,
    score,
    simulate,
    train,
)
from cryoscore.errors import InputError

COMMANDS = (simulate, align, ctf, train, denoise, pick, score, classify2d, reconstruct, bench, demo)
"""The subcommands' modules, in the order ``cryoscore --help`` lists them."""


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
    for command in COMMANDS:
        command.add_args(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = ["cryoscore", *(sys.argv[1:] if argv is None else argv)]  # for the run records
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
