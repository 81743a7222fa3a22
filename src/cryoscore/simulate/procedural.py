"""Specimens cryoscore makes itself, the same at any pixel size.

- built-in procedural particles (:data:`BUILTIN_SPECIMENS`): unions of smooth-edged
  ellipsoids evaluated analytically at the voxel centres; protein sits at
  :data:`~cryoscore.simulate.specimen.PROTEIN_CONTRAST_V`;
- random ones of the same kind (``random-compact:SEED``, ``random-elongated:SEED``,
  :func:`random_specimen`);
- a smooth-edged hollow sphere (``shell:OUTER_A:INNER_A``, :func:`hollow_sphere`): a
  featureless stand-in for a hollow particle, e.g. an independent low-resolution model of
  apoferritin.
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from cryoscore.errors import InputError
from cryoscore.io.mrc import check_pixel_size
from cryoscore.simulate.specimen import (
    MIN_BOX_OVER_DIAMETER,
    PROTEIN_CONTRAST_V,
    Specimen,
    even_ceil,
    octahedral_rotations,
)

#: Standard deviation (Angstrom) of the error-function edge of procedural blobs.
_EDGE_A = 2.0

#: Distance past a blob's surface, in edge standard deviations, beyond which its occupancy
#: (< 1e-9) is not evaluated.
_EDGE_TAIL_SIGMAS = 6.0


def _frame(first: ArrayLike, second_hint: ArrayLike) -> np.ndarray:
    """Right-handed orthonormal axes (3, 3), columns: ``first``, then ``second_hint`` made
    orthogonal to it, then their cross product."""
    e1 = np.asarray(first, dtype=np.float64)
    e1 = e1 / np.linalg.norm(e1)
    hint = np.asarray(second_hint, dtype=np.float64)
    e2 = hint - (hint @ e1) * e1
    e2 = e2 / np.linalg.norm(e2)
    return np.stack([e1, e2, np.cross(e1, e2)], axis=1)


@dataclass(frozen=True)
class _Ellipsoid:
    """A blob of protein: an ellipsoid with a smooth (error function) edge.

    ``centre_a`` (x, y, z) Angstrom from the particle centre; ``axes`` (3, 3) with the
    ellipsoid's unit axes as columns; ``semi_axes_a`` (3,) the semi-axes along them.
    """

    centre_a: np.ndarray
    axes: np.ndarray
    semi_axes_a: np.ndarray

    def rotated(self, rotation: np.ndarray) -> _Ellipsoid:
        """This blob moved by ``rotation`` (3, 3) about the particle centre."""
        return _Ellipsoid(rotation @ self.centre_a, rotation @ self.axes, self.semi_axes_a)

    @property
    def volume_a3(self) -> float:
        """Volume inside the surface, cubic Angstrom."""
        return 4.0 / 3.0 * math.pi * float(np.prod(self.semi_axes_a))

    def half_extent_a(self) -> np.ndarray:
        """Half-size (x, y, z) of the box outside which the occupancy is negligible (< 1e-9)."""
        scale = 1.0 + _EDGE_TAIL_SIGMAS * _EDGE_A / self.semi_axes_a.min()
        return np.sqrt(((self.axes * self.semi_axes_a * scale) ** 2).sum(axis=1))

    def occupancy(self, offsets_a: np.ndarray) -> np.ndarray:
        """Fraction (0..1) of protein at points ``offsets_a`` (..., 3) (x, y, z) Angstrom
        from the particle centre.

        The edge is an error function of standard deviation ``_EDGE_A`` across the surface,
        using the first-order distance to the surface ``(rho - 1) * rho / |grad rho|``,
        rho being the ellipsoidal radius (1 on the surface).
        """
        scaled = ((offsets_a - self.centre_a) @ self.axes) / self.semi_axes_a
        rho = np.linalg.norm(scaled, axis=-1)
        grad = np.linalg.norm(scaled / self.semi_axes_a, axis=-1)
        reach = np.divide(rho, grad, out=np.full_like(rho, self.semi_axes_a.min()), where=grad > 0)
        return 0.5 * special.erfc((rho - 1.0) * reach / (math.sqrt(2.0) * _EDGE_A))


def _render(blobs: Sequence[_Ellipsoid], pixel_size_a: float, box_px: int) -> np.ndarray:
    """Union of ``blobs`` at ``PROTEIN_CONTRAST_V``, float32 (box, box, box) volts, (z, y, x).

    Overlaps are combined as a probabilistic union, 1 - prod(1 - occupancy), so protein is
    never denser than ``PROTEIN_CONTRAST_V`` and the integral scales with the volume.
    """
    centre = box_px // 2
    empty = np.ones((box_px,) * 3, dtype=np.float32)
    for blob in blobs:
        half_px = blob.half_extent_a() / pixel_size_a
        low = np.floor(blob.centre_a / pixel_size_a - half_px).astype(int) + centre
        high = np.ceil(blob.centre_a / pixel_size_a + half_px).astype(int) + centre + 1
        low, high = np.clip(low, 0, box_px), np.clip(high, 0, box_px)
        x, y, z = ((np.arange(lo, hi) - centre) * pixel_size_a for lo, hi in zip(low, high))
        zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
        region = (slice(low[2], high[2]), slice(low[1], high[1]), slice(low[0], high[0]))
        occupancy = blob.occupancy(np.stack([xx, yy, zz], axis=-1))
        empty[region] *= (1.0 - occupancy).astype(np.float32)
    return PROTEIN_CONTRAST_V * (1.0 - empty)


def _procedural(
    name: str, blobs: Sequence[_Ellipsoid], pixel_size_a: float, diameter_a: float, symmetry: str
) -> Specimen:
    """A specimen of the union of ``blobs`` in the smallest box allowed for ``diameter_a``."""
    box_px = even_ceil(MIN_BOX_OVER_DIAMETER * diameter_a / pixel_size_a)
    return Specimen(name, _render(blobs, pixel_size_a, box_px), pixel_size_a, diameter_a, symmetry)


def _centred(blobs: Sequence[_Ellipsoid]) -> list[_Ellipsoid]:
    """``blobs`` moved so their volume-weighted centre (overlaps ignored) is the origin."""
    volumes = np.array([blob.volume_a3 for blob in blobs])
    centres = np.stack([blob.centre_a for blob in blobs])
    centroid = (volumes[:, None] * centres).sum(axis=0) / volumes.sum()
    return [_Ellipsoid(blob.centre_a - centroid, blob.axes, blob.semi_axes_a) for blob in blobs]


def _apoferritin(pixel_size_a: float) -> Specimen:
    """Hollow 24-mer (symmetry O), outer diameter 12 nm, cavity about 8 nm.

    The seed subunit is a flattened ellipsoid (58 x 38 x 21 A) lying on the shell at radius
    48.5 A beside a two-fold axis, (0, 1, 1); its two-fold partner lies antiparallel beside
    it, the 12 pairs tiling the shell like the faces of a rhombic dodecahedron (about 400 kDa
    of protein at 1.21 A^3/Da; the real 24-mer is about 480 kDa). The long axis is turned
    15 degrees off the x axis so that, like the real particle, the shell has no mirror plane.
    """
    two_fold = np.array([0.0, 1.0, 1.0]) / math.sqrt(2.0)
    across = np.array([0.0, 1.0, -1.0]) / math.sqrt(2.0)
    radial = two_fold + 0.38 * across
    radial /= np.linalg.norm(radial)
    tangent = np.cross(radial, [1.0, 0.0, 0.0])
    twist = math.radians(15.0)  # long axis turned off the x axis: no mirror plane, chiral
    long_axis = math.cos(twist) * np.array([1.0, 0.0, 0.0]) + math.sin(twist) * tangent
    seed = _Ellipsoid(
        centre_a=48.5 * radial,
        axes=_frame(long_axis, tangent),
        semi_axes_a=np.array([29.0, 19.0, 10.5]),
    )
    blobs = [seed.rotated(rotation) for rotation in octahedral_rotations()]
    return _procedural("apoferritin", blobs, pixel_size_a, diameter_a=120.0, symmetry="O")


def _elongated(pixel_size_a: float) -> Specimen:
    """Asymmetric (C1) complex about 25 nm long and 10 nm wide, about 300 kDa.

    Six domains of different sizes along an axis bent in y, plus a side lobe in z.
    """

    def axis_point(s: float) -> np.ndarray:
        return np.array([s, -20.0 * (s / 100.0) ** 2, 0.0])

    def axis_direction(s: float) -> np.ndarray:
        return np.array([1.0, -0.4 * s / 100.0, 0.0])

    # (position along the axis, semi-axes: along it, across it in z, across it in the bend)
    domains = (
        (-102.0, 20.0, 20.0, 18.0),
        (-60.0, 24.0, 28.0, 24.0),
        (-15.0, 26.0, 30.0, 34.0),
        (32.0, 24.0, 26.0, 30.0),
        (75.0, 21.0, 22.0, 24.0),
        (108.0, 16.0, 16.0, 18.0),
    )
    z_axis = [0.0, 0.0, 1.0]
    blobs = [
        _Ellipsoid(axis_point(s), _frame(axis_direction(s), z_axis), np.array(semi_axes_a))
        for s, *semi_axes_a in domains
    ]
    side_lobe = _Ellipsoid(
        axis_point(-15.0) + [0.0, 8.0, 46.0],
        _frame([1.0, 0.0, 0.3], [0.0, 1.0, 0.0]),
        np.array([18.0, 16.0, 15.0]),
    )
    return _procedural(
        "elongated", _centred([*blobs, side_lobe]), pixel_size_a, diameter_a=250.0, symmetry="C1"
    )


def _small(pixel_size_a: float) -> Specimen:
    """Compact C2 dimer, about 6 nm across and 70 kDa; the two-fold axis is z.

    Each protomer is a tilted ellipsoidal lobe with a small knob, so the only symmetry is
    the 180-degree rotation about z.
    """
    lobe = _Ellipsoid(
        np.array([7.0, 0.0, 0.0]),
        _frame([1.0, 0.3, 0.2], [0.0, 0.0, 1.0]),
        np.array([20.0, 26.0, 26.0]),
    )
    knob = _Ellipsoid(np.array([10.0, 12.0, 16.0]), np.eye(3), np.array([8.0, 8.0, 8.0]))
    two_fold = np.diag([-1.0, -1.0, 1.0])
    blobs = [lobe, knob, lobe.rotated(two_fold), knob.rotated(two_fold)]
    return _procedural("small", blobs, pixel_size_a, diameter_a=60.0, symmetry="C2")


#: Random procedural specimens, ``KIND:SEED``: what each kind draws (see :func:`random_specimen`).
RANDOM_SPECIMEN_KINDS = ("random-compact", "random-elongated")


def random_specimen(kind: str, seed: int, pixel_size_a: float) -> Specimen:
    """A random C1 particle of ``kind`` (:data:`RANDOM_SPECIMEN_KINDS`), the same for the same seed.

    ``random-compact``: 3 to 12 ellipsoidal domains (semi-axes 8-35 A) packed inside a
    sphere of radius 25-110 A (about 50-250 A across). ``random-elongated``: 4 to 9 domains
    along a bent axis 120-320 A long and 30-90 A thick. Training on many such particles
    teaches a denoiser what particles in general look like, not one specimen.
    """
    if kind not in RANDOM_SPECIMEN_KINDS:
        raise InputError(kind, f"unknown random specimen kind; choose one of {', '.join(RANDOM_SPECIMEN_KINDS)}")
    rng = np.random.default_rng([seed, RANDOM_SPECIMEN_KINDS.index(kind)])

    def random_axes() -> np.ndarray:
        return _frame(rng.normal(size=3), rng.normal(size=3))

    if kind == "random-compact":
        radius = rng.uniform(25.0, 110.0)
        blobs = []
        for _ in range(int(rng.integers(3, 13))):
            semi = rng.uniform(0.25, 0.6, size=3) * radius
            direction = rng.normal(size=3)
            centre = direction / np.linalg.norm(direction) * rng.uniform(0.0, radius - semi.min())
            blobs.append(_Ellipsoid(centre, random_axes(), np.minimum(semi, 35.0)))
    else:
        length, thickness = rng.uniform(120.0, 320.0), rng.uniform(30.0, 90.0)
        bend = rng.uniform(-0.3, 0.3, size=2)
        positions = np.linspace(-0.5, 0.5, int(rng.integers(4, 10))) * length
        blobs = [
            _Ellipsoid(
                np.array([s, bend[0] * s**2 / length, bend[1] * s**2 / length]),
                random_axes(),
                np.array([length / len(positions) * rng.uniform(0.5, 0.8), *(thickness / 2 * rng.uniform(0.6, 1.0, 2))]),
            )
            for s in positions
        ]
    blobs = _centred(blobs)
    extent = max(float(np.linalg.norm(blob.centre_a) + blob.semi_axes_a.max()) for blob in blobs)
    return _procedural(f"{kind}:{seed}", blobs, pixel_size_a, diameter_a=2 * extent, symmetry="C1")


SHELL_KIND = "shell"
"""``shell:OUTER_A:INNER_A``: a hollow sphere of those diameters (:func:`hollow_sphere`)."""


def hollow_sphere(outer_diameter_a: float, inner_diameter_a: float, pixel_size_a: float) -> Specimen:
    """A hollow sphere of protein (``inner_diameter_a`` 0: a solid ball), centred, symmetry C1.

    Occupancy is the product of two error-function edges of standard deviation ``_EDGE_A``
    (the procedural blobs' edge), at radius ``outer_diameter_a / 2`` falling outwards and at
    ``inner_diameter_a / 2`` falling inwards; protein sits at :data:`PROTEIN_CONTRAST_V`.
    Such a shell of outer diameter 120 A and inner 80 A is what apoferritin looks like at
    20-30 A resolution, without any of the built-in 24-mer's subunits.
    """
    pixel_size_a = check_pixel_size("pixel_size_a", pixel_size_a)
    if not (math.isfinite(outer_diameter_a) and 0 <= inner_diameter_a < outer_diameter_a):
        raise ValueError(f"a shell needs 0 <= inner < outer diameter, got {inner_diameter_a:g} and {outer_diameter_a:g} A")
    box_px = even_ceil(MIN_BOX_OVER_DIAMETER * outer_diameter_a / pixel_size_a)
    axis = (np.arange(box_px) - box_px // 2) * pixel_size_a
    radius = np.sqrt(axis[:, None, None] ** 2 + axis[None, :, None] ** 2 + axis[None, None, :] ** 2)
    width = math.sqrt(2.0) * _EDGE_A
    occupancy = 0.5 * special.erfc((radius - outer_diameter_a / 2) / width)
    if inner_diameter_a > 0:
        occupancy *= 0.5 * special.erfc((inner_diameter_a / 2 - radius) / width)
    volume = (PROTEIN_CONTRAST_V * occupancy).astype(np.float32)
    return Specimen(f"{SHELL_KIND}:{outer_diameter_a:g}:{inner_diameter_a:g}", volume, pixel_size_a,
                    float(outer_diameter_a), "C1")


def shell_from_spec(spec: str, pixel_size_a: float) -> Specimen:
    """``shell:OUTER_A:INNER_A`` (``shell:OUTER_A``: a solid ball) as :func:`hollow_sphere`."""
    try:
        diameters = [float(part) for part in spec.split(":")[1:]]
        if len(diameters) not in (1, 2):
            raise ValueError("give OUTER_A or OUTER_A:INNER_A")
        return hollow_sphere(diameters[0], diameters[1] if len(diameters) == 2 else 0.0, pixel_size_a)
    except ValueError as error:
        raise InputError(spec, f"not a shell specimen shell:OUTER_A:INNER_A ({error})") from None


def is_generated_specimen(spec: str) -> bool:
    """Whether ``spec`` names a specimen cryoscore makes itself (built-in, random or shell) rather than a file."""
    kind, _, parameters = spec.partition(":")
    return (spec in BUILTIN_SPECIMENS or (kind in RANDOM_SPECIMEN_KINDS and parameters.isdigit())
            or (kind == SHELL_KIND and bool(parameters)))


#: Built-in procedural specimens: name -> builder taking the pixel size (Angstrom).
BUILTIN_SPECIMENS: Mapping[str, Callable[[float], Specimen]] = types.MappingProxyType(
    {"apoferritin": _apoferritin, "elongated": _elongated, "small": _small}
)


def builtin_specimen(name: str, pixel_size_a: float) -> Specimen:
    """The built-in specimen ``name`` (a key of :data:`BUILTIN_SPECIMENS`) sampled at
    ``pixel_size_a`` Angstrom per voxel; InputError for an unknown name or a bad pixel size."""
    if name not in BUILTIN_SPECIMENS:
        raise InputError(
            name, f"unknown built-in specimen; choose one of {', '.join(BUILTIN_SPECIMENS)}"
        )
    return BUILTIN_SPECIMENS[name](check_pixel_size("pixel_size_a", pixel_size_a))
