"""Sampling grids shared by the reconstruction stages: Fourier resampling and masks.

Every array here is a torch tensor whose last ``ndim`` axes are a square image (y, x) or
a cubic volume (z, y, x) of even edge, with the centre at index ``size // 2`` on each axis.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch_fourier_rescale import fourier_rescale_3d

from cryoscore.errors import InputError
from cryoscore.fourier import pad_or_crop_centred

#: Largest relative difference between the requested and the achieved box length (Angstrom)
#: that :func:`resample_volume` accepts; beyond it the map's scale would be visibly wrong.
_MAX_BOX_LENGTH_MISMATCH = 0.01


def resample_volume(
    volume: np.ndarray, pixel_size_a: float, box_px: int, pixel_size_out_a: float, *, source: str = "map"
) -> torch.Tensor:
    """A cubic map (D, D, D) at ``pixel_size_a`` on a ``box_px``^3 grid at ``pixel_size_out_a``.

    The map is cut or zero-padded about its centre voxel to the box length of the output
    (``box_px * pixel_size_out_a`` Angstrom), then Fourier-resampled to ``box_px``: exact
    when that length is a whole number of input voxels, as when the output grid is the
    particles' (the micrograph's pixels, Fourier-cropped). Raises InputError (naming
    ``source``) if the lengths differ by more than 1 %. Returns float32 (box, box, box).
    """
    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3 or len(set(volume.shape)) != 1:
        raise InputError(source, f"expected a cubic 3D map, got shape {volume.shape}")
    size_in = 2 * round(box_px * pixel_size_out_a / pixel_size_a / 2)
    achieved_a, wanted_a = size_in * pixel_size_a, box_px * pixel_size_out_a
    if size_in < 2 or abs(achieved_a - wanted_a) > _MAX_BOX_LENGTH_MISMATCH * wanted_a:
        raise InputError(
            source,
            f"a map at {pixel_size_a:.4g} A/px cannot be resampled to {box_px} px at "
            f"{pixel_size_out_a:.4g} A/px (box lengths {achieved_a:.1f} and {wanted_a:.1f} A); "
            "resample it to the micrographs' pixel size first",
        )
    cut = torch.from_numpy(pad_or_crop_centred(volume, size_in))
    if size_in == box_px:  # the same grid: the cut is the answer (no FFT round trip)
        return cut
    return fourier_rescale_3d(cut, target_shape=(box_px,) * 3)[0]


def symmetrise_volume(volume: torch.Tensor, rotations: np.ndarray) -> torch.Tensor:
    """The mean of a map over a point group: ``mean_k V(R_k r)``, float32 (B, B, B).

    ``volume`` (B, B, B), axes (z, y, x), centre at voxel B//2; ``rotations`` (K, 3, 3)
    act on (x, y, z) column vectors about that centre (e.g. :func:`.poses.point_group_rotations`).
    Samples trilinearly, so rotations that permute the grid (the four-folds and two-folds
    along the axes, the whole octahedral group) are exact; a voxel whose rotated position
    leaves the box reads 0 there.
    """
    box = volume.shape[-1]
    axis = torch.arange(box, dtype=torch.float64) - box // 2
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    positions = torch.stack([x, y, z], dim=-1)  # (B, B, B, 3): (x, y, z) from the centre, voxels
    source = volume.to(torch.float32)[None, None]
    total = torch.zeros(volume.shape, dtype=torch.float32)
    for rotation in np.asarray(rotations, dtype=np.float64):  # one copy at a time: memory of a few volumes
        sampled = positions @ torch.from_numpy(rotation).T
        grid = ((sampled + box // 2) * (2.0 / (box - 1)) - 1.0).to(torch.float32)[None]
        total += F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0, 0]
    return total / len(rotations)


def soft_sphere_mask(size: int, ndim: int, radius_px: float, edge_px: float) -> torch.Tensor:
    """A disc (ndim=2) or ball (ndim=3) mask about index size//2, float32 (size,)*ndim.

    1 within ``radius_px``, falling as a raised cosine to 0 at ``radius_px + edge_px``.
    """
    axis = torch.arange(size, dtype=torch.float32) - size // 2
    grids = torch.meshgrid(*([axis] * ndim), indexing="ij")
    radius = torch.sqrt(sum((grid**2 for grid in grids), torch.zeros_like(grids[0])))
    ramp = ((radius - radius_px) / max(edge_px, 1e-6)).clamp(0.0, 1.0)
    return 0.5 * (1.0 + torch.cos(math.pi * ramp))


def centred_rfft2(images: torch.Tensor) -> torch.Tensor:
    """rfft2 of images (..., B, B) whose centre is pixel (B//2, B//2), moved to the origin first.

    Returns the unshifted half spectrum (..., B, B//2+1): a particle at the box centre has
    no phase ramp, and a shift in real space is a phase ``exp(-2 pi i k.s)`` here.
    """
    return torch.fft.rfft2(torch.fft.ifftshift(images, dim=(-2, -1)))
