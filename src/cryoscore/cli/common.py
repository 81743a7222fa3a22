"""Option types, output checks and batch-run helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from cryoscore.errors import InputError
from cryoscore.io.atomic import check_output_directory
from cryoscore.settings import SettingError


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def require_empty_output(path: Path, overwrite: bool) -> None:
    """InputError unless ``path`` can be created or is an empty directory (any directory with ``overwrite``)."""
    check_output_directory(path)
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise InputError(path, "output directory is not empty; choose another or pass --overwrite")


def add_parallel_options(parser: argparse.ArgumentParser, verb: str) -> None:
    """--workers, --scheduler and --threads: where the micrographs are processed (cryoscore.jobs)."""
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


def check_parallel_options(args: argparse.Namespace) -> None:
    if args.workers is not None and args.scheduler is not None:
        raise InputError("options", "give --workers N (a local cluster) or --scheduler ADDRESS, not both")


def failure_reporter(command: str) -> Callable:
    """A ``report`` callback for a batch run: one stderr line per failed micrograph, at once."""
    from tqdm import tqdm

    def report(record) -> None:
        if record.status == "failed":
            tqdm.write(f"cryoscore {command}: failed: {record.error}", file=sys.stderr)

    return report


def batch_exit_code(records) -> int:
    """2 when any micrograph of a batch run failed (each was reported on its own line), else 0."""
    return 2 if any(record.status == "failed" for record in records) else 0


def input_error(error: SettingError, flags: dict[str, str]) -> InputError:
    """The user's error for a setting out of range, naming the flag that set it (``flags``: field
    -> flag) or, for a field no flag sets, the field itself."""
    return InputError(flags.get(error.field, f"{error.owner}.{error.field}"), error.problem)
