"""Topaz-Denoise's pretrained model on MRC micrographs, as `topaz denoise` runs it, timed.

Runs in Topaz's own environment, not cryoscore's (topaz-em pins its own dependencies):

    python3 -m venv topaz-venv && topaz-venv/bin/pip install torch==2.13.0 \\
        && topaz-venv/bin/pip install topaz-em "torch==2.13.0" "setuptools<81" mrcfile
    topaz-venv/bin/python benchmarks/topaz_denoise.py MRC... -o OUTDIR [--threads 2]

It calls topaz's Python API (``topaz.denoise``) with the defaults of ``topaz denoise``
(pretrained ``unet``, patches of 1024 px with 500 px of padding, no low-pass, no
deconvolution): topaz's own command line trips over the CUDA-only torchvision wheel on a
CPU machine. Writes OUTDIR/NAME.mrc (float32, the input's pixel size) and
OUTDIR/topaz_timing.json (seconds per micrograph, threads, versions).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import mrcfile
import numpy as np
import torch
from topaz import __version__ as topaz_version
from topaz.denoise import Denoise, denoise_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--patch-size", type=int, default=1024, help="topaz denoise's default: 1024")
    parser.add_argument("--padding", type=int, default=500, help="topaz denoise's default: 500")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    model = Denoise("unet", use_cuda=False)
    load_seconds = time.perf_counter() - started
    seconds = {}
    for path in args.inputs:
        with mrcfile.open(path, permissive=True) as mrc:
            image = np.asarray(mrc.data, dtype=np.float32)
            voxel_size = float(mrc.voxel_size.x)
        started = time.perf_counter()
        denoised = denoise_image(image, [model], lowpass=1, cutoff=0, patch_size=args.patch_size,
                                 padding=args.padding, use_cuda=False)
        seconds[path.name] = time.perf_counter() - started
        with mrcfile.new(args.output / path.name, overwrite=True) as mrc:
            mrc.set_data(np.asarray(denoised, dtype=np.float32))
            mrc.voxel_size = voxel_size
        print(f"{path.name}: {seconds[path.name]:.1f} s", flush=True)
    (args.output / "topaz_timing.json").write_text(json.dumps({
        "topaz": topaz_version, "torch": torch.__version__, "threads": args.threads,
        "patch_size": args.patch_size, "padding": args.padding, "model_load_seconds": load_seconds,
        "seconds_per_micrograph": seconds}, indent=1))


if __name__ == "__main__":
    main()
