"""Whole simulated micrographs: halves, ground truth, files and reproducibility."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import mrcfile
import numpy as np
import pytest
import starfile
from scipy import ndimage

from cryoscore.io.coords import read_coordinates
from cryoscore.io.layout import DatasetLayout
from cryoscore.io.mrc import open_mrc_stack, read_mrc
from cryoscore.simulate.background import BackgroundParams
from cryoscore.simulate.dataset import SimulationConfig, render_truth, sample_halves, write_dataset
from cryoscore.simulate.procedural import builtin_specimen

SMALL = SimulationConfig(
    specimen="apoferritin",
    n_micrographs=2,
    size_px=256,
    pixel_size_a=3.0,
    particles_per_micrograph=12,
    dose_e_per_a2=60.0,
    n_frames=8,
    seed=5,
)


@pytest.fixture(scope="module")
def apoferritin_3a():
    return builtin_specimen("apoferritin", 3.0)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def test_even_and_odd_noise_are_independent_while_their_signal_correlates(apoferritin_3a):
    truth = render_truth(SMALL, apoferritin_3a, 0)
    even, odd = (half.numpy() for half in sample_halves(truth))
    expected_half = ((truth.clean + truth.background) / 2).numpy()
    noise_even, noise_odd = even - expected_half, odd - expected_half
    n = even.size
    assert abs(_corr(noise_even, noise_odd)) < 4 / math.sqrt(n)
    # Poisson noise: variance equals the mean count.
    assert noise_even.var() == pytest.approx(expected_half.mean(), rel=0.05)
    # The signal is shared: low-passed halves correlate strongly, and each correlates with the truth.
    smooth = lambda image: ndimage.gaussian_filter(image, 4)  # noqa: E731
    assert _corr(smooth(even), smooth(odd)) > 0.5
    assert _corr(even, truth.clean.numpy()) > 0.05


def test_clean_plus_background_is_the_expected_sum(apoferritin_3a):
    truth = render_truth(SMALL, apoferritin_3a, 1)
    full = sum(half.numpy() for half in sample_halves(truth))
    residual = full - truth.clean.numpy() - truth.background.numpy()
    assert abs(residual.mean()) < 4 * math.sqrt(full.mean() / full.size)
    # Away from particles the clean image is zero: the background carries the ice.
    assert truth.background.numpy().mean() == pytest.approx(60.0 * 3.0**2, rel=0.1)


def test_star_coordinates_land_on_particles_in_the_clean_image(tmp_path, apoferritin_3a):
    layout = DatasetLayout(tmp_path / "data")
    write_dataset(SMALL, layout.root, progress=False)
    radius_px = apoferritin_3a.diameter_a / 2 / SMALL.pixel_size_a
    for name in layout.micrograph_names():
        clean, _ = read_mrc(layout.clean(name))
        coordinates = read_coordinates(layout.coordinates(name))
        assert len(coordinates) == SMALL.particles_per_micrograph
        dark = np.clip(-ndimage.gaussian_filter(clean, 1.5), 0, None)  # particles are dark
        rows, cols = np.mgrid[: clean.shape[0], : clean.shape[1]]
        for row, col in zip(coordinates.y_px, coordinates.x_px):
            inside = np.hypot(rows - row, cols - col) < radius_px
            outside = (np.hypot(rows - row, cols - col) > 1.5 * radius_px) & (
                np.hypot(rows - row, cols - col) < 2.5 * radius_px
            )
            # Each coordinate sits on a particle: much darker inside than in the ring around it...
            assert dark[inside].mean() > 3 * dark[outside].mean()
            # ...and on its centre: the darkness is centred on the coordinate.
            weights = dark * inside
            centroid = [(weights * grid).sum() / weights.sum() for grid in (rows, cols)]
            assert math.hypot(centroid[0] - row, centroid[1] - col) < 1.5


def test_dataset_layout_manifest_and_relion_star(tmp_path):
    root = tmp_path / "data"
    manifest_path = write_dataset(SMALL, root, command_line=["cryoscore", "simulate"], progress=False)
    manifest = json.loads(manifest_path.read_text())
    assert manifest["pixel_size_a"] == 3.0 and manifest["seed"] == 5 and manifest["n_frames"] == 8
    assert manifest["particle_diameter_a"] == pytest.approx(120, rel=0.15)
    assert len(manifest["micrographs"]) == 2
    entry = manifest["micrographs"][0]
    assert entry["ctf"]["voltage_kv"] == 300.0 and 1.0 <= entry["ctf"]["defocus_u_um"] <= 2.6
    for kind in ("even", "odd", "clean", "background"):
        assert kind in entry["files"][kind]
    assert not any(word in entry["files"]["micrograph"] for word in ("even", "odd", "clean", "background"))
    with mrcfile.open(root / "reference.mrc") as reference:
        assert reference.voxel_size.x == pytest.approx(3.0)
        assert reference.data.ndim == 3
    with mrcfile.open(root / entry["files"]["micrograph"]) as micrograph:
        assert micrograph.data.shape == (256, 256) and micrograph.voxel_size.x == pytest.approx(3.0)
    star = starfile.read(root / entry["files"]["coordinates"])
    for column in ("rlnCoordinateX", "rlnCoordinateY", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi",
                   "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle"):
        assert column in star.columns
    assert star["rlnDefocusU"].iloc[0] == pytest.approx(entry["ctf"]["defocus_u_um"] * 1e4)


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    config = replace(SMALL, n_micrographs=1)
    first, second = (DatasetLayout(tmp_path / tag) for tag in ("a", "b"))
    write_dataset(config, first.root, progress=False)
    write_dataset(config, second.root, progress=False)
    for kind in ("micrograph", "even", "odd", "clean", "background", "coordinates"):
        assert getattr(first, kind)("mic_0000").read_bytes() == getattr(second, kind)("mic_0000").read_bytes(), kind
    other = DatasetLayout(tmp_path / "c")
    write_dataset(replace(config, seed=6), other.root, progress=False)
    assert read_mrc(other.even("mic_0000"))[0].tobytes() != read_mrc(first.even("mic_0000"))[0].tobytes()


def test_written_frames_sum_to_the_written_halves_with_drift(tmp_path):
    config = replace(
        SMALL, n_micrographs=1, n_frames=6, write_frames=True, drift_a=6.0,
        background=BackgroundParams(carbon_edge=True, n_contamination=1),
    )
    layout = DatasetLayout(tmp_path / "data")
    write_dataset(config, layout.root, progress=False)
    with open_mrc_stack(layout.frames("mic_0000")) as frames:
        assert len(frames) == 6
        stack = np.stack([frames[i] for i in range(6)])
    np.testing.assert_array_equal(read_mrc(layout.even("mic_0000"))[0], stack[0::2].sum(0))
    np.testing.assert_array_equal(read_mrc(layout.odd("mic_0000"))[0], stack[1::2].sum(0))
    full = read_mrc(layout.micrograph("mic_0000"))[0]
    truth = read_mrc(layout.clean("mic_0000"))[0] + read_mrc(layout.background("mic_0000"))[0]
    assert abs((full - truth).mean()) < 4 * math.sqrt(full.mean() / full.size)
    manifest = json.loads(layout.manifest.read_text())
    assert manifest["micrographs"][0]["drift_px"] == pytest.approx(2.0)


def test_background_strength_controls_low_frequency_structure(apoferritin_3a):
    flat = replace(SMALL, background=BackgroundParams(strength=0.0))
    strong = replace(SMALL, background=BackgroundParams(strength=2.0))
    flat_bg = render_truth(flat, apoferritin_3a, 0).background.numpy()
    strong_bg = render_truth(strong, apoferritin_3a, 0).background.numpy()
    assert flat_bg.std() < 1e-4 * flat_bg.mean()
    assert strong_bg.std() > 0.02 * strong_bg.mean()
    # Low frequency: smoothing over a particle diameter leaves nearly all of its variance.
    assert ndimage.gaussian_filter(strong_bg, 20).var() > 0.8 * strong_bg.var()


def test_contrast_scale_fades_the_particles_and_nothing_else(apoferritin_3a):
    faint = replace(SMALL, contrast_scale=0.25, background=BackgroundParams(vitreous_ice_a=200.0))
    full = replace(faint, contrast_scale=1.0)
    faint_truth, full_truth = (render_truth(config, apoferritin_3a, 0) for config in (faint, full))
    # Same micrograph (positions, poses, CTF, ice): the particle signal is a quarter, the ice untouched.
    np.testing.assert_array_equal(faint_truth.centres_rc, full_truth.centres_rc)
    atol = 1e-3  # electron counts; the particles' signal is far above it, so the comparison means something
    assert np.abs(full_truth.clean.numpy()).max() > 10 * atol
    np.testing.assert_allclose(faint_truth.clean.numpy(), 0.25 * full_truth.clean.numpy(), rtol=1e-4, atol=atol)
    np.testing.assert_array_equal(faint_truth.background.numpy(), full_truth.background.numpy())
    with pytest.raises(ValueError, match="--contrast-scale"):
        replace(SMALL, contrast_scale=0.0)
