"""3D reconstruction as a judge: extraction, poses, CTF-corrected insertion, FSC, pipeline."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from torch_fourier_rescale import fourier_rescale_3d
from torch_fourier_shift import fourier_shift_image_2d

from cryoscore.errors import InputError
from cryoscore.io.coords import ParticleCoordinates, read_coordinates, write_coordinates
from cryoscore.io.layout import DatasetLayout, read_manifest
from cryoscore.reconstruct.ctf import ctf_stack, particle_ctfs
from cryoscore.reconstruct.extract import (
    downsample_particles,
    extract_particles,
    extract_picked_particles,
    extraction_box_px,
    read_picked_micrographs,
)
from cryoscore.reconstruct.fsc import FscCurve, fourier_shell_correlation, phase_randomised_fsc
from cryoscore.reconstruct.grid import (
    centred_rfft2,
    resample_volume,
    soft_sphere_mask,
    symmetrise_volume,
)
from cryoscore.reconstruct.insert import reconstruct_half_maps, reconstruct_map
from cryoscore.reconstruct.pipeline import reconstruct_dataset, reconstruct_from_picks, reconstruct_micrographs
from cryoscore.reconstruct.poses import _Band, _BandProjector, assign_poses, point_group_rotations
from cryoscore.settings import PoseSearchConfig, ReconstructionSettings, SettingError
from cryoscore.simulate.ctf import CtfParams
from cryoscore.simulate.dataset import SimulationConfig, render_truth, sample_halves, write_dataset
from cryoscore.simulate.detector import IDEAL, sample_counts
from cryoscore.simulate.procedural import builtin_specimen
from cryoscore.simulate.project import euler_to_matrices, project_potential, random_orientations
from cryoscore.simulate.specimen import octahedral_rotations


def _ctf_modulated(projections: torch.Tensor, ctfs: torch.Tensor) -> torch.Tensor:
    """Projections (N, B, B) centred at B//2, filtered by CTFs (N, B, B//2+1)."""
    size = projections.shape[-1]
    spectra = centred_rfft2(projections) * ctfs
    return torch.fft.fftshift(torch.fft.irfft2(spectra, s=(size, size)), dim=(-2, -1))


def _misorientation_deg(found: torch.Tensor, true: torch.Tensor, symmetry_ops: np.ndarray) -> np.ndarray:
    """Angle (degrees) of found^T g true, minimised over the symmetry operators g (k, 3, 3)."""
    found64, true64 = found.double().numpy(), true.double().numpy()
    angles = [
        Rotation.from_matrix(np.einsum("nji,jk,nkl->nil", found64, op, true64)).magnitude() for op in symmetry_ops
    ]
    return np.degrees(np.min(angles, axis=0))


# --------------------------------------------------------------------------- grids and FSC


def test_downsample_particles_keeps_the_centre_and_the_values():
    axis = torch.arange(64, dtype=torch.float32) - 32
    blob = torch.exp(-(axis[:, None] ** 2 + axis[None, :] ** 2) / (2 * 6.0**2)) + 2.0
    small = downsample_particles(blob[None], 32)[0]
    assert small.shape == (32, 32)
    assert torch.argmax(small).item() == 16 * 32 + 16  # centre pixel 32 -> 16
    assert float(small[0, 0]) == pytest.approx(2.0, abs=1e-3)  # values, not sums, are kept
    assert float(small[16, 16]) == pytest.approx(3.0, abs=1e-2)


def test_resample_volume_refuses_incommensurate_pixel_sizes():
    volume = np.zeros((40, 40, 40), dtype=np.float32)
    assert resample_volume(volume, 4.0, 32, 5.0).shape == (32, 32, 32)  # 40 x 4 A = 32 x 5 A
    with pytest.raises(InputError, match="resample it"):
        resample_volume(volume, 4.0, 32, 5.1)  # 163.2 A vs 160 A
    values = np.random.default_rng(0).normal(size=(40, 40, 40)).astype(np.float32)
    same_grid = resample_volume(values, 2.0, 36, 2.0)  # only cut about the centre voxel, values kept exactly
    assert torch.equal(same_grid, torch.from_numpy(values[2:38, 2:38, 2:38]))


def test_fsc_resolution_is_interpolated_between_shells():
    frequency = np.fft.rfftfreq(20, d=2.0)  # 0 ... 0.25 1/A in steps of 0.025
    correlation = np.array([1.0, 0.9, 0.6, 0.2, 0.1, 0.05, 0, 0, 0, 0, 0])
    curve = FscCurve(frequency, correlation)
    # 0.5 lies a quarter of the way from shell 2 (0.05 1/A) to shell 3 (0.075 1/A).
    assert curve.resolution_a(0.5) == pytest.approx(1 / 0.05625)
    assert curve.resolution_a(0.143) == pytest.approx(1 / (0.075 + 0.57 * 0.025))
    assert FscCurve(frequency, np.ones(11)).resolution_a(0.143) == pytest.approx(4.0)  # Nyquist
    assert FscCurve(frequency, np.zeros(11)).resolution_a(0.143) == math.inf


def test_phase_randomisation_removes_what_the_mask_edge_correlates_and_keeps_shared_detail():
    """Two images of independent noise that share only a flat offset, which the disc mask's edge
    cuts: masked, their FRC stays above 0.143 to Nyquist (4 A); corrected beyond 20 A it falls
    there. Two images that share detail at every frequency keep Nyquist."""
    box, pixel_size_a = 64, 2.0
    generator = torch.Generator().manual_seed(0)
    mask = soft_sphere_mask(box, 2, 20.0, 2.0)
    first, second = (1.0 + 0.05 * torch.randn(box, box, generator=generator) for _ in range(2))
    masked = fourier_shell_correlation(first, second, pixel_size_a, mask)
    assert masked.resolution_a(0.143) == pytest.approx(4.0)
    corrected = phase_randomised_fsc(first, second, pixel_size_a, mask, randomise_beyond_a=20.0)
    assert corrected.resolution_a(0.143) > 15.0
    coarse = corrected.frequency_per_a <= 1 / 20.0
    np.testing.assert_array_equal(corrected.correlation[coarse], masked.correlation[coarse])
    detail = torch.randn(box, box, generator=generator)
    first, second = (detail + 0.5 * torch.randn(box, box, generator=generator) for _ in range(2))
    assert phase_randomised_fsc(first, second, pixel_size_a, mask, 20.0).resolution_a(0.143) == pytest.approx(4.0)


@pytest.mark.parametrize("symmetry, order", [("C1", 1), ("c4", 4), ("C7", 7), ("D2", 4), ("D5", 10), ("O", 24)])
def test_point_groups_are_closed_groups_of_rotations(symmetry, order):
    rotations = point_group_rotations(symmetry)
    assert rotations.shape == (order, 3, 3)
    np.testing.assert_allclose(rotations[0], np.eye(3), atol=1e-12)
    np.testing.assert_allclose(np.einsum("kji,kjl->kil", rotations, rotations), np.broadcast_to(np.eye(3), rotations.shape),
                               atol=1e-12)
    assert np.allclose(np.linalg.det(rotations), 1.0)
    products = np.einsum("aij,bjk->abik", rotations, rotations).reshape(-1, 1, 3, 3)
    distance = np.abs(products - rotations[None]).max(axis=(-2, -1)).min(axis=1)
    assert distance.max() < 1e-9  # every product is in the group
    z_axis = np.array([0.0, 0.0, 1.0])
    if symmetry.upper().startswith("C"):  # turns about z only
        np.testing.assert_allclose(rotations @ z_axis, np.broadcast_to(z_axis, (order, 3)), atol=1e-12)


def test_symmetrising_averages_a_map_over_its_point_group():
    rng = np.random.default_rng(3)
    noise = torch.from_numpy(rng.standard_normal((15, 15, 15)).astype(np.float32))  # centre voxel 7
    averaged = symmetrise_volume(noise, point_group_rotations("O"))
    # Invariant under the group's exact voxel permutations: a four-fold about z, x -> y.
    four_fold_z = torch.rot90(averaged, k=1, dims=(1, 2))
    np.testing.assert_allclose(four_fold_z.numpy(), averaged.numpy(), atol=1e-5)
    np.testing.assert_allclose(averaged.permute(2, 1, 0).flip(0).numpy(), averaged.numpy(), atol=1e-5)  # about y
    # A general voxel has 24 distinct images: its variance falls 24-fold.
    general = averaged[1:-1, 1:-1, 1:-1].numpy()
    assert 1 / 24 * 0.7 < general.var() < 1 / 24 * 2.0
    # A map that already has the symmetry is left as it is.
    shell = torch.from_numpy(builtin_specimen("apoferritin", 4.0).volume_v)
    np.testing.assert_allclose(symmetrise_volume(shell, point_group_rotations("O")).numpy(), shell.numpy(),
                               atol=1e-5 * float(shell.abs().max()))
    c4 = symmetrise_volume(noise, point_group_rotations("C4"))
    np.testing.assert_allclose(torch.rot90(c4, k=1, dims=(1, 2)).numpy(), c4.numpy(), atol=1e-5)
    assert not np.allclose(torch.rot90(c4, k=1, dims=(0, 1)).numpy(), c4.numpy(), atol=1e-2)  # no four-fold about x


# --------------------------------------------------------------------------- extraction


def test_extract_particles_centres_normalises_and_inverts_contrast():
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:200, 0:240]
    centre_x, centre_y = 101.3, 80.6
    dark_blob = -30.0 * np.exp(-((cols - centre_x) ** 2 + (rows - centre_y) ** 2) / (2 * 4.0**2))
    micrograph = 1000.0 + 0.5 * cols - 0.3 * rows + dark_blob + rng.normal(0, 2.0, rows.shape)
    centres = np.array([[centre_x, centre_y], [3.0, 190.0], [-4.0, 50.0]])
    particles, kept = extract_particles(micrograph, centres, 40)
    assert kept.tolist() == [True, True, False]  # the last centre is off the micrograph
    assert particles.shape == (2, 40, 40) and particles.dtype == torch.float32
    assert torch.isfinite(particles).all()  # the box cut by the edge is filled with its local mean
    particle = particles[0].numpy()
    assert particle[18:23, 18:23].mean() > 10  # dark in the micrograph, positive here
    weights = np.clip(particle, 0, None) * (particle > 3)
    yy, xx = np.mgrid[0:40, 0:40]
    assert (weights * yy).sum() / weights.sum() == pytest.approx(20.0, abs=0.1)
    assert (weights * xx).sum() / weights.sum() == pytest.approx(20.0, abs=0.1)
    background = (yy - 20) ** 2 + (xx - 20) ** 2 > 15**2  # the gradient is gone, the noise has unit std
    assert abs(particle[background].mean()) < 0.1
    assert particle[background].std() == pytest.approx(1.0, rel=0.1)


def test_extraction_box_and_bad_inputs():
    assert extraction_box_px(31.25) == 48
    none, kept = extract_particles(np.zeros((64, 64)), np.zeros((0, 2)), 32)
    assert none.shape == (0, 32, 32) and kept.shape == (0,)
    assert downsample_particles(none, 16).shape == (0, 16, 16)  # a micrograph without picks
    assert extraction_box_px(30.0, 2.0) == 60
    with pytest.raises(InputError, match="larger than"):
        extract_particles(np.zeros((64, 64)), np.array([[32.0, 32.0]]), 80)
    micrograph = np.random.default_rng(1).normal(size=(128, 128)).astype(np.float32)
    reference = np.zeros((32, 32, 32), dtype=np.float32)
    picks = ParticleCoordinates(x_px=np.array([40.0, 80.0]), y_px=np.array([40.0, 80.0]))
    ctf = CtfParams(1.5, 1.5)
    with pytest.raises(InputError, match="one of each per micrograph"):
        reconstruct_from_picks([micrograph], [picks, picks], [ctf], reference, 4.0, 60.0)
    outside = ParticleCoordinates(x_px=np.array([-50.0, 500.0]), y_px=np.array([40.0, 40.0]))
    with pytest.raises(InputError, match="0 of 2 picks"):
        reconstruct_from_picks([micrograph], [outside], [ctf], reference, 4.0, 60.0)
    with pytest.raises(InputError, match="larger than"):
        reconstruct_from_picks([micrograph], [picks], [ctf], reference, 4.0, 400.0)
    with pytest.raises(SettingError, match="Nyquist") as error:  # 4 A/px boxed at 1.5 x 60 A: Nyquist 8 A
        reconstruct_from_picks([micrograph], [picks], [ctf], reference, 4.0, 60.0,
                               ReconstructionSettings(reference_resolution_a=6.0))
    assert error.value.field == "reference_resolution_a"
    for field, value in (("box_px", 15), ("max_particles", 1), ("box_over_diameter", 0.5)):
        with pytest.raises(SettingError) as error:
            ReconstructionSettings(**{field: value})
        assert error.value.field == field


def test_particle_ctfs_take_per_particle_defocus_from_the_coordinates():
    micrograph_ctf = CtfParams(2.0, 1.8, 30.0, bfactor_a2=50.0)
    plain = ParticleCoordinates(x_px=np.zeros(2), y_px=np.zeros(2))
    assert particle_ctfs(plain, micrograph_ctf) == [micrograph_ctf, micrograph_ctf]
    annotated = ParticleCoordinates(
        x_px=np.zeros(2), y_px=np.zeros(2), defocus_u_a=np.array([12000.0, 15000.0]),
        defocus_v_a=np.array([11000.0, 14000.0]), defocus_angle_deg=np.array([10.0, 20.0]),
    )
    first, second = particle_ctfs(annotated, micrograph_ctf)
    assert (first.defocus_u_um, first.defocus_v_um, first.astigmatism_angle_deg) == (1.2, 1.1, 10.0)
    assert second.defocus_u_um == 1.5 and second.bfactor_a2 == 50.0
    assert ctf_stack([first, second, first], 32, 3.0).shape == (3, 32, 17)


def test_a_micrograph_star_file_replaces_the_picks_per_particle_defocus_for_every_stage(tmp_path):
    """reconstruct and classify2d read real micrographs the same way: the CTFs of ``--ctf``
    apply to every particle, whatever defocus the pick files carry; the header gives the pixel size."""
    from cryoscore.io.ctf_star import MicrographCtf, write_ctf_star
    from cryoscore.io.mrc import write_mrc

    rng = np.random.default_rng(0)
    (tmp_path / "mics").mkdir()
    (tmp_path / "picks").mkdir()
    paths = []
    for name in ("a", "b"):
        paths.append(tmp_path / "mics" / f"{name}.mrc")
        write_mrc(paths[-1], rng.normal(size=(96, 96)).astype(np.float32), 2.5)
        write_coordinates(tmp_path / "picks" / f"{name}.star", ParticleCoordinates(
            x_px=np.array([30.0, 60.0]), y_px=np.array([40.0, 50.0]), defocus_u_a=np.array([9000.0, 9100.0]),
            defocus_v_a=np.array([8800.0, 8900.0]), defocus_angle_deg=np.array([5.0, 6.0])))
    star_ctfs = [CtfParams(1.6, 1.5, 20.0), CtfParams(2.2, 2.1, 40.0)]
    write_ctf_star(tmp_path / "ctf.star", [MicrographCtf(path.name, ctf) for path, ctf in zip(paths, star_ctfs)],
                   2.5)

    with_star = read_picked_micrographs(paths, tmp_path / "picks", ctf_star=tmp_path / "ctf.star")
    assert with_star.pixel_size_a == pytest.approx(2.5) and with_star.ctfs == star_ctfs
    stack = extract_picked_particles(with_star.paths, with_star.picks, with_star.ctfs, with_star.pixel_size_a, 40.0, 32)
    assert stack.ctfs == [star_ctfs[0]] * 2 + [star_ctfs[1]] * 2
    without = read_picked_micrographs(paths, tmp_path / "picks", pixel_size_a=3.0)
    assert without.ctfs is None and without.pixel_size_a == 3.0
    assert np.array_equal(without.picks[0].defocus_u_a, [9000.0, 9100.0])  # kept for whoever has CTFs
    with pytest.raises(InputError, match="micrograph not found"):
        read_picked_micrographs([tmp_path / "mics" / "c.mrc"], tmp_path / "picks")


# --------------------------------------------------------------------------- projection conventions


def test_band_sections_match_torch_fourier_slice_projections():
    """The pose search's central sections are the spectra of project_3d_to_2d's projections."""
    volume = torch.from_numpy(builtin_specimen("elongated", 8.0).volume_v)
    band = _Band(volume.shape[-1], 12)
    rotations = euler_to_matrices(random_orientations(5, np.random.default_rng(2)))
    sections = _BandProjector(volume, band)(rotations)
    cropped = fourier_rescale_3d(volume, target_shape=(band.box,) * 3)[0]
    angles = Rotation.from_matrix(rotations.double().numpy()).as_euler("ZYZ", degrees=True)
    expected = band.gather(centred_rfft2(project_potential(cropped, angles, 1.0)))
    n_freq = len(band.jx)
    found = torch.complex(sections[:, :n_freq], sections[:, n_freq:])
    norms = (found.abs().pow(2).sum(dim=1) * expected.abs().pow(2).sum(dim=1)).sqrt()
    correlation = (found.conj() * expected).sum(dim=1).real / norms
    assert correlation.min() > 0.999
    scale = expected.abs().pow(2).sum() / (found.conj() * expected).sum().real
    assert float(scale) == pytest.approx(1.0, rel=0.02)


def test_true_poses_reconstruct_the_projected_volume_to_near_nyquist():
    """Euler-angle and shift conventions: the simulator's projections at known angles and
    shifts, inserted back with the same angles and shifts (no CTF, no noise), give the
    volume; transposed rotations or negated shifts do not."""
    pixel_size_a = 8.0
    volume = torch.from_numpy(builtin_specimen("elongated", pixel_size_a).volume_v)  # C1, 40 px
    box = volume.shape[-1]
    rng = np.random.default_rng(3)
    angles = random_orientations(200, rng)
    shifts = torch.from_numpy(rng.uniform(-2.0, 2.0, (200, 2))).to(torch.float32)
    projections = fourier_shift_image_2d(project_potential(volume, angles, 1.0), shifts)
    rotations = euler_to_matrices(angles)
    mask = soft_sphere_mask(box, 3, box / 2 - 4, 3)

    def fsc_with_truth(rotations: torch.Tensor, shifts: torch.Tensor) -> tuple[FscCurve, torch.Tensor]:
        reconstruction = reconstruct_map(projections, rotations, shifts, None, pixel_size_a, wiener_constant=1e-3)
        return fourier_shell_correlation(reconstruction, volume, pixel_size_a, mask), reconstruction

    curve, reconstruction = fsc_with_truth(rotations, shifts)
    nyquist = curve.frequency_per_a[-1]
    assert curve.correlation[curve.frequency_per_a <= 0.8 * nyquist].min() >= 0.9
    assert float((reconstruction * volume).sum() / (volume * volume).sum()) == pytest.approx(1.0, abs=0.05)
    for wrong_rotations, wrong_shifts in ((rotations.transpose(1, 2), shifts), (rotations, -shifts)):
        wrong, _ = fsc_with_truth(wrong_rotations, wrong_shifts)
        assert wrong.correlation[wrong.frequency_per_a <= 0.5 * nyquist].min() < 0.8


@pytest.mark.slow
def test_simulated_particles_at_true_poses_reconstruct_to_nyquist_and_noise_does_not():
    """Sign and CTF conventions against the simulator: dark particles on a micrograph,
    extracted (inverted) and reconstructed with their true angles and CTFs, give the
    specimen up to near Nyquist; pure noise boxes do not."""
    pixel_size_a = 8.0
    config = SimulationConfig(
        specimen="elongated", n_micrographs=6, size_px=384, pixel_size_a=pixel_size_a,
        particles_per_micrograph=45, dose_e_per_a2=100.0, n_frames=4, seed=4,
    )
    specimen = builtin_specimen("elongated", pixel_size_a)
    box = extraction_box_px(specimen.diameter_a / pixel_size_a)  # 48 px
    signal, noise, angles, ctfs = [], [], [], []
    generator = torch.Generator().manual_seed(0)
    for index in range(config.n_micrographs):
        truth = render_truth(config, specimen, index)
        micrograph = sum(sample_halves(truth)).numpy()
        blank = sample_counts(truth.background, IDEAL, generator).numpy()  # the same ice, no particles
        centres_xy = truth.centres_rc[:, ::-1]
        particles, kept = extract_particles(micrograph, centres_xy, box)
        assert kept.all()
        signal.append(particles)
        noise.append(extract_particles(blank, centres_xy, box)[0])
        angles.append(truth.angles_deg)
        ctfs.extend([truth.ctf] * len(particles))
    signal, noise = torch.cat(signal), torch.cat(noise)
    rotations = euler_to_matrices(np.concatenate(angles))
    n_particles = len(signal)
    assert n_particles >= 200
    halves = np.arange(n_particles) % 2 == 1
    truth_map = resample_volume(specimen.volume_v, pixel_size_a, box, pixel_size_a)
    mask = soft_sphere_mask(box, 3, specimen.diameter_a / 2 / pixel_size_a, 3)
    nyquist_a = 2 * pixel_size_a

    no_shifts = torch.zeros(n_particles, 2)
    half_1, half_2, full = reconstruct_half_maps(signal, rotations, no_shifts, ctfs, pixel_size_a, halves)
    half_map_resolution = fourier_shell_correlation(half_1, half_2, pixel_size_a, mask).resolution_a(0.143)
    against_truth = fourier_shell_correlation(full, truth_map, pixel_size_a, mask)
    assert half_map_resolution <= 1.2 * nyquist_a
    assert against_truth.resolution_a(0.5) <= 1.3 * nyquist_a
    assert against_truth.correlation[1:5].min() > 0.9  # positive: protein came out positive

    random_rotations = euler_to_matrices(random_orientations(n_particles, np.random.default_rng(5)))
    noise_1, noise_2, _ = reconstruct_half_maps(noise, random_rotations, no_shifts, ctfs, pixel_size_a, halves)
    noise_resolution = fourier_shell_correlation(noise_1, noise_2, pixel_size_a, mask).resolution_a(0.143)
    assert noise_resolution > 4 * nyquist_a


# --------------------------------------------------------------------------- pose assignment


def _clean_particles(name: str, pixel_size_a: float, box: int, n: int, seed: int):
    """CTF-modulated projections of a built-in specimen at random poses and shifts (< 3 px)."""
    specimen = builtin_specimen(name, pixel_size_a)
    volume = resample_volume(specimen.volume_v, pixel_size_a, box, pixel_size_a)
    rng = np.random.default_rng(seed)
    angles = random_orientations(n, rng)
    shifts = torch.from_numpy(rng.uniform(-2.0, 2.0, (n, 2))).to(torch.float32)
    ctfs = ctf_stack([CtfParams(defocus, defocus) for defocus in rng.uniform(1.0, 2.5, n)], box, pixel_size_a)
    particles = _ctf_modulated(fourier_shift_image_2d(project_potential(volume, angles, 1.0), shifts), ctfs)
    return specimen, volume, euler_to_matrices(angles), shifts, particles, ctfs


@pytest.mark.slow
def test_pose_assignment_recovers_orientations_and_shifts_of_an_asymmetric_particle():
    pixel_size_a = 6.0
    specimen, volume, rotations, shifts, particles, ctfs = _clean_particles("elongated", pixel_size_a, 64, 80, 6)
    config = PoseSearchConfig()
    poses = assign_poses(
        particles, ctfs, volume, pixel_size_a, resolution_a=25.0, max_shift_px=4.0,
        diameter_px=specimen.diameter_a / pixel_size_a, config=config,
    )
    errors = _misorientation_deg(poses.rotations, rotations, np.eye(3)[None])
    assert np.median(errors) < config.local_steps_deg[-1]
    assert np.percentile(errors, 95) < config.local_steps_deg[-2]
    assert errors.max() < config.coarse_step_deg
    assert (poses.shifts_yx_px - shifts).norm(dim=1).max() < 1.0
    assert poses.scores.min() > 0.95
    assert poses.angles_deg().shape == (80, 3)


@pytest.mark.slow
def test_pose_assignment_with_octahedral_symmetry_searches_one_asymmetric_unit():
    pixel_size_a = 4.0
    _, volume, rotations, shifts, particles, ctfs = _clean_particles("apoferritin", pixel_size_a, 46, 60, 7)
    poses = assign_poses(
        particles, ctfs, volume, pixel_size_a, resolution_a=25.0, max_shift_px=3.0, diameter_px=30.0, symmetry="O"
    )
    errors = _misorientation_deg(poses.rotations, rotations, octahedral_rotations())
    assert np.percentile(errors, 95) < 2.5 and errors.max() < 10.0
    assert (poses.shifts_yx_px - shifts).norm(dim=1).max() < 1.0
    with pytest.raises(InputError, match="unsupported symmetry"):
        assign_poses(
            particles, ctfs, volume, pixel_size_a, resolution_a=25.0, max_shift_px=3.0, diameter_px=30.0, symmetry="I"
        )


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def apoferritin_dataset(tmp_path_factory) -> DatasetLayout:
    """Three 512 px micrographs of 100 apoferritins at 4 A/px, with true coordinates."""
    root = tmp_path_factory.mktemp("reconstruct") / "data"
    config = SimulationConfig(
        specimen="apoferritin", n_micrographs=3, size_px=512, pixel_size_a=4.0,
        particles_per_micrograph=100, dose_e_per_a2=40.0, n_frames=4, seed=0,
    )
    write_dataset(config, root, progress=False)
    return DatasetLayout(root)


def _write_picks(layout: DatasetLayout, folder_name: str, move) -> str:
    """Picks made from the true coordinates by ``move(x, y, rng) -> (x, y)``; returns the folder."""
    folder = layout.root.parent / folder_name
    folder.mkdir()
    rng = np.random.default_rng(11)
    for name in layout.micrograph_names():
        truth = read_coordinates(layout.coordinates(name))
        x, y = move(truth.x_px, truth.y_px, rng)
        write_coordinates(folder / f"{name}.star", ParticleCoordinates(x_px=x, y_px=y))
    return str(folder)


@pytest.fixture(scope="module")
def true_picks_result(apoferritin_dataset):
    return reconstruct_dataset(apoferritin_dataset.root)


@pytest.mark.slow
def test_true_picks_reconstruct_well_and_false_picks_cost_resolution(apoferritin_dataset, true_picks_result):
    manifest = read_manifest(apoferritin_dataset.root)
    size, diameter_px = manifest["config"]["size_px"], manifest["particle_diameter_a"] / manifest["pixel_size_a"]

    def anywhere(x, y, rng):
        return tuple(rng.uniform(diameter_px / 2, size - diameter_px / 2, (2, len(x))))

    false = reconstruct_dataset(apoferritin_dataset.root, _write_picks(apoferritin_dataset, "random", anywhere))
    true = true_picks_result
    assert true.n_particles == false.n_particles == 300
    assert true.half_map_resolution_a < 2 * 8.0  # Nyquist is 8 A
    assert true.truth_resolution_a < 2 * 8.0
    assert true.half_map_resolution_a < 0.7 * false.half_map_resolution_a
    assert true.truth_resolution_a < 0.7 * false.truth_resolution_a
    assert true.mean_pose_score > 2 * false.mean_pose_score
    summary = json.loads(json.dumps(true.to_dict()))
    assert summary["n_particles"] == 300 and len(summary["fsc_half_maps"]["fsc"]) == true.box_px // 2 + 1
    assert set(summary["timings_s"]) == {"extract", "poses", "reconstruct", "fsc", "total"}


@pytest.mark.slow
def test_off_centre_picks_cost_resolution(apoferritin_dataset, true_picks_result):
    manifest = read_manifest(apoferritin_dataset.root)
    third_of_diameter_px = manifest["particle_diameter_a"] / manifest["pixel_size_a"] / 3  # beyond the shift search

    def off_centre(x, y, rng):
        direction = rng.uniform(0, 2 * np.pi, len(x))
        return x + third_of_diameter_px * np.cos(direction), y + third_of_diameter_px * np.sin(direction)

    shifted = reconstruct_dataset(apoferritin_dataset.root, _write_picks(apoferritin_dataset, "off_centre", off_centre))
    true = true_picks_result
    assert shifted.n_particles == true.n_particles
    # The true picks' half maps reach Nyquist (8 A here), so this bound says the shifted ones stop
    # short of 10 A (they reach 11.3 A; the maps against the truth say it more plainly).
    assert true.half_map_resolution_a < 0.8 * shifted.half_map_resolution_a
    assert true.truth_resolution_a < 0.5 * shifted.truth_resolution_a


@pytest.mark.slow
def test_symmetry_averaging_sharpens_the_maps_and_unknown_ctfs_are_left_uncorrected(apoferritin_dataset,
                                                                                   true_picks_result):
    averaged = true_picks_result  # the manifest's symmetry, O: each half map averaged over 24 rotations
    single = reconstruct_dataset(apoferritin_dataset.root, settings=ReconstructionSettings(symmetry="C1"))
    assert averaged.half_map_resolution_a < 0.85 * single.half_map_resolution_a
    assert averaged.fsc_half_maps.correlation.mean() > single.fsc_half_maps.correlation.mean() + 0.1
    # The same micrographs as plain files with no CTFs: reconstructed as plain projections,
    # which holds only to the first zero of their CTFs.
    names = apoferritin_dataset.micrograph_names()
    uncorrected = reconstruct_micrographs([apoferritin_dataset.micrograph(name) for name in names],
                                          apoferritin_dataset.root / "coordinates", "apoferritin", 120.0,
                                          ReconstructionSettings(symmetry="O"))
    assert uncorrected.n_particles == averaged.n_particles and uncorrected.truth_resolution_a is None
    assert averaged.half_map_resolution_a < uncorrected.half_map_resolution_a < 2 * averaged.half_map_resolution_a
