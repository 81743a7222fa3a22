"""``cryoscore demo``: the main job on built-in data, with no download.

Simulate a small apoferritin dataset with structured background (ice, a carbon edge),
denoise it with the default model shipped in the package, pick particles on the raw,
low-passed and denoised micrographs with the reference-free blob picker, score the
picks against the true coordinates, reconstruct from them, and write the benchmark
report (``report.html``, ``summary.md``, ``metrics.json``) and a picture.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np

from cryoscore.bench.config import json_ready
from cryoscore.bench.datasets import simulated_test_set
from cryoscore.bench.judges import JudgedDataset
from cryoscore.bench.report import write_reports
from cryoscore.bench.run import judge_all, metrics_document
from cryoscore.filters import bin_image, lowpass_filter
from cryoscore.infer.denoise import denoise_image, load_denoiser
from cryoscore.io.coords import read_coordinates
from cryoscore.io.layout import DatasetLayout, read_manifest, write_json
from cryoscore.io.mrc import read_mrc, write_mrc
from cryoscore.io.png import write_panels_png
from cryoscore.metrics.pixel import correlation
from cryoscore.simulate.background import BackgroundParams
from cryoscore.simulate.dataset import SimulationConfig, write_dataset

DEMO_CONFIG = SimulationConfig(
    specimen="apoferritin",
    n_micrographs=2,
    size_px=768,
    pixel_size_a=1.5,
    particles_per_micrograph=30,
    dose_e_per_a2=30.0,
    n_frames=40,
    background=BackgroundParams(strength=1.5, carbon_edge=True),
)


DEMO_LOWPASS_A = 20.0
"""The low-pass baseline's cut-off, Angstrom."""
DEMO_JUDGES = ("pixel", "blob", "reconstruction")


def _write_picture(path: Path, layout: DatasetLayout, name: str, denoised: np.ndarray, diameter_px: float) -> None:
    """Raw, denoised and the two truths of micrograph ``name``, binned by 2, true particles circled."""
    factor = 2
    coordinates = read_coordinates(layout.coordinates(name))
    write_panels_png(
        path,
        [
            ("full sum (raw counts)", bin_image(read_mrc(layout.micrograph(name))[0], factor)),
            ("denoised (default model)", bin_image(denoised, factor)),
            ("truth: particles (clean)", bin_image(read_mrc(layout.clean(name))[0], factor)),
            ("truth: background (ice, carbon)", bin_image(read_mrc(layout.background(name))[0], factor)),
        ],
        circles_rc=np.stack([coordinates.y_px, coordinates.x_px], axis=1) / factor,
        circle_radius_px=diameter_px / 2 / factor,
        caption=f"circles: the true particle positions from the simulation, one particle diameter across; "
                f"{name}, binned by {factor}",
    )


def _cell(metrics: dict, judge: str, key: str, spec: str, unit: str = "") -> str:
    value = metrics.get(judge, {}).get(key)
    return "-" if value is None else f"{format(value, spec)}{unit}"


def run_demo(output_dir: str | Path, *, seed: int = 0, stage: Callable[[str], None] | None = None) -> str:
    """Simulate, denoise, pick, score, reconstruct and report into ``output_dir``.

    Writes ``dataset/`` (the simulation with its ground truth), ``denoised/NAME.mrc``,
    ``overview.png``, ``report.html``, ``summary.md`` and ``metrics.json``. Returns the
    text to print: where things are, then three lines comparing raw, low-passed and
    denoised micrographs (blob-picker AP, half-map resolution, correlation with the
    noise-free image). ``stage`` is called with a short line as each stage starts.
    """
    started = time.perf_counter()
    say = stage or (lambda text: None)
    output_dir = Path(output_dir)
    dataset_dir = output_dir / "dataset"
    config = replace(DEMO_CONFIG, seed=seed)
    say(f"simulating {config.n_micrographs} micrographs of {config.specimen} into {dataset_dir}")
    write_dataset(config, dataset_dir, command_line=["cryoscore", "demo"], progress=False)
    layout = DatasetLayout(dataset_dir)
    manifest = read_manifest(dataset_dir)
    pixel_size_a = manifest["pixel_size_a"]
    say("denoising them with the default model")
    denoiser = load_denoiser()
    test_set = simulated_test_set(dataset_dir, f"demo: apoferritin {config.dose_e_per_a2:g} e/A^2")
    for micrograph in test_set.micrographs:
        write_mrc(output_dir / "denoised" / f"{micrograph.name}.mrc", denoise_image(denoiser, micrograph.full_sum,
                                                                                        pixel_size_a=pixel_size_a),
                  pixel_size_a)
    functions = {
        "raw": lambda image: image,
        "lowpass": lambda image: lowpass_filter(image, pixel_size_a, DEMO_LOWPASS_A),
        "denoised": lambda image: denoise_image(denoiser, image, pixel_size_a=pixel_size_a),
    }
    say("picking, scoring and reconstructing from the raw, low-passed and denoised micrographs")
    outcomes = judge_all(test_set, functions, DEMO_JUDGES)
    first = test_set.micrographs[0]
    picture = output_dir / "overview.png"
    _write_picture(picture, layout, first.name, outcomes["denoised"].example, test_set.diameter_a / pixel_size_a)

    record = JudgedDataset(test_set.label, "simulated", test_set, outcomes, dose_e_per_a2=config.dose_e_per_a2)
    run_config = {"demo": json_ready(dataclasses.asdict(config)), "denoised": "the shipped default model",
                  "lowpass_a": DEMO_LOWPASS_A, "judges": list(DEMO_JUDGES)}
    document = metrics_document(run_config, tuple(functions), [record], [], time.perf_counter() - started,
                                ["cryoscore", "demo", "-o", str(output_dir), "--seed", str(seed)])
    say("writing the report")
    write_json(output_dir / "metrics.json", document)
    write_reports(output_dir, document, [record])

    noise_free = first.clean + read_mrc(layout.background(first.name))[0]
    metrics = {name: outcome.metrics for name, outcome in outcomes.items()}
    n_particles = sum(len(micrograph.truth) for micrograph in test_set.micrographs)
    return "\n".join([
        f"dataset: {dataset_dir} ({len(test_set.micrographs)} micrographs, {n_particles} particles); "
        f"denoised: {output_dir / 'denoised'}; picture: {picture}",
        f"report: {output_dir / 'report.html'} (summary.md, metrics.json beside it)",
        "picking, blob AP:            " + "  ".join(
            f"{name} {_cell(metrics[name], 'blob', 'ap', '.3f')}" for name in functions),
        "3D, half-map FSC 0.143:      " + "  ".join(
            f"{name} {_cell(metrics[name], 'reconstruction', 'resolution_half_maps_a', '.1f', ' A')}"
            for name in functions),
        "pixels, corr. w/ noise-free: " + "  ".join(
            f"{name} {correlation(outcomes[name].example, noise_free):.3f}" for name in functions),
    ])
