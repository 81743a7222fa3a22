"""Electron dose, frames, drift and shot noise.

Each frame records the counts the detector (:mod:`cryoscore.simulate.detector`; Poisson
for the ideal one) makes of ``expected_per_frame`` electrons shifted by that frame's stage
drift. A sum of independent Poisson variables is Poisson with the summed mean, so the even
and odd half sums can be drawn directly from their summed means without making the frames:
``even ~ Poisson(sum_{i even} shift_i(E))``. The drift sum is one Fourier multiplication by
``sum_i exp(-2 pi i k . d_i)``, whatever the number of frames.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch_fourier_shift import fourier_shift_image_2d

from cryoscore.fourier import frequency_axes
from cryoscore.simulate.detector import IDEAL, DetectorParams, sample_counts


def counts_per_pixel_per_frame(dose_e_per_a2: float, n_frames: int, pixel_size_a: float) -> float:
    """Mean electrons per pixel in one frame of an unobstructed (T = 1) beam."""
    return dose_e_per_a2 * pixel_size_a**2 / n_frames


def drift_trajectory(rng: np.random.Generator, n_frames: int, total_drift_px: float) -> np.ndarray:
    """Per-frame stage shifts (n_frames, 2) in pixels, (row, col), a smooth random walk.

    The path runs ``total_drift_px`` from the first to the last frame and its mean is
    zero, so the sum of all frames stays centred on the particle coordinates.
    """
    if n_frames < 1:
        raise ValueError("need at least one frame")
    if total_drift_px == 0 or n_frames == 1:
        return np.zeros((n_frames, 2))
    steps = rng.normal(size=(n_frames - 1, 2)) * 0.3 + rng.normal(size=2)  # persistent direction
    path = np.vstack([np.zeros(2), np.cumsum(steps, axis=0)])
    path *= total_drift_px / max(float(np.linalg.norm(path[-1] - path[0])), 1e-12)
    return path - path.mean(axis=0)


def frame_parity(n_frames: int, parity: str) -> np.ndarray:
    """Indices of the ``"even"`` (0, 2, ...), ``"odd"`` (1, 3, ...) or ``"all"`` frames."""
    start, step = {"even": (0, 2), "odd": (1, 2), "all": (0, 1)}[parity]
    return np.arange(start, n_frames, step)


def drift_sum(image: torch.Tensor, shifts_rc: np.ndarray) -> torch.Tensor:
    """``sum_i shift_i(image)`` over the frames whose shifts are given (n, 2), float32 (H, W)."""
    if not np.any(shifts_rc):
        return image * len(shifts_rc)
    height, width = image.shape
    shifts = torch.from_numpy(np.asarray(shifts_rc, dtype=np.float64))
    ky, kx = frequency_axes((height, width), backend="torch", dtype=torch.float64)  # (H, 1), (1, W//2+1)
    # sum_i exp(-2 pi i (ky r_i + kx c_i)) factorises into one (H, n) @ (n, W//2+1) product.
    row_phases = torch.exp(-2j * torch.pi * ky * shifts[None, :, 0])
    col_phases = torch.exp(-2j * torch.pi * shifts[:, 1, None] * kx)
    kernel = row_phases @ col_phases
    summed = torch.fft.irfft2(torch.fft.rfft2(image) * kernel.to(torch.complex64), s=(height, width))
    return summed.to(torch.float32)


def sample_frames(
    expected_per_frame: torch.Tensor, shifts_rc: np.ndarray, generator: torch.Generator,
    detector: DetectorParams = IDEAL,
) -> Iterator[torch.Tensor]:
    """Yield each frame's counts (H, W) as ``detector`` records them, in order, one at a time
    (memory: one frame)."""
    for shift in shifts_rc:
        if np.any(shift):
            mean = fourier_shift_image_2d(expected_per_frame[None], torch.from_numpy(shift[None]).to(torch.float32))[0]
        else:
            mean = expected_per_frame
        yield sample_counts(mean, detector, generator)
