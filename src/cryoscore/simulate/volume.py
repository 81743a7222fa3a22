"""Specimens from any source, by name: :func:`load_specimen`; user maps and atomic models.

What a specimen is: :class:`cryoscore.simulate.specimen.Specimen`.

Sources, all reachable through :func:`load_specimen`:

- built-in procedural particles (:mod:`cryoscore.simulate.procedural`): unions of smooth-edged
  ellipsoids evaluated analytically at the voxel centres, so they look the same at any
  pixel size; protein sits at :data:`PROTEIN_CONTRAST_V`; random ones of the same kind
  (``random-compact:SEED``, :func:`random_specimen`);
- a smooth-edged hollow sphere (``shell:OUTER_A:INNER_A``, :func:`hollow_sphere`): a
  featureless stand-in for a hollow particle, e.g. an independent low-resolution model of
  apoferritin;
- a user map (:func:`specimen_from_map`), rescaled from arbitrary units;
- an atomic model (:func:`specimen_from_model`), through gemmi's electron scattering factors;
  no solvent is subtracted there, so its values are against vacuum (about twice the contrast).
"""

from __future__ import annotations

import os
from pathlib import Path

import gemmi
import numpy as np
import scipy.fft
from scipy import ndimage

from cryoscore.errors import InputError
from cryoscore.fourier import pad_or_crop_centred, radial_frequency
from cryoscore.io.mrc import check_pixel_size, read_mrc
from cryoscore.simulate.procedural import (
    BUILTIN_SPECIMENS,
    RANDOM_SPECIMEN_KINDS,
    SHELL_KIND,
    builtin_specimen,
    random_specimen,
    shell_from_spec,
)
from cryoscore.simulate.specimen import (
    MIN_BOX_OVER_DIAMETER,
    PROTEIN_CONTRAST_V,
    VOLTS_A3_PER_SCATTERING_A,
    Specimen,
    even_ceil,
    max_distance,
    measure_diameter_a,
)

#: Percentile of a user map that is set to PROTEIN_CONTRAST_V.
_MAP_SCALE_PERCENTILE = 99.9

#: Empty space added around an atomic model: box edge = 2 * radius * 1.3 + 2 * margin.
_MODEL_BOX_OVER_DIAMETER = 1.3

_MODEL_MARGIN_A = 10.0

_MAP_SUFFIXES = (".mrc", ".map", ".mrcs")

_MODEL_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif")


def _resample(cube: np.ndarray, scale: float) -> np.ndarray:
    """Resample ``cube`` (N, N, N) to ``scale`` times coarser voxels, keeping voxel N//2 on
    the new centre M//2; M is even and covers at least the same extent.

    When coarsening, frequencies past the new Nyquist are first removed (raised-cosine
    edge from 0.8 to 1.0 of it) so they do not alias; then cubic-spline interpolation.
    """
    size = cube.shape[0]
    if scale > 1.0:
        nyquist = 0.5 / scale  # cycles per input voxel
        freq = radial_frequency(cube.shape)
        ramp = np.clip((nyquist - freq) / (0.2 * nyquist), 0.0, 1.0)
        transfer = (0.5 - 0.5 * np.cos(np.pi * ramp)).astype(np.float32)
        cube = scipy.fft.irfftn(scipy.fft.rfftn(cube) * transfer, s=cube.shape)
    new_size = even_ceil(size / scale)
    return ndimage.affine_transform(
        cube, np.full(3, scale), offset=size // 2 - (new_size // 2) * scale,
        output_shape=(new_size,) * 3, order=3, mode="constant", cval=0.0,
    )


def specimen_from_map(path: str | os.PathLike, pixel_size_a: float) -> Specimen:
    """A specimen from a user's 3D map (MRC), resampled to ``pixel_size_a`` Angstrom per voxel.

    The map's pixel size comes from its header. Maps are in arbitrary units, so:
    the background (median of the outermost voxels) is subtracted, the map is zero-padded
    to a cube (voxel n//2 of each axis staying the centre), resampled, and scaled so that
    its 99.9th percentile equals :data:`PROTEIN_CONTRAST_V`. ``diameter_a`` is the extent of
    the voxels above 10% of the maximum; the box is padded to at least
    ``MIN_BOX_OVER_DIAMETER`` diameters. The particle is not re-centred: the map's centre
    voxel is the particle centre. Symmetry is unknown ("C1").

    Raises InputError for an unreadable map, a bad pixel size or a map with no positive density.
    """
    pixel_size_a = check_pixel_size("pixel_size_a", pixel_size_a)
    data, map_pixel_a = read_mrc(path, ndim=3)
    faces = [np.take(data, index, axis).ravel() for axis in range(3) for index in (0, -1)]
    data -= np.median(np.concatenate(faces))
    volume = _resample(pad_or_crop_centred(data, max(data.shape)), pixel_size_a / map_pixel_a)
    level = float(np.percentile(volume, _MAP_SCALE_PERCENTILE))
    if not level > 0:
        raise InputError(path, "the map has no density above its background")
    volume *= PROTEIN_CONTRAST_V / level
    diameter_a = measure_diameter_a(volume, pixel_size_a)
    size = max(volume.shape[0], even_ceil(MIN_BOX_OVER_DIAMETER * diameter_a / pixel_size_a))
    volume = pad_or_crop_centred(volume, size).astype(np.float32)
    return Specimen(Path(path).name, volume, pixel_size_a, diameter_a, "C1")


def specimen_from_model(path: str | os.PathLike, pixel_size_a: float) -> Specimen:
    """A specimen from an atomic model (PDB or mmCIF, optionally gzipped).

    The first model's atoms (waters removed, occupancies honoured, hydrogens used when
    present) are put on a P1 cubic grid of spacing ``pixel_size_a``, centroid of the atom
    positions at voxel D//2, with gemmi's ``DensityCalculatorE``: a sum of each atom's
    electron scattering factor (International Tables C 4.3.2.2, five Gaussians, in
    Angstrom) Fourier-transformed to real space with its B factor, i.e. a density in
    A^-2 whose integral over an atom is f_e(0) in A. Multiplying by h^2/(2 pi m0 e) =
    47.878 V*A^2 gives the potential in volts. Every atom's B is raised by the same amount
    (gemmi's refmac-compatible blur) so that the sharpest atom has B = 8 pi^2 / 1.1 *
    pixel_size_a^2, a Gaussian of about 0.95 voxel: atoms are resolved on the grid, their
    integrals are kept, and the map is band-limited at about the Nyquist frequency (this is
    what ``d_min = 2 * pixel_size_a`` would mean; gemmi's ``d_min`` itself only chooses a
    grid spacing, rounded to FFT-friendly sizes, so the grid is set explicitly instead).

    No solvent is subtracted and hydrogens absent from the file are not added: this is the
    potential against vacuum, roughly twice the contrast against ice that the procedural
    specimens carry (about 6-7 V inside protein instead of 3 V).
    ``diameter_a`` is the largest distance between two atoms. Symmetry "C1": only the
    atoms in the file are used (no assembly or NCS expansion).

    Raises InputError for a file gemmi cannot read, one without atoms, or atoms of an
    element without scattering factors (X, or beyond Cf).
    """
    pixel_size_a = check_pixel_size("pixel_size_a", pixel_size_a)
    try:
        structure = gemmi.read_structure(os.fspath(path))
    except (RuntimeError, ValueError, OSError) as err:
        reason = " ".join(str(err).split())  # gemmi's messages span lines
        raise InputError(path, f"cannot read the atomic model ({reason})") from err
    structure.remove_waters()
    if len(structure) == 0 or structure[0].count_atom_sites() == 0:
        raise InputError(path, "no atoms in the atomic model")
    model = structure[0]
    atoms = [cra.atom for cra in model.all()]
    unknown = {atom.element.name for atom in atoms if atom.element.c4322 is None}
    unknown |= {atom.element.name for atom in atoms if atom.element.atomic_number == 0}
    if unknown:
        elements = ", ".join(sorted(unknown))
        raise InputError(path, f"no electron scattering factors for element(s) {elements}")
    positions = np.array([atom.pos.tolist() for atom in atoms])
    centroid = positions.mean(axis=0)
    radius_a = float(np.linalg.norm(positions - centroid, axis=1).max())
    box_a = 2.0 * radius_a * _MODEL_BOX_OVER_DIAMETER + 2.0 * _MODEL_MARGIN_A
    box_px = even_ceil(box_a / pixel_size_a)
    shift = (box_px // 2) * pixel_size_a - centroid
    model.transform_pos_and_adp(gemmi.Transform(gemmi.Mat33(), gemmi.Vec3(*shift)))

    calculator = gemmi.DensityCalculatorE()
    edge_a = box_px * pixel_size_a
    calculator.grid.set_unit_cell(gemmi.UnitCell(edge_a, edge_a, edge_a, 90.0, 90.0, 90.0))
    calculator.grid.spacegroup = gemmi.find_spacegroup_by_name("P 1")
    calculator.grid.set_size(box_px, box_px, box_px)  # d_min stays 0: keep this exact grid
    calculator.set_refmac_compatible_blur(model)
    calculator.put_model_density_on_grid(model)
    density = np.asarray(calculator.grid).transpose(2, 1, 0)  # (x, y, z) -> (z, y, x)
    volume = np.ascontiguousarray(density * VOLTS_A3_PER_SCATTERING_A, dtype=np.float32)
    return Specimen(Path(path).name, volume, pixel_size_a, max_distance(positions), "C1")


def load_specimen(spec: str, pixel_size_a: float) -> Specimen:
    """A specimen from a built-in name, ``random-compact:SEED`` / ``random-elongated:SEED``,
    ``shell:OUTER_A:INNER_A``, an MRC map (.mrc, .map, .mrcs) or an atomic model
    (.pdb, .ent, .cif, .mmcif, each optionally .gz), sampled at ``pixel_size_a`` A/voxel.

    Raises InputError for anything else.
    """
    if spec in BUILTIN_SPECIMENS:
        return builtin_specimen(spec, pixel_size_a)
    kind, _, seed = spec.partition(":")
    if kind in RANDOM_SPECIMEN_KINDS and seed.isdigit():
        return random_specimen(kind, int(seed), check_pixel_size("pixel_size_a", pixel_size_a))
    if kind == SHELL_KIND:
        return shell_from_spec(spec, pixel_size_a)
    path = Path(spec)
    name = path.name.lower()
    if path.is_file() and name.endswith(_MAP_SUFFIXES):
        return specimen_from_map(path, pixel_size_a)
    if path.is_file() and name.removesuffix(".gz").endswith(_MODEL_SUFFIXES):
        return specimen_from_model(path, pixel_size_a)
    raise InputError(
        spec,
        f"unknown specimen; choose one of {', '.join(BUILTIN_SPECIMENS)}, "
        f"{' or '.join(kind + ':SEED' for kind in RANDOM_SPECIMEN_KINDS)}, {SHELL_KIND}:OUTER_A:INNER_A, "
        "or give an MRC map or a PDB/mmCIF model",
    )
