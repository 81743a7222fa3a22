"""CTF-corrected reconstruction by direct Fourier insertion.

Each particle is zero-padded to twice its box, centred by a Fourier phase shift (minus its
assigned translation), and its spectrum, multiplied by its CTF, is inserted as a central
section at its orientation (torch-fourier-slice, trilinear); the CTF^2 is inserted alongside.
The map's spectrum is the Wiener-style ratio

    V(k) = sum_i w_i CTF_i X_i / (sum_i w_i CTF_i^2 + wiener_constant)

(``w_i`` the trilinear weights; frequencies beyond Nyquist are not inserted), transformed
back, divided by sinc^2 (the real-space attenuation of trilinear insertion, as in
torch-fourier-slice's ``backproject_2d_to_3d``) and cropped to the particle box.
``wiener_constant`` is in units of one particle's full weight (CTF^2 = 1) at a voxel: it
damps voxels few particles reach and is negligible where many do. Shifts are applied as
phase ramps, so content shifted out of the box wraps around (harmless for shifts of a
few pixels in a box 1.5 diameters wide).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch_fourier_slice import insert_central_slices_rfft_3d_multichannel
from torch_fourier_slice.volume_utils import separable_sinc2_correction

from cryoscore.fourier import frequency_axes
from cryoscore.reconstruct.ctf import ctf_stack
from cryoscore.reconstruct.grid import centred_rfft2
from cryoscore.simulate.ctf import CtfParams

#: Particles inserted per call, to bound memory at (batch, 2B, B+1) complex values.
_INSERT_BATCH = 256


def _centring_phases(size: int, shifts_yx_px: torch.Tensor) -> torch.Tensor:
    """exp(+2 pi i k.s) on the unshifted rfft grid of a ``size`` box: (N, size, size//2+1)."""
    ky, kx = frequency_axes((size, size), backend="torch")
    turns = ky * shifts_yx_px[:, 0, None, None] + kx * shifts_yx_px[:, 1, None, None]
    return torch.polar(torch.ones_like(turns), 2 * math.pi * turns)


def _insert(
    particles: torch.Tensor,
    rotations: torch.Tensor,
    shifts_yx_px: torch.Tensor,
    ctfs: Sequence[CtfParams] | None,
    pixel_size_a: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed CTF-weighted spectra and CTF^2 weights, complex64 and float32 (2B, 2B, B+1),
    on the fftshifted rfft grid of the twice-padded volume."""
    box = particles.shape[-1]
    padded_box = 2 * box
    volume_shape = (padded_box,) * 3
    numerator = torch.zeros((padded_box, padded_box, box + 1), dtype=torch.complex64)
    ctf_weights = torch.zeros(numerator.shape, dtype=torch.float32)
    for start in range(0, len(particles), _INSERT_BATCH):
        chunk = slice(start, start + _INSERT_BATCH)
        padded = F.pad(particles[chunk], [box // 2] * 4)
        spectra = centred_rfft2(padded) * _centring_phases(padded_box, shifts_yx_px[chunk])
        if ctfs is None:
            ctf = torch.ones(spectra.shape, dtype=torch.float32)
        else:
            ctf = ctf_stack(ctfs[chunk], padded_box, pixel_size_a)
        channels = torch.stack([spectra * ctf, (ctf**2).to(torch.complex64)], dim=1)  # (n, 2, 2B, B+1)
        inserted, _ = insert_central_slices_rfft_3d_multichannel(
            torch.fft.fftshift(channels, dim=-2), volume_shape, rotations[chunk], fftfreq_max=0.5
        )
        numerator += inserted[0]
        ctf_weights += inserted[1].real
    return numerator, ctf_weights


def _finish(numerator: torch.Tensor, ctf_weights: torch.Tensor, wiener_constant: float) -> torch.Tensor:
    """The map (B, B, B) from the sums of :func:`_insert` (module notes)."""
    padded_box = numerator.shape[0]
    volume_shape = (padded_box,) * 3
    spectrum = torch.fft.ifftshift(numerator / (ctf_weights + wiener_constant), dim=(-3, -2))
    volume = torch.fft.fftshift(torch.fft.irfftn(spectrum, s=volume_shape), dim=(-3, -2, -1))
    volume = volume / separable_sinc2_correction(volume_shape)
    box, start = padded_box // 2, padded_box // 4
    return volume[start : start + box, start : start + box, start : start + box].contiguous()


def reconstruct_map(
    particles: torch.Tensor,
    rotations: torch.Tensor,
    shifts_yx_px: torch.Tensor,
    ctfs: Sequence[CtfParams] | None,
    pixel_size_a: float,
    *,
    wiener_constant: float = 1.0,
) -> torch.Tensor:
    """The map (B, B, B) that the particles (N, B, B) at their poses are projections of.

    Parameters
    ----------
    particles:
        float32 (N, B, B), B even, protein positive, centre at pixel (B//2, B//2).
    rotations:
        float32 (N, 3, 3) rotation matrices (see :class:`.poses.Poses`).
    shifts_yx_px:
        float32 (N, 2) particle centres relative to the box centre, pixels.
    ctfs:
        The particles' CTF parameters (N of them), or None for plain projections (CTF = 1).
    pixel_size_a:
        Pixel size, Angstrom (for the CTF).
    wiener_constant:
        Regulariser added to the summed CTF^2 weights (module notes); > 0.

    Returns
    -------
    float32 (B, B, B) map, axes (z, y, x), centre at voxel B//2. Without CTF and with a
    negligible ``wiener_constant``, the map whose projections (as :func:`project_3d_to_2d`
    makes them) the particles are, on the same scale.
    """
    return _finish(*_insert(particles, rotations, shifts_yx_px, ctfs, pixel_size_a), wiener_constant)


def reconstruct_half_maps(
    particles: torch.Tensor,
    rotations: torch.Tensor,
    shifts_yx_px: torch.Tensor,
    ctfs: Sequence[CtfParams] | None,
    pixel_size_a: float,
    in_second_half: np.ndarray,
    *,
    wiener_constant: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two half maps and the full map, each (B, B, B), as :func:`reconstruct_map` makes them.

    ``in_second_half`` (N,) bool assigns each particle to a half; the full map is
    reconstructed from the sums of both halves' insertions, so it costs no extra insertion.
    ``ctfs`` None: the particles are plain projections (CTF = 1), as in :func:`reconstruct_map`.
    """
    sums = []
    for half in (~in_second_half, in_second_half):
        index = np.nonzero(half)[0]
        selected = torch.from_numpy(index)
        half_ctfs = None if ctfs is None else [ctfs[int(i)] for i in index]
        sums.append(_insert(particles[selected], rotations[selected], shifts_yx_px[selected], half_ctfs, pixel_size_a))
    (numerator_1, weights_1), (numerator_2, weights_2) = sums
    return (
        _finish(numerator_1, weights_1, wiener_constant),
        _finish(numerator_2, weights_2, wiener_constant),
        _finish(numerator_1 + numerator_2, weights_1 + weights_2, wiener_constant),
    )
