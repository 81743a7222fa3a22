"""Crops of a sparse and a crowded simulated test set, raw beside the shipped model's output
(issue 12's crowding hypothesis; benchmarks/RESULTS.md, section 6).

One row per test set (``bench_default_model.write_panels``): a full-resolution crop of its first
micrograph as the clean image, raw and denoised by the shipped default model, true centres circled,
and their radial power spectra. The test sets are the bench's own simulated ones
(``OUT/work/SPECIMEN/test-DOSEe`` of ``cryoscore bench``)::

    python benchmarks/crowding_panels.py -o benchmarks/crowding \
        --test-set sparse SPARSE/work/apoferritin/test-20e --test-set crowded CROWDED/work/apoferritin/test-20e
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench_default_model import write_panels

from cryoscore.bench.datasets import simulated_test_set
from cryoscore.infer.denoise import denoise_image, load_denoiser


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder for panels_NAME.png")
    parser.add_argument("--test-set", nargs=2, action="append", required=True, metavar=("NAME", "DIR"),
                        help="a simulated test set's folder (repeatable)")
    parser.add_argument("--origin", type=int, nargs=2, metavar=("ROW", "COL"),
                        help="the crops' top-left pixel (default: centred)")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    default = load_denoiser(None)
    for name, directory in args.test_set:
        test_set = simulated_test_set(Path(directory), name)
        first = test_set.micrographs[0]
        assert first.clean is not None, f"{directory}: a simulated test set keeps its clean images"
        examples = {"clean": first.clean, "raw": first.full_sum,
                    "default": denoise_image(default, first.full_sum, pixel_size_a=test_set.pixel_size_a)}
        write_panels(args.output / f"panels_{name}.png", test_set, examples,
                     origin_rc=tuple(args.origin) if args.origin else None)


if __name__ == "__main__":
    main()
