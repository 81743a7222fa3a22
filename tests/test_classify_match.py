"""Matching 2D class averages against projections of a density (cryoscore.classify.match): a
view of the particle matches whatever its in-plane angle and centring, noise and another
specimen do not, and a classification's judgement counts the particles in matching classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_fourier_shift import fourier_shift_image_2d

from cryoscore.classify.match import (
    PARTICLE_LIKE_MATCH,
    judge_classes,
    projection_directions,
    template_matches,
    template_projections,
)
from cryoscore.classify.twod import Classification2D, rotate_images
from cryoscore.reconstruct.ctf import ctf_stack
from cryoscore.reconstruct.grid import centred_rfft2, resample_volume
from cryoscore.simulate.ctf import CtfParams
from cryoscore.simulate.project import project_potential, random_orientations
from cryoscore.simulate.volume import load_specimen

PIXEL_A, BOX = 6.0, 48


def _views(specimen: str, n: int, seed: int, ctf: CtfParams | None = None, modulus: bool = False) -> torch.Tensor:
    """``n`` projections of ``specimen`` at random orientations, through ``ctf`` (or its modulus:
    phase-flipped) when given, turned and moved off centre by a few pixels, with white noise of
    a third of their standard deviation."""
    rng = np.random.default_rng(seed)
    loaded = load_specimen(specimen, PIXEL_A)
    volume = resample_volume(loaded.volume_v, loaded.pixel_size_a, BOX, PIXEL_A)
    views = project_potential(volume, random_orientations(n, rng), PIXEL_A)
    if ctf is not None:
        transfer = ctf_stack([ctf], BOX, PIXEL_A)[0]
        transfer = transfer.abs() if modulus else transfer
        views = torch.fft.fftshift(torch.fft.irfft2(centred_rfft2(views) * transfer, s=(BOX, BOX)), dim=(-2, -1))
    views = fourier_shift_image_2d(rotate_images(views, torch.from_numpy(rng.uniform(0, 360, n)).float()),
                                   torch.from_numpy(rng.uniform(-1.5, 1.5, (n, 2))).float())
    generator = torch.Generator().manual_seed(seed)
    return views + views.std() / 3 * torch.randn(views.shape, generator=generator)


def test_projection_directions_cover_the_sphere_evenly():
    directions = projection_directions(200)
    rot, tilt = np.radians(directions[:, 0]), np.radians(directions[:, 1])
    vectors = np.stack([np.sin(tilt) * np.cos(rot), np.sin(tilt) * np.sin(rot), np.cos(tilt)], axis=1)
    assert np.linalg.norm(vectors.mean(axis=0)) < 0.02  # no hemisphere favoured
    nearest = np.sort(np.arccos(np.clip(vectors @ vectors.T, -1, 1)), axis=1)[:, 1]
    assert nearest.max() < 2.0 * nearest.mean()  # no holes


@pytest.mark.parametrize("phase_flipped", [False, True])
def test_views_of_the_particle_match_and_noise_and_another_specimen_do_not(phase_flipped):
    """Views through a CTF of 2.2 um (its first zero at 29 A): uncorrected, matched by searching
    the defocus, or phase-flipped, matched through the modulus of the particles' CTFs."""
    projections = template_projections("shell:120:80", BOX, PIXEL_A)
    assert projections.shape == (100, BOX, BOX)
    ctf = CtfParams(2.2, 2.2)
    ctfs = [ctf] if phase_flipped else None
    particle = template_matches(_views("apoferritin", 4, 0, ctf, phase_flipped).numpy(), projections, PIXEL_A, 120.0, ctfs)
    other = template_matches(_views("small", 4, 1, ctf, phase_flipped).numpy(), projections, PIXEL_A, 120.0, ctfs)
    noise = template_matches(torch.randn(4, BOX, BOX, generator=torch.Generator().manual_seed(2)).numpy(),
                             projections, PIXEL_A, 120.0, ctfs)
    assert particle.min() > 0.7  # 0.80-0.90
    assert other.max() < 0.4 and noise.max() < 0.4  # the 60 A particle -0.21-0.0, noise 0.12-0.33
    assert particle.min() > PARTICLE_LIKE_MATCH > max(other.max(), noise.max())


def test_a_judgement_counts_the_particles_in_particle_like_classes():
    averages = torch.cat([_views("apoferritin", 2, 3), torch.randn(1, BOX, BOX)]).numpy()
    result = Classification2D(averages=averages, classes=np.array([0] * 6 + [1] * 3 + [2]), angles_deg=np.zeros(10),
                              shifts_yx_px=np.zeros((10, 2)), scores=np.ones(10), counts=np.array([6, 3, 1]),
                              resolution_a=np.array([20.0, np.inf, 40.0]), pixel_size_a=PIXEL_A)
    judged = judge_classes(result, "shell:120:80", template_projections("shell:120:80", BOX, PIXEL_A), 120.0)
    assert judged["particle_like"] == [True, True, False]
    assert judged["particle_like_fraction"] == 0.9
    assert judged["particle_like_resolution_a"] == 20.0  # the class without a resolution does not count
