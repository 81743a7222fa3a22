"""``cryoscore demo``: the main job on built-in data, with no download.

At this stage of the project: simulate a small apoferritin dataset with structured
background and write a picture of one micrograph next to its ground truth.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from cryoscore.io.coords import read_coordinates
from cryoscore.io.layout import DatasetLayout, read_manifest
from cryoscore.io.mrc import read_mrc
from cryoscore.io.png import write_panels_png
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


def _bin(image: np.ndarray, factor: int) -> np.ndarray:
    height, width = (dimension // factor * factor for dimension in image.shape)
    return image[:height, :width].reshape(height // factor, factor, width // factor, factor).mean(axis=(1, 3))


def run_demo(output_dir: str | Path, *, seed: int = 0) -> str:
    """Simulate the demo dataset into ``output_dir`` and draw it; returns a short summary."""
    output_dir = Path(output_dir)
    dataset_dir = output_dir / "dataset"
    write_dataset(replace(DEMO_CONFIG, seed=seed), dataset_dir, command_line=["cryoscore", "demo"], progress=False)
    layout = DatasetLayout(dataset_dir)
    manifest = read_manifest(dataset_dir)
    name = layout.micrograph_names()[0]
    full, _ = read_mrc(layout.micrograph(name))
    clean, _ = read_mrc(layout.clean(name))
    background, _ = read_mrc(layout.background(name))
    coordinates = read_coordinates(layout.coordinates(name))
    factor = 2
    picture = output_dir / "overview.png"
    write_panels_png(
        picture,
        [
            ("full sum (raw counts)", _bin(full, factor)),
            ("truth: particles (clean)", _bin(clean, factor)),
            ("truth: background (ice, carbon)", _bin(background, factor)),
        ],
        circles_rc=np.stack([coordinates.y_px, coordinates.x_px], axis=1) / factor,
        circle_radius_px=manifest["particle_diameter_a"] / manifest["pixel_size_a"] / 2 / factor,
    )
    noise = full - clean - background
    particle_snr = float(clean.var() / noise.var())
    background_to_particle = float(background.std() / clean.std())
    return (
        f"dataset: {dataset_dir} ({len(manifest['micrographs'])} micrographs, {len(coordinates)} particles in {name})\n"
        f"picture: {picture}\n"
        f"per-pixel SNR of the particle signal {particle_snr:.3f}; background/particle contrast {background_to_particle:.2f}"
    )
