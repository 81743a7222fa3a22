"""A specimen: the 3D electrostatic potential of the particle being imaged.

A :class:`Specimen` holds a cubic volume ``volume_v`` of shape (D, D, D), D even, axis
order (z, y, x), float32, in volts: the potential *contrast relative to vitreous ice*
(the ice itself is the reference, 0 V). The particle's centre is voxel (D//2, D//2, D//2),
the rotation centre torch-fourier-slice projects about. Voxel (k, j, i) sits at
``((i, j, k) - D//2) * pixel_size_a`` Angstrom (x, y, z) from the centre.

Where specimens come from: :mod:`cryoscore.simulate.procedural` (built-in, random and
shell particles) and :mod:`cryoscore.simulate.volume` (maps, atomic models, and
:func:`~cryoscore.simulate.volume.load_specimen`, which takes any of them by name).
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass

import numpy as np
from scipy.spatial import ConvexHull
from scipy.spatial.distance import pdist

#: Potential of protein relative to vitreous ice, in volts. An approximation: protein's mean
#: inner potential minus that of amorphous ice (quoted values differ by about a volt).
PROTEIN_CONTRAST_V = 3.0

#: Smallest box edge, as a multiple of the particle diameter, so rotated projections don't wrap.
MIN_BOX_OVER_DIAMETER = 1.25

#: h^2 / (2 pi m0 e) in V*A^2: an electron scattering factor of 1 A is 47.878 V*A^3 of
#: integrated potential (non-relativistic electron mass m0, the usual convention).
VOLTS_A3_PER_SCATTERING_A = 47.878

#: Level, as a fraction of the maximum, above which a map's voxels count as particle.
_MAP_PARTICLE_LEVEL = 0.1

_SYMMETRY_LABEL = re.compile(r"[CD][1-9][0-9]*|T|O|I")


@dataclass(frozen=True)
class Specimen:
    """A particle's potential on a cubic grid.

    Attributes
    ----------
    name:
        Built-in name, or the file it came from.
    volume_v:
        Potential relative to vitreous ice (against vacuum for atomic models), volts,
        float32 (D, D, D) with D even, axes (z, y, x), particle centre at voxel
        (D//2, D//2, D//2).
    pixel_size_a:
        Voxel edge, Angstrom.
    diameter_a:
        Largest extent of the particle, Angstrom (picking radius, particle spacing). The box
        edge D * pixel_size_a is at least ``MIN_BOX_OVER_DIAMETER`` times this.
    symmetry:
        Point group label: "C1" (none or unknown), "Cn", "Dn", "T", "O" or "I".
    """

    name: str
    volume_v: np.ndarray
    pixel_size_a: float
    diameter_a: float
    symmetry: str

    def __post_init__(self) -> None:
        volume = self.volume_v
        if not isinstance(volume, np.ndarray) or volume.dtype != np.float32 or volume.ndim != 3:
            raise ValueError(
                "volume_v must be a 3D float32 numpy array, got "
                f"{type(volume).__name__} {getattr(volume, 'dtype', '')} "
                f"{getattr(volume, 'shape', '')}"
            )
        size = volume.shape[0]
        if volume.shape != (size, size, size) or size % 2:
            raise ValueError(f"volume_v must be a cube with an even edge, got shape {volume.shape}")
        if not np.isfinite(volume).all():
            raise ValueError("volume_v holds NaN or Inf")
        if not (math.isfinite(self.pixel_size_a) and self.pixel_size_a > 0):
            raise ValueError(f"pixel_size_a must be positive, got {self.pixel_size_a}")
        if not (math.isfinite(self.diameter_a) and self.diameter_a > 0):
            raise ValueError(f"diameter_a must be positive, got {self.diameter_a}")
        if size * self.pixel_size_a < MIN_BOX_OVER_DIAMETER * self.diameter_a:
            raise ValueError(
                f"box of {size} x {self.pixel_size_a} A is smaller than "
                f"{MIN_BOX_OVER_DIAMETER} x the diameter {self.diameter_a} A"
            )
        if not _SYMMETRY_LABEL.fullmatch(self.symmetry):
            raise ValueError(
                f"symmetry must be a point group label such as C1, C4, D2, O; got {self.symmetry!r}"
            )
        if not self.name:
            raise ValueError("name must not be empty")


def octahedral_rotations() -> np.ndarray:
    """The 24 rotations of the octahedral group 432 ("O"), float64 (24, 3, 3).

    Each matrix left-multiplies (x, y, z) column vectors; they are the signed permutation
    matrices of determinant +1, so they map the grid about voxel D//2 onto itself exactly.
    The identity comes first.
    """
    matrices = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            matrix = np.zeros((3, 3))
            matrix[range(3), perm] = signs
            if np.linalg.det(matrix) > 0:
                matrices.append(matrix)
    return np.stack(matrices)


def even_ceil(value: float) -> int:
    """Smallest even integer >= ``value``."""
    return 2 * math.ceil(value / 2.0)


def max_distance(points: np.ndarray) -> float:
    """Largest distance between two of ``points`` (n, 3), via their convex hull."""
    if len(points) > 64:
        points = points[ConvexHull(points, qhull_options="QJ").vertices]
    return float(pdist(points).max()) if len(points) > 1 else 0.0


def measure_diameter_a(
    volume_v: np.ndarray, pixel_size_a: float, level_fraction: float = _MAP_PARTICLE_LEVEL
) -> float:
    """Largest extent (Angstrom) of the voxels of ``volume_v`` (D, D, D) above
    ``level_fraction`` times its maximum: the distance between the two farthest voxel
    centres, plus one voxel."""
    above = np.argwhere(volume_v > level_fraction * volume_v.max())
    return (max_distance(above.astype(np.float64)) + 1.0) * pixel_size_a
