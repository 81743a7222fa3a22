"""Physics of the simulator: CTF, projection, particle placement, dose and drift."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch_fourier_shift import fourier_shift_image_2d

from cryoscore.errors import InputError
from cryoscore.simulate.ctf import CtfParams, ctf_2d, electron_wavelength_a, interaction_constant_rad_per_v_a
from cryoscore.simulate.detector import IDEAL, sample_counts
from cryoscore.simulate.dose import counts_per_pixel_per_frame, drift_sum, drift_trajectory, sample_frames
from cryoscore.simulate.micrograph import particle_contrast, place_particles
from cryoscore.simulate.procedural import builtin_specimen
from cryoscore.simulate.project import euler_to_matrices, project_potential, random_orientations


def test_electron_optics_constants_match_tabulated_values():
    # Kirkland, Advanced Computing in Electron Microscopy, table 2.1 / eq. 5.6.
    assert electron_wavelength_a(300) == pytest.approx(0.019687, rel=1e-4)
    assert electron_wavelength_a(200) == pytest.approx(0.025079, rel=1e-4)
    assert interaction_constant_rad_per_v_a(300) == pytest.approx(6.526e-4, rel=2e-3)


def _ctf_zero_frequencies(defocus_um: float, params: CtfParams, count: int) -> np.ndarray:
    """First ``count`` zeros (1/A) of sqrt(1-A^2) sin(chi) + A cos(chi), chi = pi l df k^2 - pi/2 Cs l^3 k^4."""
    wavelength = electron_wavelength_a(params.voltage_kv)
    defocus_a, cs_a = defocus_um * 1e4, params.cs_mm * 1e7
    offset = math.atan2(params.amplitude_contrast, math.sqrt(1 - params.amplitude_contrast**2))
    zeros = []
    for n in range(1, count + 1):
        chi = n * math.pi - offset
        # pi/2 Cs l^3 u^2 - pi l df u + chi = 0 with u = k^2; the small root is the first branch.
        a, b, c = math.pi / 2 * cs_a * wavelength**3, -math.pi * wavelength * defocus_a, chi
        u = (-b - math.sqrt(b * b - 4 * a * c)) / (2 * a)
        zeros.append(math.sqrt(u))
    return np.array(zeros)


@pytest.mark.parametrize("angle_deg", [0.0, 35.0, 110.0])
@pytest.mark.parametrize("defocus_u_um, defocus_v_um", [(2.0, 1.4), (1.4, 2.0)])  # U < V as some STAR files have
def test_ctf_zeros_sit_where_the_formula_puts_them(angle_deg, defocus_u_um, defocus_v_um):
    params = CtfParams(defocus_u_um=defocus_u_um, defocus_v_um=defocus_v_um, astigmatism_angle_deg=angle_deg,
                       bfactor_a2=0.0)
    pixel_size, size = 1.0, 1024
    ctf = ctf_2d(params, (size, size), pixel_size, rfft=False).numpy()
    for axis_angle, defocus in ((angle_deg, params.defocus_u_um), (angle_deg + 90, params.defocus_v_um)):
        direction = np.deg2rad(axis_angle)
        for zero in _ctf_zero_frequencies(defocus, params, 4):
            # Sample the CTF along the axis just before and after the predicted zero: it changes sign.
            values = []
            for offset in (-0.003, 0.003):
                kx, ky = (zero + offset) * np.cos(direction), (zero + offset) * np.sin(direction)
                col, row = int(round(kx * size * pixel_size)), int(round(ky * size * pixel_size))
                values.append(ctf[row % size, col % size])
            assert values[0] * values[1] < 0, (axis_angle, zero, values)


def test_ctf_low_frequency_is_amplitude_contrast_and_bfactor_damps():
    params = CtfParams(defocus_u_um=1.5, defocus_v_um=1.5, bfactor_a2=100.0)
    ctf = ctf_2d(params, (256, 256), 1.0)
    assert ctf[0, 0].item() == pytest.approx(0.07, abs=1e-4)
    sharp = ctf_2d(CtfParams(1.5, 1.5), (256, 256), 1.0)
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(256), np.fft.rfftfreq(256), indexing="ij"))
    expected = sharp.numpy() * np.exp(-100.0 * k**2 / 4)
    np.testing.assert_allclose(ctf.numpy(), expected, atol=1e-5)


def test_projection_along_a_fourfold_axis_is_fourfold_symmetric():
    specimen = builtin_specimen("apoferritin", 3.0)
    volume = torch.from_numpy(specimen.volume_v)
    angles = np.array([[0.0, 0.0, 0.0], [90.0, 0.0, 0.0], [0.0, 90.0, 0.0]])
    projections = project_potential(volume, angles, specimen.pixel_size_a).numpy()
    top = projections[0, 1:, 1:]  # odd-sized, centred on the rotation centre D//2
    scale = np.abs(top).max()
    assert np.abs(np.rot90(top) - top).max() < 1e-3 * scale
    # 90 degrees about z, and the 4-fold axis along x seen from the side, give the same view.
    assert np.abs(projections[1] - projections[0]).max() < 1e-3 * scale
    assert np.abs(projections[2] - projections[0]).max() < 2e-2 * scale


@pytest.mark.parametrize("name", ["apoferritin", "elongated", "small"])
def test_projected_potential_integrates_the_volume(name):
    # sum(P) * px^2 = sum(V) * px^3. torch-fourier-slice's sinc^2 gridding correction is
    # exact only on average over orientations: individual views are up to ~8% high at the
    # periphery of large particles (10% for grid-aligned views), the mean about 2% high.
    specimen = builtin_specimen(name, 3.0)
    angles = random_orientations(40, np.random.default_rng(0))
    projections = project_potential(torch.from_numpy(specimen.volume_v), angles, specimen.pixel_size_a).numpy()
    ratios = projections.sum(axis=(1, 2)) / (specimen.volume_v.sum() * specimen.pixel_size_a)
    assert ratios.mean() == pytest.approx(1.0, abs=0.03)
    assert ratios.min() > 0.99 and ratios.max() < 1.09


def test_projection_of_an_asymmetric_specimen_is_not_fourfold():
    specimen = builtin_specimen("elongated", 4.0)
    top = project_potential(torch.from_numpy(specimen.volume_v), np.zeros((1, 3)), 4.0).numpy()[0, 1:, 1:]
    assert np.abs(np.rot90(top) - top).max() > 0.3 * np.abs(top).max()


def test_random_orientations_are_uniform_on_the_sphere():
    angles = random_orientations(20000, np.random.default_rng(0))
    view_directions = euler_to_matrices(angles).numpy()[:, :, 2]  # where the beam axis points
    assert np.abs(view_directions.mean(axis=0)).max() < 0.02
    # Uniform on the sphere: the z component is uniform on [-1, 1].
    assert np.var(view_directions[:, 2]) == pytest.approx(1 / 3, abs=0.01)


def test_subpixel_shift_moves_content_towards_higher_index():
    """The convention the simulator, extraction and 2D classes rely on (torch-fourier-shift)."""
    rows, cols = np.mgrid[:64, :64]
    image = np.exp(-((rows - 30.0) ** 2 + (cols - 20.0) ** 2) / 18.0).astype(np.float32)
    shifted = fourier_shift_image_2d(torch.from_numpy(image)[None], torch.tensor([[2.25, -3.5]]))[0].numpy()
    centroid = [(shifted * grid).sum() / shifted.sum() for grid in (rows, cols)]
    np.testing.assert_allclose(centroid, [32.25, 16.5], atol=1e-3)


def test_particles_do_not_overlap_and_stay_inside():
    rng = np.random.default_rng(1)
    centres = place_particles(rng, (512, 640), 30, 50.0)
    assert centres.shape == (30, 2)
    distances = np.hypot(*(centres[:, None, :] - centres[None, :, :]).transpose(2, 0, 1))
    assert distances[~np.eye(30, dtype=bool)].min() >= 50.0
    assert centres.min() >= 25 and centres[:, 0].max() <= 511 - 25 and centres[:, 1].max() <= 639 - 25


def test_clusters_and_edge_particles():
    rng = np.random.default_rng(2)
    clustered = place_particles(rng, (1024, 1024), 40, 40.0, cluster_fraction=0.8)
    distances = np.hypot(*(clustered[:, None, :] - clustered[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(distances, np.inf)
    touching = (distances.min(axis=1) <= 40.0 * 1.15 + 1e-9).mean()
    assert touching > 0.6
    edge = place_particles(np.random.default_rng(3), (256, 256), 40, 30.0, edge_particles=True)
    assert (np.minimum(edge, 255 - edge).min(axis=1) < 15).any()


def test_too_many_particles_is_a_clear_input_error():
    with pytest.raises(InputError, match="--particles"):
        place_particles(np.random.default_rng(0), (128, 128), 50, 40.0)


def test_particle_contrast_is_dark_and_centred_on_the_particle():
    specimen = builtin_specimen("apoferritin", 2.0)
    centres = np.array([[100.0, 150.5], [220.25, 60.0]])
    contrast = particle_contrast(
        torch.from_numpy(specimen.volume_v), 2.0, np.zeros((2, 3)), centres, (300, 300), CtfParams(1.2, 1.2)
    ).numpy()
    radius = specimen.diameter_a / 2 / 2.0
    rows, cols = np.mgrid[:300, :300]
    for row, col in centres:
        inside = np.hypot(rows - row, cols - col) < radius
        assert contrast[inside].mean() < -0.01  # particles are dark at underfocus
        weights = np.clip(-contrast, 0, None) * inside
        centroid = [(weights * grid).sum() / weights.sum() for grid in (rows, cols)]
        np.testing.assert_allclose(centroid, [row, col], atol=1.0)
    far = np.min([np.hypot(rows - r, cols - c) for r, c in centres], axis=0) > 3 * radius
    assert np.abs(contrast[far]).max() < 0.05 * np.abs(contrast).max()


def test_counts_match_dose_times_pixel_area():
    generator = torch.Generator().manual_seed(0)
    per_frame = counts_per_pixel_per_frame(dose_e_per_a2=30.0, n_frames=10, pixel_size_a=1.3)
    frames = list(sample_frames(torch.full((256, 256), per_frame), np.zeros((10, 2)), generator))
    total = torch.stack(frames).sum(0).numpy()
    expected = 30.0 * 1.3**2
    assert total.mean() == pytest.approx(expected, abs=4 * math.sqrt(expected / total.size))
    assert total.var() == pytest.approx(expected, rel=0.03)  # Poisson: variance = mean
    assert np.array_equal(total, np.round(total))


def test_drift_sum_equals_the_sum_of_shifted_frames():
    rng = np.random.default_rng(4)
    shifts = drift_trajectory(rng, 12, total_drift_px=3.0)
    assert np.linalg.norm(shifts[-1] - shifts[0]) == pytest.approx(3.0)
    np.testing.assert_allclose(shifts.mean(axis=0), 0, atol=1e-12)
    image = torch.from_numpy(rng.random((64, 48), dtype=np.float32))
    explicit = fourier_shift_image_2d(image.expand(12, -1, -1), torch.from_numpy(shifts).float()).sum(0)
    np.testing.assert_allclose(drift_sum(image, shifts).numpy(), explicit.numpy(), atol=1e-4)
    assert torch.equal(drift_sum(image, np.zeros((5, 2))), image * 5)


def test_poisson_clips_ringing_below_zero():
    counts = sample_counts(torch.tensor([[-1e-3, 0.0, 4.0]]), IDEAL, torch.Generator().manual_seed(0))[0]
    assert counts[0] == 0 and counts[1] == 0
