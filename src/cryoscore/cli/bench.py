"""``cryoscore bench``: its options (:func:`add_args`) and what it runs (:func:`main`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from cryoscore.cli.common import require_empty_output
from cryoscore.errors import InputError
from cryoscore.settings import DEVICES

EXAMPLES = """
examples:
  cryoscore bench --quick -o bench-quick/          # a smoke run, about 30 s on 2 cores
  cryoscore bench -o bench/                        # the default simulated benchmark
  cryoscore bench benchmarks/real.toml -o bench-real/
  cryoscore bench -o bench/ --device cuda          # train, denoise and pick on a GPU
  cryoscore bench -o bench/ --resume               # continue bench/ where an interrupted run stopped
  OMP_NUM_THREADS=1 cryoscore bench -o bench/ --workers 2   # two pickers at a time, on 2 cores
"""


def add_args(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="judge denoisers by picking, 3D reconstruction and pixel metrics; write a report",
        description="Simulate (or read) datasets, train the learned denoisers, judge every denoiser with the same "
                    "pickers, reconstruction and pixel metrics, run the bias controls, and write OUTDIR/metrics.json, "
                    "OUTDIR/report.html and OUTDIR/summary.md. Without CONFIG: the default simulated benchmark.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", nargs="?", type=Path, metavar="CONFIG", help="benchmark TOML file")
    parser.add_argument("--quick", action="store_true", help="the built-in smoke benchmark (about 30 s on 2 cores)")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output directory")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="train the learned judge's pickers N at a time, each in a single-threaded process, "
                        "overriding the config's [learned] workers (default 1; the numbers are those of one thread)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted run in OUTDIR with the same CONFIG: the models it trained and "
                        "the denoisers it judged are loaded from OUTDIR/work/steps, not run again (the datasets are "
                        "simulated again, the same); only for output directories you made, as the steps are pickles")
    parser.add_argument("--device", choices=DEVICES,
                        help="where the denoisers and the learned pickers train and run, overriding the config's "
                        "[training] and [learned] device (default: the config's, cpu)")
    parser.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from cryoscore.bench.config import DEFAULT_CONFIG, QUICK_CONFIG, load_bench_config
    from cryoscore.bench.report import headline_markdown
    from cryoscore.bench.run import run_bench
    from cryoscore.infer.denoise import resolve_device

    if args.quick and args.config is not None:
        raise InputError("options", "give CONFIG or --quick, not both")
    config = QUICK_CONFIG if args.quick else DEFAULT_CONFIG if args.config is None else load_bench_config(args.config)
    learned_device, workers = config.learned.device, config.learned.workers
    if args.device is not None:
        learned_device = resolve_device(args.device)
        config = replace(config, training=replace(config.training, device=learned_device))
    if args.workers is not None:
        workers = args.workers
    try:  # --device cuda with the config's workers > 1 is refused as --workers 2 on a GPU is
        config = replace(config, learned=replace(config.learned, device=learned_device, workers=workers))
    except ValueError as error:
        options = [f"--{name}" for name in ("device", "workers") if getattr(args, name) is not None]
        raise InputError(" ".join(options), str(error)) from None
    if args.resume and args.overwrite:
        raise InputError("options", "give --resume or --overwrite, not both")
    if not args.resume:
        require_empty_output(args.output, args.overwrite)
    # A benchmark runs for minutes to hours: its progress (each dataset simulated, each model trained,
    # each denoiser judged) goes to standard error without --verbose.
    logging.getLogger("cryoscore.bench").setLevel(logging.INFO)
    document = run_bench(config, args.output, command_line=args.command_line, resume=args.resume)
    print(headline_markdown(document), end="")
    print(f"report: {args.output / 'report.html'}; every number: {args.output / 'metrics.json'}")
    return 0
