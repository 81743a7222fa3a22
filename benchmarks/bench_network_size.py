"""How large must the default model's network be? (issue 12: size the network by measurement)

    python benchmarks/bench_network_size.py CORPUS_DIR -o OUTDIR [--steps 1500]
        [--sizes 8x64x1 16x128x1 16x128x2 32x256x1] [--validation 8]

CORPUS_DIR is the default model's training corpus (``scripts/make_default_corpus.py
CORPUS_DIR --micrographs 48 --seed 0``). Each size ``BASExMAXxBLOCKS`` (base channels,
channel cap, residual blocks per level of :class:`~cryoscore.nn.unet.UNetConfig`) is
trained with the default model's settings (score method, 3 A pixel-size floor, batch 8,
160 px crops, seed 0) for the same number of steps, and judged on validation micrographs
drawn from the same ranges as the corpus but with other seeds (other specimens, other noise;
written once to OUTDIR/validation): correlation of the output with the noise-free particle
image and the blob picker's AP, both pooled as the bench pools them. The held-out test
conditions (specimens and pixel sizes never in the corpus) are not used to choose: judge a
chosen size on them with ``benchmarks/bench_default_model.py --model OUTDIR/SIZE.pt``.

Writes OUTDIR/SIZE.pt per size (reused when present), OUTDIR/results.json and
OUTDIR/results.md. Torch threads: the process's (set OMP_NUM_THREADS).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
from bench_learned_picker import run_record

from cryoscore.bench.datasets import simulated_test_set
from cryoscore.bench.run import judge_all
from cryoscore.infer.denoise import TrainedDenoiser, denoise_image, load_denoiser
from cryoscore.io.layout import DatasetLayout
from cryoscore.io.mrc import read_mrc
from cryoscore.metrics.pixel import correlation
from cryoscore.pairs.halves import pairs_from_dataset
from cryoscore.settings import TrainConfig, UNetConfig
from cryoscore.simulate.dataset import write_dataset
from cryoscore.train import train_model

ROOT = Path(__file__).resolve().parents[1]
VALIDATION_SEED = 1
"""The corpus is drawn with seed 0 (scripts/make_default_corpus.py); validation with this one."""
VALIDATION_SIMULATION_SEED = 5000
"""Simulation seeds of the validation micrographs start here (the corpus uses 0-47)."""


def _corpus_module():
    spec = importlib.util.spec_from_file_location("make_default_corpus", ROOT / "scripts" / "make_default_corpus.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_size(text: str) -> UNetConfig:
    """``"16x128x1"`` -> UNetConfig(base_channels=16, max_channels=128, blocks_per_level=1)."""
    base, cap, blocks = (int(part) for part in text.split("x"))
    return UNetConfig(base_channels=base, max_channels=cap, blocks_per_level=blocks)


def validation_sets(directory: Path, count: int) -> list[Path]:
    """``count`` micrographs drawn from the corpus ranges with :data:`VALIDATION_SEED`, one dataset each."""
    corpus = _corpus_module()
    paths = []
    for index in range(count):
        path = directory / f"v{index:03d}"
        if not (path / "manifest.json").is_file():
            rng = np.random.default_rng([VALIDATION_SEED, index])
            for _attempt in range(5):
                config = replace(corpus.draw_condition(rng, index), seed=VALIDATION_SIMULATION_SEED + index)
                try:
                    write_dataset(config, path, progress=False)
                    break
                except ValueError:  # too many particles to place: draw again
                    continue
        paths.append(path)
    return paths


def _background(path: Path, name: str) -> np.ndarray:
    """The micrograph's expected image without particles (ice, carbon), counts (H, W)."""
    return read_mrc(DatasetLayout(path).background(name))[0]


def judge_model(denoiser: TrainedDenoiser, validation: list[Path]) -> dict:
    """On each validation micrograph, raw and denoised: the particle correlation (of the image
    minus the true ice background with the noise-free particle image; the denoisers keep the
    background, which otherwise dominates any correlation) and the blob picker's AP, pooled as
    the bench pools it."""
    per_micrograph = []
    for path in validation:
        test_set = simulated_test_set(path, path.name)
        functions = {"raw": lambda image: image,
                     "model": lambda image, size=test_set.pixel_size_a: denoise_image(denoiser, image, pixel_size_a=size)}
        outcomes = judge_all(test_set, functions, ("blob",))
        first = test_set.micrographs[0]
        background = _background(path, first.name)
        per_micrograph.append({
            "raw_particle_correlation": correlation(first.full_sum - background, first.clean),
            "model_particle_correlation": correlation(outcomes["model"].example - background, first.clean),
            "name": path.name, "pixel_size_a": test_set.pixel_size_a, "dose": test_set.dose_e_per_a2,
            **{f"{name}_blob_ap": outcome.metrics["blob"]["ap"] for name, outcome in outcomes.items()},
            "seconds": outcomes["model"].metrics["denoise_seconds_per_micrograph"],
        })
    summary = {key: float(np.mean([entry[key] for entry in per_micrograph]))
               for key in ("raw_particle_correlation", "model_particle_correlation", "raw_blob_ap", "model_blob_ap",
                            "seconds")}
    return {"summary": summary, "micrographs": per_micrograph}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--sizes", nargs="*", default=["8x64x1", "16x128x1", "16x128x2", "32x256x1"])
    parser.add_argument("--shipped", action="store_true", help="judge the shipped default model too")
    parser.add_argument("--ema-half-life", type=float, default=0.0, metavar="STEPS",
                        help="save the weights' moving average of this half-life (default: 0, the last step's)")
    parser.add_argument("--max-grad-norm", type=float, default=TrainConfig.max_grad_norm,
                        help="clip each step's gradient to this norm, 0: not at all (default: the training default)")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--validation", type=int, default=8, help="validation micrographs (default: 8)")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    corpus_dirs = sorted(path for path in args.corpus.glob("c[0-9][0-9][0-9]") if path.is_dir())
    pairs = [pair for path in corpus_dirs for pair in pairs_from_dataset(path)]
    validation = validation_sets(args.output / "validation", args.validation)
    results_path = args.output / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    results.update({**run_record(), "corpus": str(args.corpus), "corpus_micrographs": len(pairs), "steps": args.steps,
                    "sizes": results.get("sizes", {})})
    if args.shipped:
        shipped = load_denoiser(None)
        results["sizes"]["shipped"] = {
            "parameters": sum(parameter.numel() for parameter in shipped.model.parameters()),
            "train_seconds": None, "final_loss": shipped.metadata["final_loss"],
            "steps": shipped.metadata["train_config"]["steps"], "unet": shipped.metadata["train_config"]["unet"],
            "validation": judge_model(shipped, validation)}
        results_path.write_text(json.dumps(results, indent=1))
    for text in args.sizes:
        unet = parse_size(text)
        clip = args.max_grad_norm or None
        label = text + ("" if args.ema_half_life == 0 else f"-ema{args.ema_half_life:g}") + (
            "" if clip is None else f"-clip{clip:g}")
        model_path = args.output / f"{label}.pt"
        record = results["sizes"].get(label, {})
        if not model_path.is_file():
            config = TrainConfig(method="score", steps=args.steps, batch_size=8, crop_px=160, seed=0,
                                 min_pixel_size_a=3.0, unet=unet, ema_half_life_steps=args.ema_half_life,
                                 max_grad_norm=clip)
            trained = train_model(pairs, config, model_path, progress=False)
            model_path.with_suffix(".state.pt").unlink(missing_ok=True)
            record = {"train_seconds": trained.seconds, "steps": args.steps, "final_loss": float(np.mean(trained.losses[-50:])),
                      "loss_every_100": [float(np.mean(trained.losses[i:i + 100])) for i in range(0, args.steps, 100)]}
        denoiser = load_denoiser(model_path)
        record["parameters"] = sum(parameter.numel() for parameter in denoiser.model.parameters())
        record["unet"] = {"base_channels": unet.base_channels, "max_channels": unet.max_channels,
                          "blocks_per_level": unet.blocks_per_level}
        record["validation"] = judge_model(denoiser, validation)
        results["sizes"][label] = record
        results_path.write_text(json.dumps(results, indent=1))
        print(label, json.dumps({key: record[key] for key in ("parameters", "final_loss", "train_seconds")}),
              json.dumps(record["validation"]["summary"]), flush=True)
    lines = [f"{len(validation)} validation micrographs; {results['torch_threads']} torch threads", "",
             "| size (base x cap x blocks) | parameters | steps | train s | final loss | particle correlation "
             "raw -> model | blob AP raw -> model | denoise s / micrograph |",
             "|---|---|---|---|---|---|---|---|"]
    for text, record in results["sizes"].items():
        summary = record["validation"]["summary"]
        seconds = "-" if record.get("train_seconds") is None else f"{record['train_seconds']:.0f}"
        lines.append(f"| {text} | {record['parameters'] / 1e6:.2f} M | {record.get('steps')} | {seconds} | "
                     f"{record['final_loss']:.4f} | "
                     f"{summary['raw_particle_correlation']:.3f} -> {summary['model_particle_correlation']:.3f} | "
                     f"{summary['raw_blob_ap']:.3f} -> {summary['model_blob_ap']:.3f} | {summary['seconds']:.2f} |")
    (args.output / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
