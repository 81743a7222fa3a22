"""Orientations and projection of a 3D potential by the Fourier slice theorem.

Angles are RELION's (rot, tilt, psi) in degrees, ZYZ intrinsic; the matching rotation
matrix ``R = Rotation.from_euler("ZYZ", (rot, tilt, psi)).as_matrix()`` left-multiplies
xyz column vectors and is what torch-fourier-slice takes: the projection image at
(x, y) integrates the volume along the line ``R @ (x, y, z)``.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from torch_fourier_slice import project_3d_to_2d

_PROJECTION_CHUNK = 256  # projections computed per batch; bounds memory at (chunk, D, D)


def random_orientations(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` orientations drawn uniformly from SO(3), as RELION Euler angles (n, 3) in degrees."""
    return Rotation.random(n, random_state=rng).as_euler("ZYZ", degrees=True)


def euler_to_matrices(angles_deg: np.ndarray) -> torch.Tensor:
    """RELION (rot, tilt, psi) angles (n, 3) in degrees -> float32 rotation matrices (n, 3, 3)."""
    matrices = Rotation.from_euler("ZYZ", np.asarray(angles_deg, dtype=np.float64).reshape(-1, 3), degrees=True)
    return torch.from_numpy(matrices.as_matrix()).to(torch.float32)


def project_potential(volume_v: torch.Tensor, angles_deg: np.ndarray, pixel_size_a: float) -> torch.Tensor:
    """Projected potential of ``volume_v`` (D, D, D, volts) at each orientation, in V*A.

    Returns a float32 tensor (n, D, D) whose centre pixel (D//2, D//2) is the projection
    of the volume's centre (D//2, D//2, D//2). Computed in chunks to bound memory.
    """
    matrices = euler_to_matrices(angles_deg)
    chunks = [
        project_3d_to_2d(volume_v, matrices[start : start + _PROJECTION_CHUNK])
        for start in range(0, len(matrices), _PROJECTION_CHUNK)
    ]
    if not chunks:
        size = volume_v.shape[-1]
        return torch.zeros((0, size, size), dtype=torch.float32)
    return torch.cat(chunks) * pixel_size_a
