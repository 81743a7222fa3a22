"""``cryoscore demo``: the main job on built-in data, with no download.

At this stage of the project: simulate a small apoferritin dataset with structured
background, denoise it with the default model shipped in the package, and write a
picture of one micrograph, its denoised version and the ground truth.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from cryoscore.infer.denoise import denoise_image, load_denoiser
from cryoscore.io.coords import read_coordinates
from cryoscore.io.layout import DatasetLayout, read_manifest
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


def _bin(image: np.ndarray, factor: int) -> np.ndarray:
    height, width = (dimension // factor * factor for dimension in image.shape)
    return image[:height, :width].reshape(height // factor, factor, width // factor, factor).mean(axis=(1, 3))


def run_demo(output_dir: str | Path, *, seed: int = 0) -> str:
    """Simulate the demo dataset into ``output_dir``, denoise and draw it; returns a short summary."""
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
    denoiser = load_denoiser()
    denoised = {}
    for each in layout.micrograph_names():
        image, pixel_size = read_mrc(layout.micrograph(each))
        denoised[each] = denoise_image(denoiser, image)
        write_mrc(output_dir / "denoised" / f"{each}.mrc", denoised[each], pixel_size)
    factor = 2
    picture = output_dir / "overview.png"
    write_panels_png(
        picture,
        [
            ("full sum (raw counts)", _bin(full, factor)),
            ("denoised (default model)", _bin(denoised[name], factor)),
            ("truth: particles (clean)", _bin(clean, factor)),
            ("truth: background (ice, carbon)", _bin(background, factor)),
        ],
        circles_rc=np.stack([coordinates.y_px, coordinates.x_px], axis=1) / factor,
        circle_radius_px=manifest["particle_diameter_a"] / manifest["pixel_size_a"] / 2 / factor,
    )
    noise_free = clean + background
    noise = full - noise_free
    particle_snr = float(clean.var() / noise.var())
    background_to_particle = float(background.std() / clean.std())
    return (
        f"dataset: {dataset_dir} ({len(manifest['micrographs'])} micrographs, {len(coordinates)} particles in {name})\n"
        f"picture: {picture}\n"
        f"per-pixel SNR of the particle signal {particle_snr:.3f}; background/particle contrast {background_to_particle:.2f}\n"
        f"denoised: {output_dir / 'denoised'}; correlation with the noise-free image (particles + background): raw "
        f"{correlation(full, noise_free):.3f}, denoised {correlation(denoised[name], noise_free):.3f}"
    )
