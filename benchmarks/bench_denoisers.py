"""Pixel-level quality and speed of every denoiser on simulated low-dose micrographs.

Conditions are specimens x defocus ranges, at low dose with a structured ice background;
half of them (alternating over specimen and defocus) add a carbon edge and two
contamination blobs. Per specimen, each learned method trains ONE model on the pooled
halves of two training datasets, one per defocus range; every denoiser is then judged on
a test dataset per condition, simulated with other seeds, against the ground truth
``clean/`` (the particles alone): PSNR, SSIM and the low-frequency background power left
in particle-free areas (``cryoscore.metrics.pixel``). Training time per model, denoising
time per micrograph and, with a score model, the time of one 4096 x 4096 micrograph are
recorded too.

    python benchmarks/bench_denoisers.py --quick --methods raw,lowpass,n2n,score   # about a minute
    python benchmarks/bench_denoisers.py --markdown benchmarks/denoisers.md --json benchmarks/denoisers.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
from bench_learned_picker import run_record
from bench_simulate import cpu_description

from cryoscore.bench.config import TrainingSettings
from cryoscore.bench.denoisers import TrainedModel, denoise_functions, train_models
from cryoscore.infer.denoise import denoise_image
from cryoscore.io.coords import read_coordinates
from cryoscore.io.layout import DatasetLayout, read_manifest
from cryoscore.io.mrc import read_mrc
from cryoscore.metrics.pixel import pixel_metrics
from cryoscore.pairs.halves import pairs_from_dataset
from cryoscore.settings import TrainConfig
from cryoscore.simulate.background import BackgroundParams
from cryoscore.simulate.dataset import SimulationConfig, render_truth, sample_halves, write_dataset
from cryoscore.simulate.volume import load_specimen

logger = logging.getLogger("bench_denoisers")

SPECIMENS = ("apoferritin", "elongated", "small")
"""Built-in specimens benchmarked, in the order seeds and carbon alternation follow."""

DEFOCUS_RANGES_UM = ((0.8, 1.6), (1.8, 3.0))
"""Mean defocus of each condition's micrographs, drawn uniformly in the range, micrometres."""

METHODS = ("zero", "raw", "lowpass", "n2n", "score", "guided")
LEARNED_METHODS = ("n2n", "score", "guided")

PIXEL_SIZE_A = 1.5
BACKGROUND_STRENGTH = 1.5
"""Ice background of every condition (``BackgroundParams.strength``)."""

CARBON_CONTAMINATION_BLOBS = 2
PARTICLE_AREA_FRACTION = 0.15
"""Fraction of a micrograph covered by particles (disks of one diameter); sets the count
per micrograph, so small particles are many and large ones few, and about half the area
stays farther than one diameter from every particle, where the background is measured."""

SEED_BASES = {"train": 1000, "test": 2000}
"""Dataset seed = base + 10 * specimen index + defocus index: train and test never share one."""

MODEL_SEED = 0
FULL_SIZE_PX = 4096

FULL_DEFAULTS = {"size": 1024, "train_micrographs": 6, "test_micrographs": 2,
                 "steps": TrainConfig().steps, "crop": TrainConfig().crop_px, "batch_size": TrainConfig().batch_size}
QUICK_DEFAULTS = {"size": 256, "train_micrographs": 1, "test_micrographs": 1, "steps": 10, "crop": 64, "batch_size": 4}


@dataclass(frozen=True)
class Settings:
    """The resolved options of one benchmark run.

    Sizes in pixels, dose in electrons per square Angstrom, resolutions in Angstrom.
    ``train_micrographs`` is per defocus range (a model sees twice as many),
    ``test_micrographs`` per condition. ``guidance_strength`` and
    ``reference_resolution_a`` are None for ``GuidanceConfig``'s defaults.
    """

    specimens: tuple[str, ...]
    methods: tuple[str, ...]
    size_px: int
    train_micrographs: int
    test_micrographs: int
    steps: int
    crop_px: int
    batch_size: int
    dose_e_per_a2: float
    lowpass_a: float
    guidance_strength: float | None
    reference_resolution_a: float | None
    time_full_size: bool

    @property
    def learned_methods(self) -> tuple[str, ...]:
        return tuple(method for method in self.methods if method in LEARNED_METHODS)


@dataclass(frozen=True)
class Condition:
    """A specimen at a defocus range, with or without carbon and contamination; it has a training and a test dataset."""

    specimen: str
    defocus_range_um: tuple[float, float]

    @property
    def carbon(self) -> bool:
        """Carbon edge and contamination on alternate conditions, like a checkerboard."""
        return (SPECIMENS.index(self.specimen) + DEFOCUS_RANGES_UM.index(self.defocus_range_um)) % 2 == 1

    @property
    def label(self) -> str:
        low, high = self.defocus_range_um
        return f"{self.specimen} {low:g}-{high:g} um{' +carbon' if self.carbon else ''}"

    @property
    def directory_name(self) -> str:
        low, high = self.defocus_range_um
        return f"{self.specimen}-{low:g}-{high:g}um"

    def seed(self, role: str) -> int:
        """Seed of this condition's ``role`` ("train" or "test") dataset."""
        return (SEED_BASES[role] + 10 * SPECIMENS.index(self.specimen)
                + DEFOCUS_RANGES_UM.index(self.defocus_range_um))

    def simulation(self, role: str, n_micrographs: int, size_px: int, dose_e_per_a2: float,
                   diameter_a: float) -> SimulationConfig:
        """The dataset of ``n_micrographs`` (``size_px`` square) this condition has for ``role``."""
        particle_area_px = math.pi / 4 * (diameter_a / PIXEL_SIZE_A) ** 2
        return SimulationConfig(
            specimen=self.specimen,
            n_micrographs=n_micrographs,
            size_px=size_px,
            pixel_size_a=PIXEL_SIZE_A,
            particles_per_micrograph=max(1, round(PARTICLE_AREA_FRACTION * size_px**2 / particle_area_px)),
            dose_e_per_a2=dose_e_per_a2,
            defocus_range_um=self.defocus_range_um,
            background=BackgroundParams(
                strength=BACKGROUND_STRENGTH,
                carbon_edge=self.carbon,
                n_contamination=CARBON_CONTAMINATION_BLOBS if self.carbon else 0,
            ),
            seed=self.seed(role),
        )


def simulate(config: SimulationConfig, directory: Path) -> dict[str, Any]:
    """Write the dataset ``config`` describes into ``directory``; returns its record for the JSON."""
    started = time.perf_counter()
    write_dataset(config, directory, command_line=sys.argv, progress=False)
    logger.info("simulated %d micrographs into %s in %.1f s", config.n_micrographs, directory,
                time.perf_counter() - started)
    return {"directory": directory.name, "config": config.to_dict()}


def training_settings(settings: Settings) -> TrainingSettings:
    """How every learned model of the run is trained; guidance settings not given are GuidanceConfig's."""
    overrides = {"guidance_strength": settings.guidance_strength, "reference_resolution_a": settings.reference_resolution_a}
    return TrainingSettings(steps=settings.steps, batch_size=settings.batch_size, crop_px=settings.crop_px,
                            seed=MODEL_SEED, **{name: value for name, value in overrides.items() if value is not None})


def train_specimen_models(
    specimen: str, train_dirs: list[Path], settings: Settings, model_dir: Path
) -> tuple[dict[str, TrainedModel], list[dict[str, Any]]]:
    """Train one model per learned method on the pooled halves of ``train_dirs``, as
    ``cryoscore bench`` trains its models (:func:`cryoscore.bench.denoisers.train_models`),
    guided by the specimen's reference with the synthetic defoci spanning both ranges.

    Returns the models by method and one record per model (seconds, loss, ...).
    """
    pairs = [pair for directory in train_dirs for pair in pairs_from_dataset(directory)]
    models = train_models(pairs, settings.learned_methods, training_settings(settings), model_dir / specimen,
                          reference=str(DatasetLayout(train_dirs[0]).reference),
                          defocus_range_um=(min(low for low, _ in DEFOCUS_RANGES_UM),
                                            max(high for _, high in DEFOCUS_RANGES_UM)))
    return models, [{"specimen": specimen, **model.record} for model in models.values()]


def denoiser_functions(
    settings: Settings, models: dict[str, TrainedModel], pixel_size_a: float
) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Each benchmarked method as a function from a full sum (H, W) to its estimate (H, W), counts:
    ``cryoscore bench``'s (:func:`cryoscore.bench.denoisers.denoise_functions`) and ``zero``."""
    functions = denoise_functions(settings.methods, models, pixel_size_a, settings.lowpass_a)
    functions["zero"] = np.zeros_like  # a reference, not a denoiser: what erasing everything scores
    return {method: functions[method] for method in settings.methods}


def evaluate(
    condition: Condition, test_dir: Path, settings: Settings, models: dict[str, TrainedModel]
) -> list[dict[str, Any]]:
    """Denoise every full sum of ``test_dir`` with every method and judge it against ``clean/``.

    One record per (micrograph, method): PSNR (dB), SSIM, background power (counts^2),
    its ratio to raw's and to n2n's on the same micrograph (None where that method is not
    run) and the denoising time in seconds.
    """
    layout = DatasetLayout(test_dir)
    manifest = read_manifest(test_dir)
    pixel_size_a = manifest["pixel_size_a"]
    diameter_px = manifest["particle_diameter_a"] / pixel_size_a
    functions = denoiser_functions(settings, models, pixel_size_a)
    records = []
    for name in layout.micrograph_names():
        full_sum, _ = read_mrc(layout.micrograph(name))
        clean, _ = read_mrc(layout.clean(name))
        coordinates = read_coordinates(layout.coordinates(name))
        centres_rc = np.stack([coordinates.y_px, coordinates.x_px], axis=1)
        by_method = {}
        for method, denoise in functions.items():
            started = time.perf_counter()
            estimate = denoise(full_sum)
            seconds = time.perf_counter() - started
            metrics = pixel_metrics(estimate, clean, centres_rc, diameter_px, pixel_size_a)
            by_method[method] = {"condition": condition.label, "micrograph": name, "method": method,
                                 **dataclasses.asdict(metrics), "denoise_seconds": seconds}
        for record in by_method.values():
            for reference in ("raw", "n2n"):
                record[f"background_vs_{reference}"] = (
                    record["background_power"] / by_method[reference]["background_power"]
                    if reference in by_method else None
                )
        records.extend(by_method.values())
    logger.info("evaluated %s", condition.label)
    return records


SUMMARY_KEYS = ("psnr_db", "ssim", "correlation", "background_power", "background_vs_raw", "background_vs_n2n")


def summarise(records: list[dict[str, Any]]) -> dict[str, float | int | None]:
    """Means over the micrographs of one method's ``records`` (None where a value is missing),
    their count, and the median denoising time in seconds."""
    summary: dict[str, float | int | None] = {"n_micrographs": len(records)}
    for key in SUMMARY_KEYS:
        values = [record[key] for record in records]
        summary[key] = None if None in values else statistics.fmean(values)
    summary["denoise_seconds"] = statistics.median(record["denoise_seconds"] for record in records)
    return summary


def time_full_size(condition: Condition, settings: Settings, models: dict[str, TrainedModel]) -> dict[str, Any]:
    """Seconds to denoise one simulated 4096 x 4096 full sum of ``condition`` with its score model."""
    specimen = load_specimen(condition.specimen, PIXEL_SIZE_A)
    config = condition.simulation("test", 1, FULL_SIZE_PX, settings.dose_e_per_a2, specimen.diameter_a)
    even, odd = sample_halves(render_truth(config, specimen, 0))
    full_sum = (even + odd).numpy()
    started = time.perf_counter()
    denoise_image(models["score"].denoiser, full_sum, halves_in_image=2)
    seconds = time.perf_counter() - started
    logger.info("denoised a %d px micrograph in %.1f s", FULL_SIZE_PX, seconds)
    return {"size_px": FULL_SIZE_PX, "specimen": condition.specimen, "method": "score", "seconds": seconds}


def run_benchmark(settings: Settings, work_dir: Path) -> dict[str, Any]:
    """Simulate, train, denoise and judge; every number of the run as one JSON-ready dict."""
    datasets, training, records = [], [], []
    full_size_timing = None
    for specimen in settings.specimens:
        diameter_a = load_specimen(specimen, PIXEL_SIZE_A).diameter_a
        conditions = [Condition(specimen, defocus) for defocus in DEFOCUS_RANGES_UM]
        train_dirs = []
        for condition in conditions:
            directory = work_dir / "train" / condition.directory_name
            config = condition.simulation("train", settings.train_micrographs, settings.size_px,
                                          settings.dose_e_per_a2, diameter_a)
            datasets.append({"role": "train", "condition": condition.label, **simulate(config, directory)})
            train_dirs.append(directory)
        models, model_records = train_specimen_models(specimen, train_dirs, settings, work_dir / "models")
        training.extend(model_records)
        for condition in conditions:
            directory = work_dir / "test" / condition.directory_name
            config = condition.simulation("test", settings.test_micrographs, settings.size_px,
                                          settings.dose_e_per_a2, diameter_a)
            datasets.append({"role": "test", "condition": condition.label, **simulate(config, directory)})
            records.extend(evaluate(condition, directory, settings, models))
        if settings.time_full_size and full_size_timing is None and "score" in models:
            full_size_timing = time_full_size(conditions[0], settings, models)
    condition_labels = list(dict.fromkeys(record["condition"] for record in records))
    return {
        "datasets": datasets,
        "training": training,
        "micrographs": records,
        "per_condition": {
            label: {method: summarise([r for r in records if r["condition"] == label and r["method"] == method])
                    for method in settings.methods}
            for label in condition_labels
        },
        "pooled": {method: summarise([r for r in records if r["method"] == method]) for method in settings.methods},
        "full_size_timing": full_size_timing,
    }


def _number(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _summary_cells(summary: dict[str, Any]) -> str:
    return (f"{_number(summary['psnr_db'], '.2f')} | {_number(summary['ssim'], '.3f')} | "
            f"{_number(summary['correlation'], '.3f')} | "
            f"{_number(summary['background_power'], '.3g')} | {_number(summary['background_vs_raw'], '.3f')} | "
            f"{_number(summary['background_vs_n2n'], '.3f')} | {_number(summary['denoise_seconds'], '.3f')}")


def markdown_report(settings: Settings, results: dict[str, Any], run: dict[str, Any]) -> str:
    """The run as Markdown: set-up, quality per condition and pooled, and timings."""
    training = training_settings(settings)
    metric_header = "PSNR (dB) | SSIM | correlation | background power (e^2) | vs raw | vs n2n | s / micrograph"
    lines = [
        "# Denoisers on simulated micrographs",
        "",
        f"Command: `{run['command']}`",
        "",
        f"Machine: {run['cpu']}, {run['machine']['torch_threads']} torch threads; Python {run['python']}, "
        f"torch {run['versions']['torch']}; {run['date']}.",
        "",
        f"Data: {settings.size_px} x {settings.size_px} px micrographs at {PIXEL_SIZE_A} A/px, "
        f"{settings.dose_e_per_a2:g} e/A^2 in {SimulationConfig().n_frames} frames, ice background strength "
        f"{BACKGROUND_STRENGTH:g} (+carbon: a carbon edge and {CARBON_CONTAMINATION_BLOBS} contamination blobs), "
        f"particles covering {PARTICLE_AREA_FRACTION:.0%} of the area. Per specimen each learned method trains one "
        f"model on {settings.train_micrographs} micrograph(s) per defocus range "
        f"({settings.steps} steps of {settings.batch_size} crops of {settings.crop_px} px, seed {MODEL_SEED}); "
        f"{settings.test_micrographs} test micrograph(s) per condition, other seeds. "
        f"Low-pass: Gaussian at {settings.lowpass_a:g} A."
        + (f" Guidance: lambda {training.guidance_strength:g}, reference trusted to "
           f"{training.reference_resolution_a:g} A." if "guided" in settings.methods else ""),
        "",
        "Judged against the particles-only ground truth, both images mean-subtracted. Background power: mean "
        "square of the Gaussian low-pass at two particle diameters over pixels farther than one diameter from "
        "every particle, in (electrons per pixel)^2 on the full-sum scale; vs raw / vs n2n: mean over micrographs "
        "of its ratio to that method's on the same micrograph. Time: median per micrograph. Correlation: Pearson "
        "with the clean image. `zero` is an all-zero output, not a denoiser: at low dose it wins on PSNR and "
        "background power by erasing everything, so read PSNR next to the correlation, which it cannot win.",
        "",
        "## Per condition",
        "",
        f"| condition | method | {metric_header} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, by_method in results["per_condition"].items():
        lines.extend(f"| {label} | {method} | {_summary_cells(summary)} |" for method, summary in by_method.items())
    n_pooled = next(iter(results["pooled"].values()))["n_micrographs"]
    lines += [
        "",
        f"## Pooled ({n_pooled} test micrographs)",
        "",
        f"| method | {metric_header} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines.extend(f"| {method} | {_summary_cells(summary)} |" for method, summary in results["pooled"].items())
    if results["training"]:
        lines += [
            "",
            "## Training",
            "",
            "| specimen | method | micrographs | steps | final loss | seconds |",
            "|---|---|---|---|---|---|",
        ]
        lines.extend(
            f"| {record['specimen']} | {record['method']} | {record['n_micrographs']} | "
            f"{record['steps']} | {record['final_loss']:.4f} | {record['seconds']:.1f} |"
            for record in results["training"]
        )
    timing = results["full_size_timing"]
    if timing:
        lines += ["", f"One {timing['size_px']} x {timing['size_px']} px micrograph ({timing['specimen']}) "
                      f"denoised by the score model in {timing['seconds']:.1f} s."]
    return "\n".join(lines) + "\n"


def _comma_list(choices: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    """An argparse type: a comma-separated subset of ``choices``, returned in their order."""

    def parse(text: str) -> tuple[str, ...]:
        names = [name.strip() for name in text.split(",") if name.strip()]
        unknown = [name for name in names if name not in choices]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"choose from {','.join(choices)}; got {text!r}")
        return tuple(name for name in choices if name in names)

    return parse


def parse_settings(argv: list[str] | None = None) -> tuple[Settings, argparse.Namespace]:
    """Command-line options resolved into :class:`Settings` (``--quick`` changes the defaults)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: one specimen, 256 px, 1 training micrograph per defocus range, 10 steps "
                             "of 4 crops of 64 px, no 4096 px timing")
    parser.add_argument("--specimens", type=_comma_list(SPECIMENS), default=SPECIMENS,
                        help=f"comma list (default {','.join(SPECIMENS)}; --quick takes the first)")
    parser.add_argument("--methods", type=_comma_list(METHODS), default=METHODS,
                        help=f"comma list (default {','.join(METHODS)})")
    parser.add_argument("--size", type=int, help="micrograph edge, px (default 1024; quick 256)")
    parser.add_argument("--train-micrographs", type=int, help="per defocus range and specimen (default 6; quick 1)")
    parser.add_argument("--test-micrographs", type=int, help="per condition (default 2; quick 1)")
    parser.add_argument("--steps", type=int,
                        help=f"training steps per model (default {FULL_DEFAULTS['steps']}; quick 10)")
    parser.add_argument("--crop", type=int,
                        help=f"training crop, px, a multiple of 32 (default {FULL_DEFAULTS['crop']}; quick 64)")
    parser.add_argument("--batch-size", type=int,
                        help=f"training crops per step (default {FULL_DEFAULTS['batch_size']}; quick 4)")
    parser.add_argument("--dose", type=float, default=20.0, help="e/A^2 over the movie (default 20)")
    parser.add_argument("--lowpass", type=float, default=20.0, help="low-pass resolution, A (default 20)")
    parser.add_argument("--guidance-strength", "--lambda", type=float,
                        help="guided: weight of the guided loss (default GuidanceConfig's)")
    parser.add_argument("--reference-resolution", type=float,
                        help="guided: resolution the reference is trusted to, A (default GuidanceConfig's)")
    parser.add_argument("--work-dir", type=Path, help="keep datasets and models here (default a temporary directory)")
    parser.add_argument("--json", type=Path, help="write every number to this JSON file")
    parser.add_argument("--markdown", type=Path, help="write the Markdown summary to this file")
    args = parser.parse_args(argv)
    for name, value in (QUICK_DEFAULTS if args.quick else FULL_DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if min(args.size, args.train_micrographs, args.test_micrographs, args.steps, args.batch_size) < 1:
        parser.error("--size, --train-micrographs, --test-micrographs, --steps and --batch-size must be >= 1")
    if args.crop > args.size:
        parser.error(f"--crop {args.crop} px does not fit a {args.size} px micrograph")
    try:
        TrainConfig(steps=args.steps, batch_size=args.batch_size, crop_px=args.crop)
    except ValueError as error:
        parser.error(str(error))
    settings = Settings(
        specimens=args.specimens[:1] if args.quick else args.specimens,
        methods=args.methods,
        size_px=args.size,
        train_micrographs=args.train_micrographs,
        test_micrographs=args.test_micrographs,
        steps=args.steps,
        crop_px=args.crop,
        batch_size=args.batch_size,
        dose_e_per_a2=args.dose,
        lowpass_a=args.lowpass,
        guidance_strength=args.guidance_strength,
        reference_resolution_a=args.reference_resolution,
        time_full_size=not args.quick,
    )
    return settings, args


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    settings, args = parse_settings()
    run = {
        **run_record(),
        "cpu": cpu_description(),
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    with contextlib.ExitStack() as stack:
        work_dir = args.work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-denoisers-")))
        results = run_benchmark(settings, work_dir)
    report = markdown_report(settings, results, run)
    print(report, end="")
    if args.markdown:
        args.markdown.write_text(report)
    if args.json:
        args.json.write_text(json.dumps({"run": run, "settings": dataclasses.asdict(settings), **results}, indent=2)
                             + "\n")


if __name__ == "__main__":
    main()
