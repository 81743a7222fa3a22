"""Does the shipped default model help on data it was not built around? (issue 12)

    python benchmarks/bench_default_model.py -o benchmarks/default-model [--adapt-steps 300]
        [--topaz-dir DIR] [--conditions real large-4A ...] [--micrographs 4] [--learned-seeds 0 1 2]

Every condition here is held out from the default model's training corpus
(scripts/make_default_corpus.py): specimens it never saw (the built-in apoferritin and
elongated particles, the TRPV1 atomic model, real apoferritin) at pixel sizes it never saw
(1.5, 1.85, 2.0 and 4.0 A), and a counting camera (MTF and noise correlated between
neighbouring pixels; the corpus has an ideal detector) against its ideal twin. Each condition's micrographs are judged raw, low-passed at 20 A,
denoised by the default model, denoised after ``--adapt`` on the condition's own micrographs,
and by Topaz-Denoise when its outputs are given (``--topaz-dir DIR/CONDITION/NAME.mrc``,
made by benchmarks/topaz_denoise.py in topaz's own environment).

Judges: the blob picker's AP against the true (or annotated) coordinates, the correlation
with the noise-free image (simulated data), with ``--learned-seeds`` the learned picker
(k-fold over the condition's micrographs, one picker per fold and seed; AP with its 95 %
bootstrap interval and the paired difference against raw on the same folds and seeds), and,
in the report, full-resolution crops and radial power spectra of every output. Writes OUTDIR/results.json, OUTDIR/results.md and
OUTDIR/panels_CONDITION.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cryoscore.bench.config import LearnedJudgeSettings
from cryoscore.bench.crossval import paired_difference
from cryoscore.bench.datasets import TestMicrograph, TestSet, simulated_test_set
from cryoscore.bench.plots import radial_power_spectrum
from cryoscore.bench.run import judge_all
from cryoscore.filters import lowpass_filter
from cryoscore.infer.adapt import AdaptSettings, adapt_denoiser
from cryoscore.infer.denoise import denoise_image, load_denoiser
from cryoscore.io.coords import read_coordinates
from cryoscore.io.mrc import read_mrc
from cryoscore.simulate.background import BackgroundParams
from cryoscore.simulate.dataset import SimulationConfig, write_dataset
from cryoscore.simulate.detector import COUNTING

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REAL_DIR = SHARED / "apoferritin-empiar10146"
LOWPASS_A = 20.0


@dataclass(frozen=True)
class Condition:
    """A held-out test condition: a simulation (``config``) or the real set (``config`` None)."""

    name: str
    description: str
    config: SimulationConfig | None = None


_TWIN = SimulationConfig(specimen="apoferritin", size_px=1024, pixel_size_a=1.85, particles_per_micrograph=40,
                         dose_e_per_a2=20.0, background=BackgroundParams(strength=1.5), seed=7005)
"""Two conditions that differ only in the detector (same particles, ice and seeds)."""

CONDITIONS = (
    Condition("real", "EMPIAR-10146 apoferritin, 10 real micrographs, 1.85 A/px"),
    Condition("large-4A", "elongated 250 A particle, 4 A/px, 30 e/A^2",
              SimulationConfig(specimen="elongated", size_px=768, pixel_size_a=4.0, particles_per_micrograph=30,
                               dose_e_per_a2=30.0, seed=7001)),
    Condition("membrane-2A", "TRPV1 (atomic model), 2 A/px, 40 e/A^2, strong ice gradients",
              SimulationConfig(specimen=str(SHARED / "models" / "3j5p_trpv1.pdb"), size_px=1024, pixel_size_a=2.0,
                               particles_per_micrograph=40, dose_e_per_a2=40.0,
                               background=BackgroundParams(strength=3.0, spectral_exponent=2.5,
                                                           shortest_wavelength_a=200.0),
                               seed=7002)),
    Condition("easy-1.5A", "apoferritin, 1.5 A/px, 40 e/A^2 (the no-harm check)",
              SimulationConfig(specimen="apoferritin", size_px=1024, pixel_size_a=1.5, particles_per_micrograph=40,
                               dose_e_per_a2=40.0, seed=7003)),
    Condition("lowdose-1.85A", "apoferritin, 1.85 A/px, 10 e/A^2, contamination",
              SimulationConfig(specimen="apoferritin", size_px=1024, pixel_size_a=1.85, particles_per_micrograph=40,
                               dose_e_per_a2=10.0, background=BackgroundParams(strength=1.5, n_contamination=1),
                               seed=7004)),
    Condition("reallike-1.85A", "apoferritin, 1.85 A/px, 6.5 e/A^2, counting camera, particle contrast 0.2, "
              "ice variation 0.1 (the real set's counts per pixel, particle-to-noise and background-to-noise power)",
              SimulationConfig(specimen="apoferritin", size_px=1024, pixel_size_a=1.85, particles_per_micrograph=110,
                               dose_e_per_a2=6.5, detector=COUNTING, contrast_scale=0.2,
                               background=BackgroundParams(strength=0.1), seed=11)),
    Condition("ideal-1.85A", "apoferritin, 1.85 A/px, 20 e/A^2, ideal detector (counting-1.85A's twin)",
              _TWIN),
    Condition("counting-1.85A", "the same micrographs recorded by a counting camera (MTF, 10 % double counting)",
              replace(_TWIN, detector=COUNTING)),
)


def real_test_set(limit: int | None) -> tuple[TestSet, list[Path]]:
    """The real micrographs at their own pixel size (1.85 A), with the annotated centres."""
    paths = sorted((REAL_DIR / "micrographs").glob("*.mrc"))[:limit]
    micrographs = tuple(
        TestMicrograph(path.stem, read_mrc(path)[0], read_coordinates(REAL_DIR / "coordinates" / f"{path.stem}.star"),
                       None, None)
        for path in paths)
    return TestSet("real EMPIAR-10146", micrographs, 1.85, 120.0, None, None), paths


def condition_test_set(condition: Condition, work_dir: Path, micrographs: int) -> tuple[TestSet, list[Path]]:
    """The condition's test set and its micrograph files (simulated into ``work_dir`` once)."""
    if condition.config is None:
        return real_test_set(None)
    directory = work_dir / condition.name
    if not (directory / "manifest.json").is_file():
        write_dataset(replace(condition.config, n_micrographs=micrographs), directory, progress=False)
    return simulated_test_set(directory, condition.name), sorted((directory / "micrographs").glob("*.mrc"))


def _grey(image: np.ndarray) -> Image.Image:
    low, high = np.percentile(image, [1, 99])
    return Image.fromarray((np.clip((image - low) / max(high - low, 1e-12), 0, 1) * 255).astype(np.uint8))


def write_panels(path: Path, test_set: TestSet, examples: dict[str, np.ndarray], crop_px: int = 384,
                 origin_rc: tuple[int, int] | None = None) -> None:
    """One row: a full-resolution crop of the first micrograph per denoiser, true centres circled,
    and a plot of their radial power spectra (log power, each normalised to its low-frequency mean).
    ``origin_rc``: the crop's top-left pixel (row, col); None centres it."""
    first = test_set.micrographs[0]
    row0, col0 = origin_rc or [max((size - crop_px) // 2, 0) for size in first.full_sum.shape]
    radius = test_set.diameter_a / test_set.pixel_size_a / 2
    tiles = []
    for name, image in examples.items():
        tile = _grey(image[row0:row0 + crop_px, col0:col0 + crop_px]).convert("RGB")
        draw = ImageDraw.Draw(tile)
        for x, y in zip(first.truth.x_px - col0, first.truth.y_px - row0):
            if -radius < x < crop_px + radius and -radius < y < crop_px + radius:
                draw.ellipse([x - radius, y - radius, x + radius, y + radius], outline=(255, 80, 80))
        draw.rectangle([0, 0, 9 * len(name) + 8, 16], fill=(0, 0, 0))
        draw.text((4, 2), name, fill=(255, 255, 255))
        bar_px = 100 / test_set.pixel_size_a  # 10 nm scale bar
        draw.rectangle([8, crop_px - 14, 8 + bar_px, crop_px - 10], fill=(255, 255, 255))
        draw.text((12 + bar_px, crop_px - 20), "10 nm", fill=(255, 255, 255))
        tiles.append(tile)
    spectrum = Image.new("RGB", (crop_px, crop_px), "white")
    draw = ImageDraw.Draw(spectrum)
    colours = [(0, 0, 0), (120, 120, 120), (31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189)]
    for index, (name, image) in enumerate(examples.items()):
        frequency, power = radial_power_spectrum(image, test_set.pixel_size_a)
        log_power = np.log10(np.maximum(power / power[1:4].mean(), 1e-8))
        xs = 30 + frequency / frequency.max() * (crop_px - 40)
        ys = 20 + np.clip(-log_power, 0, 6) / 6 * (crop_px - 60)
        draw.line(list(zip(xs.tolist(), ys.tolist())), fill=colours[index % len(colours)], width=2)
        draw.text((crop_px - 110, 20 + 14 * index), name, fill=colours[index % len(colours)])
    draw.text((30, crop_px - 30), f"0 ... {frequency.max():.3f} 1/A; log10 power, 6 decades", fill=(0, 0, 0))
    tiles.append(spectrum)
    canvas = Image.new("RGB", (crop_px * len(tiles), crop_px), "white")
    for index, tile in enumerate(tiles):
        canvas.paste(tile, (index * crop_px, 0))
    canvas.save(path)


def _learned_cell(entry: dict, against_raw: bool) -> str:
    """``AP [low, high]`` of the learned judge and, ``against_raw``, ``; difference [low, high]``."""
    def interval(values: list[float] | None) -> str:
        return "[-]" if values is None else f"[{values[0]:+.3f}, {values[1]:+.3f}]"

    cell = f"{entry['learned']['ap']:.3f} {interval(entry['learned']['ap_ci'])}".replace("+", "")
    if against_raw:
        difference = entry["learned_ap_minus_raw"]
        cell += f"; {difference['difference']:+.3f} {interval(difference['ci'])}"
    return cell


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--conditions", nargs="+", default=[condition.name for condition in CONDITIONS])
    parser.add_argument("--micrographs", type=int, default=4, help="per simulated condition (default: 4)")
    parser.add_argument("--adapt-steps", type=int, default=300, help="0 skips the adapted model (default: 300)")
    parser.add_argument("--adapt-learning-rate", type=float, default=AdaptSettings().learning_rate,
                        help="learning rate of the adapted model's fine-tuning (default: --adapt's)")
    parser.add_argument("--topaz-dir", type=Path, help="Topaz-Denoise outputs, DIR/CONDITION/NAME.mrc")
    parser.add_argument("--model", type=Path, help="judge this model instead of the shipped default")
    parser.add_argument("--learned-seeds", type=int, nargs="*", default=[],
                        help="judge with the learned picker too, one picker per fold and seed (default: not)")
    parser.add_argument("--learned-folds", type=int, default=4, help="k of the learned judge's k-fold (default: 4)")
    parser.add_argument("--learned-steps", type=int, default=100, help="picker training steps (default: 100)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    args.output.mkdir(parents=True, exist_ok=True)
    default = load_denoiser(args.model)
    learned = (LearnedJudgeSettings(folds=args.learned_folds, seeds=tuple(args.learned_seeds), steps=args.learned_steps)
               if args.learned_seeds else None)
    results = {"model": default.source, "adapt_steps": args.adapt_steps,
               "adapt_learning_rate": args.adapt_learning_rate, "conditions": {}}
    for condition in (c for c in CONDITIONS if c.name in args.conditions):
        started = time.perf_counter()
        test_set, paths = condition_test_set(condition, args.output / "data", args.micrographs)
        pixel_size_a = test_set.pixel_size_a
        functions = {
            "raw": lambda image: image,
            "lowpass": lambda image: lowpass_filter(image, pixel_size_a, LOWPASS_A),
            "default": lambda image: denoise_image(default, image, pixel_size_a=pixel_size_a),
        }
        record: dict = {"description": condition.description, "micrographs": len(paths)}
        if args.adapt_steps > 0:
            adapted_path = args.output / "adapted" / f"{condition.name}.pt"
            adapt_started = time.perf_counter()
            settings = AdaptSettings(steps=args.adapt_steps, learning_rate=args.adapt_learning_rate)
            adaptation = adapt_denoiser(default, paths, adapted_path, settings, progress=False)
            record["adapt_seconds"] = time.perf_counter() - adapt_started
            record["adapt_held_out_loss"] = {"default": adaptation.initial_loss, "adapted": adaptation.adapted_loss,
                                             "kept": adaptation.kept}
            adapted = load_denoiser(adapted_path)
            functions["adapted"] = lambda image: denoise_image(adapted, image, pixel_size_a=pixel_size_a)
        if args.topaz_dir is not None and (args.topaz_dir / condition.name).is_dir():
            outputs = {micrograph.name: args.topaz_dir / condition.name / f"{micrograph.name}.mrc"
                       for micrograph in test_set.micrographs}
            by_content = {id(micrograph.full_sum): outputs[micrograph.name] for micrograph in test_set.micrographs}
            functions["topaz"] = lambda image: read_mrc(by_content[id(image)])[0]
        outcomes = judge_all(test_set, functions, ("pixel", "blob", "learned") if learned else ("pixel", "blob"),
                             learned)
        record["denoisers"] = {name: {"blob_ap": outcome.metrics["blob"]["ap"],
                                      "blob_f1": outcome.metrics["blob"]["f1"],
                                      "correlation_with_clean": outcome.metrics.get("pixel", {}).get("correlation"),
                                      "seconds_per_micrograph": outcome.metrics["denoise_seconds_per_micrograph"]}
                               for name, outcome in outcomes.items()}
        if learned:
            for name, outcome in outcomes.items():
                record["denoisers"][name]["learned"] = outcome.metrics["learned"]
                record["denoisers"][name]["learned_ap_minus_raw"] = paired_difference(
                    outcome.learned_results, outcomes["raw"].learned_results, "ap", n_boot=learned.bootstrap,
                    confidence=learned.confidence)
        record["seconds"] = time.perf_counter() - started
        results["conditions"][condition.name] = record
        write_panels(args.output / f"panels_{condition.name}.png", test_set,
                     {name: outcome.example for name, outcome in outcomes.items()})
        print(condition.name, json.dumps(record["denoisers"]), flush=True)
        (args.output / "results.json").write_text(json.dumps(results, indent=1))
    names = sorted({name for record in results["conditions"].values() for name in record["denoisers"]},
                   key=["raw", "lowpass", "topaz", "default", "adapted"].index)
    lines = ["| condition | " + " | ".join(f"{name} AP" for name in names) + " |",
             "|---|" + "---|" * len(names)]
    for condition_name, record in results["conditions"].items():
        cells = [f"{record['denoisers'][name]['blob_ap']:.3f}" if name in record["denoisers"] else "-"
                 for name in names]
        lines.append(f"| {condition_name}: {record['description']} | " + " | ".join(cells) + " |")
    if learned:
        lines += ["", "Learned picker: AP [95 % CI]; AP minus raw, paired over the same folds and seeds [95 % CI]", "",
                  "| condition | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for condition_name, record in results["conditions"].items():
            lines.append(f"| {condition_name} | " + " | ".join(
                _learned_cell(record["denoisers"][name], name != "raw") if name in record["denoisers"] else "-" for name in names) + " |")
    (args.output / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
