"""Topaz's own particle picker (``topaz train`` / ``topaz extract``), k-fold over annotated micrographs.

Runs in Topaz's own environment, not cryoscore's (see ``topaz_denoise.py`` for the venv):

    topaz-venv/bin/python benchmarks/topaz_picker.py MICROGRAPH_DIR COORDINATE_DIR -o OUTDIR \\
        [--folds 5] [--seeds 0 1 2] [--scale 4] [--epochs 10] [--epoch-size 1000] [--threads 1]

For each seed and fold (micrograph ``i`` of the sorted names in fold ``i mod k``, the split
of ``cryoscore.bench.crossval``), it trains Topaz's default picker (ResNet8, 32 units,
pretrained start) on the other folds' micrographs and their annotations, and after every
epoch extracts every peak from the fold's micrographs with Topaz's non-maximum suppression
(radius half a diameter). Micrographs are preprocessed as ``topaz preprocess`` does
(downsampled by ``--scale``, GMM-normalised). Picks are written as
OUTDIR/picks_seed{S}_fold{F}_epoch{E}.txt (``image_name x_coord y_coord score``, original
pixels) and OUTDIR/topaz_picker.json records the settings, versions and seconds per fold.
``--run-folds`` runs only some folds (to spread them over processes; start one first, it writes
the preprocessed micrographs that the others reuse when they were made from the same
micrographs at the same scale, as OUTDIR/processed/source.json records) and names its record
OUTDIR/topaz_picker_folds-F-G.json; ``bench_topaz_picker.py`` merges the records.

The expected particle count ``-n`` is the training micrographs' mean annotated count, the
information cryoscore's picker gets. Topaz 0.3.20 then finds its prior ``pi`` equal to the
labelled fraction and falls back from its positive-unlabelled objective (GE-binomial) to PN
(unlabelled pixels as negatives), or not, depending on the count's rounding; ``--method PN``
is passed so the choice does not flip between folds. (Topaz 0.3.20 counts (2r + 1) times
too many pixels per particle in 2D, ``stats.pixels_given_radius``, in both ``pi`` and the
labelled fraction, so a larger ``-n`` would set a prior 7 times too high at r = 3.) ``--seeds`` seeds torch
(the network's start and minibatch order); Topaz's crop sampler draws from an unseeded numpy
generator, so a rerun is not bit-identical.
``bench_topaz_picker.py`` (cryoscore's environment) scores them like the learned judge.

topaz-em's command line imports torchvision, whose only PyPI wheel is CUDA-built and fails
to load on a CPU-only torch. Topaz uses three of its functions (``rotate``, ``hflip``,
``vflip``) for data augmentation, so this script registers a module with those three,
written in torch, before it imports Topaz, and then runs Topaz's own commands unchanged.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F


def rotate(image: torch.Tensor, angle: float, *args: object, **kwargs: object) -> torch.Tensor:
    """torchvision's tensor ``rotate`` as Topaz calls it: (..., H, W) turned by ``angle`` degrees
    about the image centre, nearest-neighbour, zeros outside, same size."""
    shape = image.shape
    flat = image.reshape(-1, 1, shape[-2], shape[-1]).float()
    theta = math.radians(angle)
    matrix = torch.tensor([[math.cos(theta), -math.sin(theta), 0.0],
                           [math.sin(theta), math.cos(theta), 0.0]], dtype=flat.dtype)
    grid = F.affine_grid(matrix.expand(flat.shape[0], 2, 3), list(flat.shape), align_corners=False)
    turned = F.grid_sample(flat, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return turned.reshape(shape).to(image.dtype)


def install_torchvision_stand_in() -> None:
    """Register ``torchvision.transforms.functional`` with rotate/hflip/vflip in ``sys.modules``."""
    functional = types.ModuleType("torchvision.transforms.functional")
    functional.rotate = rotate  # type: ignore[attr-defined]
    functional.hflip = lambda image: image.flip(-1)  # type: ignore[attr-defined]
    functional.vflip = lambda image: image.flip(-2)  # type: ignore[attr-defined]
    transforms = types.ModuleType("torchvision.transforms")
    transforms.functional = functional  # type: ignore[attr-defined]
    torchvision = types.ModuleType("torchvision")
    torchvision.transforms = transforms  # type: ignore[attr-defined]
    sys.modules.update({"torchvision": torchvision, "torchvision.transforms": transforms,
                        "torchvision.transforms.functional": functional})


def read_star_xy(path: Path) -> list[tuple[float, float]]:
    """(x, y) of a RELION STAR file's rlnCoordinateX/Y loop, in pixels."""
    columns: dict[str, int] = {}
    rows = []
    for line in path.read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#") or words[0] in ("data_", "loop_"):
            continue
        if words[0].startswith("_rln"):
            columns[words[0]] = int(words[1].lstrip("#")) - 1
        elif columns:
            rows.append((float(words[columns["_rlnCoordinateX"]]), float(words[columns["_rlnCoordinateY"]])))
    return rows


def run_topaz(*argv: str) -> None:
    """One ``topaz`` command, in this process."""
    from topaz.main import main as topaz_main
    sys.argv = ["topaz", *argv]
    topaz_main()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("micrographs", type=Path, help="folder of NAME.mrc")
    parser.add_argument("coordinates", type=Path, help="folder of NAME.star (rlnCoordinateX/Y)")
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--scale", type=int, default=4, help="downsampling factor (topaz preprocess -s)")
    parser.add_argument("--diameter-px", type=float, default=65.0, help="particle diameter, original pixels")
    parser.add_argument("--epochs", type=int, default=10, help="topaz train's default: 10")
    parser.add_argument("--epoch-size", type=int, default=1000, help="topaz train's default: 1000")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--run-folds", type=int, nargs="+", help="only these folds (default: every one)")
    args = parser.parse_args()
    command = list(sys.argv)
    install_torchvision_stand_in()
    torch.set_num_threads(args.threads)
    import topaz

    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    names = sorted(path.stem for path in args.micrographs.glob("*.mrc"))
    processed = out / "processed"
    source = processed / "source.json"  # what the preprocessed micrographs were made from, to reuse them safely
    made_from = {"micrographs": str(args.micrographs.resolve()), "names": names, "scale": args.scale}
    started = time.perf_counter()
    if not (source.is_file() and json.loads(source.read_text()) == made_from
            and all((processed / f"{name}.mrc").is_file() for name in names)):
        run_topaz("preprocess", "-s", str(args.scale), "-d", "-1", "-j", str(args.threads), "-o", str(processed),
                  *[str(args.micrographs / f"{name}.mrc") for name in names])
        source.write_text(json.dumps(made_from))
    seconds = {"preprocess": time.perf_counter() - started}
    coordinates = {name: read_star_xy(args.coordinates / f"{name}.star") for name in names}
    radius = max(1, round(args.diameter_px / 2 / args.scale))
    for seed in args.seeds:
        for fold in args.run_folds or range(min(args.folds, len(names))):
            train = [name for index, name in enumerate(names) if index % args.folds != fold]
            test = [name for index, name in enumerate(names) if index % args.folds == fold]
            work = out / f"seed{seed}_fold{fold}"
            work.mkdir(exist_ok=True)
            (work / "train_images.txt").write_text("image_name\tpath\n" + "".join(
                f"{name}\t{processed / (name + '.mrc')}\n" for name in train))
            (work / "train_targets.txt").write_text("image_name\tx_coord\ty_coord\n" + "".join(
                f"{name}\t{round(x / args.scale)}\t{round(y / args.scale)}\n"
                for name in train for x, y in coordinates[name]))
            expected = sum(len(coordinates[name]) for name in train) / len(train)
            torch.manual_seed(seed)
            started = time.perf_counter()
            run_topaz("train", "-d", "-1", "-j", str(args.threads), "--train-images", str(work / "train_images.txt"),
                      "--train-targets", str(work / "train_targets.txt"), "-n", f"{expected:.1f}", "--method", "PN",
                      "--num-epochs", str(args.epochs), "--epoch-size", str(args.epoch_size),
                      "--save-prefix", str(work / "model"), "-o", str(work / "training.txt"))
            trained = time.perf_counter() - started
            digits = math.ceil(math.log10(args.epochs))  # topaz train's own file naming
            for epoch in range(1, args.epochs + 1):
                run_topaz("extract", "-d", "-1", "-j", str(args.threads), "-m", str(work / f"model_epoch{epoch:0{digits}d}.sav"),
                          "-r", str(radius), "-t", "-1000", "-x", str(args.scale),
                          "-o", str(out / f"picks_seed{seed}_fold{fold}_epoch{epoch}.txt"),
                          *[str(processed / f"{name}.mrc") for name in test])
            seconds[f"seed{seed}_fold{fold}"] = {"train": trained, "train_and_extract": time.perf_counter() - started}
            print(f"seed {seed} fold {fold}: {seconds[f'seed{seed}_fold{fold}']}", flush=True)
    record = "topaz_picker.json" if args.run_folds is None else "topaz_picker_folds-{}.json".format(
        "-".join(map(str, args.run_folds)))
    (out / record).write_text(json.dumps({
        "topaz": topaz.__version__, "torch": torch.__version__, "threads": args.threads, "names": names,
        "folds": args.folds, "run_folds": args.run_folds, "seeds": args.seeds, "scale": args.scale, "extract_radius_px": radius,
        "epochs": args.epochs, "epoch_size": args.epoch_size, "command": command, "seconds": seconds}, indent=1))


if __name__ == "__main__":
    main()
