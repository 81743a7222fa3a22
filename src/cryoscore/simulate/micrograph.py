"""Particles on a micrograph: positions, projections and the phase-contrast image.

Weak-phase-object image formation: the projected potential ``P`` (V*A) of every particle
shifts the electron wave's phase by ``sigma_e * P``; the objective's CTF turns the phase
into intensity contrast ``c = -2 * IFFT(CTF * FFT(sigma_e * P))`` (dark particles at
underfocus). The recorded intensity is ``T * (1 + c)`` with ``T`` the ice transmission.
"""

from __future__ import annotations

import numpy as np
import torch
from torch_fourier_shift import fourier_shift_image_2d

from cryoscore.errors import InputError
from cryoscore.simulate.ctf import CtfParams, ctf_2d, electron_wavelength_a, interaction_constant_rad_per_v_a
from cryoscore.simulate.project import project_potential


def place_particles(
    rng: np.random.Generator,
    shape: tuple[int, int],
    n_particles: int,
    diameter_px: float,
    *,
    edge_particles: bool = False,
    cluster_fraction: float = 0.0,
) -> np.ndarray:
    """Random non-overlapping particle centres (n, 2) as (row, col) in pixels, float64.

    Centres are at least ``diameter_px`` apart. Without ``edge_particles`` every particle
    lies wholly inside the image; with it, centres may sit anywhere inside, so particles
    are cut by the edge. A ``cluster_fraction`` of the particles is placed touching an
    earlier one (centre distance 1.0-1.15 diameters), as in aggregated specimens.
    Raises InputError (``--particles``) if that many particles do not fit.
    """
    margin = 0.0 if edge_particles else diameter_px / 2
    low = np.array([margin, margin])
    high = np.array(shape, dtype=np.float64) - 1 - margin
    if np.any(high <= low) and n_particles > 0:
        raise InputError("--size", f"a {shape[1]}x{shape[0]} px micrograph cannot hold a {diameter_px:.0f} px particle")
    cell = diameter_px
    grid: dict[tuple[int, int], list[int]] = {}
    centres: list[np.ndarray] = []

    def fits(point: np.ndarray) -> bool:
        if np.any(point < low) or np.any(point > high):
            return False
        cell_row, cell_col = int(point[0] // cell), int(point[1] // cell)
        for d_row in (-1, 0, 1):
            for d_col in (-1, 0, 1):
                for index in grid.get((cell_row + d_row, cell_col + d_col), ()):
                    if np.sum((centres[index] - point) ** 2) < diameter_px**2:
                        return False
        return True

    max_attempts = 200 * max(n_particles, 1)
    attempts = 0
    while len(centres) < n_particles and attempts < max_attempts:
        attempts += 1
        if centres and rng.uniform() < cluster_fraction:
            anchor = centres[rng.integers(len(centres))]
            angle = rng.uniform(0, 2 * np.pi)
            point = anchor + rng.uniform(1.0, 1.15) * diameter_px * np.array([np.sin(angle), np.cos(angle)])
        else:
            point = rng.uniform(low, high)
        if fits(point):
            grid.setdefault((int(point[0] // cell), int(point[1] // cell)), []).append(len(centres))
            centres.append(point)
    if len(centres) < n_particles:
        raise InputError(
            "--particles",
            f"only {len(centres)} of {n_particles} non-overlapping {diameter_px:.0f} px particles "
            f"fit on a {shape[1]}x{shape[0]} px micrograph; ask for fewer",
        )
    return np.array(centres, dtype=np.float64).reshape(-1, 2)


def projected_potential_image(
    projections_va: torch.Tensor, centres_rc: np.ndarray, shape: tuple[int, int], pad_px: int
) -> torch.Tensor:
    """Paste particle projections (n, D, D) at sub-pixel centres onto a padded canvas.

    Returns the projected potential in V*A on a float32 canvas of shape
    ``(H + 2 pad_px, W + 2 pad_px)``; image pixel (r, c) is canvas pixel (r + pad, c + pad).
    ``pad_px`` must be at least D//2 + 1 so particles at the edge fit on the canvas.
    """
    box = projections_va.shape[-1]
    canvas = torch.zeros((shape[0] + 2 * pad_px, shape[1] + 2 * pad_px), dtype=torch.float32)
    if len(centres_rc) == 0:
        return canvas
    whole = np.floor(centres_rc).astype(np.int64)
    fraction = torch.from_numpy(centres_rc - whole).to(torch.float32)
    shifted = fourier_shift_image_2d(projections_va, fraction)
    corners = whole + pad_px - box // 2
    for image, (row, col) in zip(shifted, corners):
        canvas[row : row + box, col : col + box] += image
    return canvas


def particle_contrast(
    volume_v: torch.Tensor,
    pixel_size_a: float,
    angles_deg: np.ndarray,
    centres_rc: np.ndarray,
    shape: tuple[int, int],
    ctf: CtfParams,
) -> torch.Tensor:
    """Phase-contrast image ``c`` (H, W) of particles at ``centres_rc`` with ``angles_deg``.

    ``volume_v`` is the potential (D, D, D) in volts on the micrograph's pixel grid; ``c``
    is dimensionless (0 away from particles). See :func:`contrast_from_projections`.
    """
    projections = project_potential(volume_v, angles_deg, pixel_size_a)
    return contrast_from_projections(projections, pixel_size_a, centres_rc, shape, ctf)


def contrast_from_projections(
    projections_va: torch.Tensor,
    pixel_size_a: float,
    centres_rc: np.ndarray,
    shape: tuple[int, int],
    ctf: CtfParams,
) -> torch.Tensor:
    """Phase-contrast image ``c`` (H, W) of projected potentials (n, D, D) in V*A at ``centres_rc``.

    The CTF is applied on a canvas padded by the particle box plus the CTF's
    delocalisation, so nothing wraps around the image edges.
    """
    box = projections_va.shape[-1]
    # A feature at spatial frequency k is displaced by lambda * defocus * k; bound it at Nyquist.
    nyquist_per_a = 1 / (2 * pixel_size_a)
    max_defocus_a = max(ctf.defocus_u_um, ctf.defocus_v_um) * 1e4
    delocalisation_px = electron_wavelength_a(ctf.voltage_kv) * max_defocus_a * nyquist_per_a / pixel_size_a
    pad = int(box // 2 + 1 + min(delocalisation_px, max(shape)))
    potential = projected_potential_image(projections_va, centres_rc, shape, pad)
    contrast = phase_contrast(potential, pixel_size_a, ctf)
    return contrast[pad : pad + shape[0], pad : pad + shape[1]].contiguous()


def phase_contrast(potential_va: torch.Tensor, pixel_size_a: float, ctf: CtfParams) -> torch.Tensor:
    """Contrast ``-2 * IFFT(CTF * FFT(sigma_e * potential))`` (H, W) of a projected potential (H, W) in V*A,
    periodic at the edges (pad the potential where that matters)."""
    phase = interaction_constant_rad_per_v_a(ctf.voltage_kv) * potential_va
    transfer = ctf_2d(ctf, (phase.shape[-2], phase.shape[-1]), pixel_size_a, rfft=True)
    return -2.0 * torch.fft.irfft2(torch.fft.rfft2(phase) * transfer, s=phase.shape)
