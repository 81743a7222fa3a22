"""Tests of the specimen potentials: built-in particles, user maps, atomic models."""

from __future__ import annotations

import gzip
from pathlib import Path

import gemmi
import mrcfile
import numpy as np
import pytest

from cryoscore.errors import InputError
from cryoscore.simulate.procedural import BUILTIN_SPECIMENS, builtin_specimen
from cryoscore.simulate.specimen import (
    MIN_BOX_OVER_DIAMETER,
    PROTEIN_CONTRAST_V,
    Specimen,
    measure_diameter_a,
    octahedral_rotations,
)
from cryoscore.simulate.volume import load_specimen, specimen_from_map, specimen_from_model

PIXEL_A = 2.0


@pytest.fixture(scope="module")
def builtins() -> dict[str, Specimen]:
    return {name: builtin_specimen(name, PIXEL_A) for name in BUILTIN_SPECIMENS}


def radii_a(size: int, pixel_size_a: float) -> np.ndarray:
    """Distance (Angstrom) of every voxel of a (size,)*3 grid from voxel size//2."""
    offsets = (np.arange(size) - size // 2) * pixel_size_a
    z, y, x = np.meshgrid(offsets, offsets, offsets, indexing="ij")
    return np.sqrt(x**2 + y**2 + z**2)


def centroid_a(volume: np.ndarray, pixel_size_a: float) -> np.ndarray:
    """Potential-weighted centre (z, y, x), Angstrom from voxel D//2."""
    size = volume.shape[0]
    offsets = [(np.indices(volume.shape)[axis] - size // 2) for axis in range(3)]
    return np.array([(offset * volume).sum() / volume.sum() for offset in offsets]) * pixel_size_a


# ----------------------------------------------------------------------------- built-ins


@pytest.mark.parametrize("name", list(BUILTIN_SPECIMENS))
def test_builtin_is_a_valid_centred_volume_of_the_stated_size(builtins, name):
    specimen = builtins[name]
    volume = specimen.volume_v
    size = volume.shape[0]
    assert specimen.name == name and specimen.pixel_size_a == PIXEL_A
    assert volume.dtype == np.float32 and volume.shape == (size, size, size) and size % 2 == 0
    assert np.isfinite(volume).all()
    assert volume.min() >= 0.0
    assert volume.max() == pytest.approx(PROTEIN_CONTRAST_V, rel=1e-3)
    assert size * PIXEL_A >= MIN_BOX_OVER_DIAMETER * specimen.diameter_a
    measured = measure_diameter_a(volume, PIXEL_A, level_fraction=0.05)
    assert measured == pytest.approx(specimen.diameter_a, rel=0.15)
    # Nothing outside the sphere inscribed in the box, so rotated projections cannot wrap.
    assert volume[radii_a(size, PIXEL_A) >= size // 2 * PIXEL_A].max() < 1e-2
    np.testing.assert_allclose(centroid_a(volume, PIXEL_A), 0.0, atol=PIXEL_A)


def test_builtins_differ_in_size_and_symmetry(builtins):
    diameters = {name: specimen.diameter_a for name, specimen in builtins.items()}
    assert diameters["small"] < diameters["apoferritin"] < diameters["elongated"]
    assert diameters == {"apoferritin": 120.0, "elongated": 250.0, "small": 60.0}
    symmetries = {name: specimen.symmetry for name, specimen in builtins.items()}
    assert symmetries == {"apoferritin": "O", "elongated": "C1", "small": "C2"}
    masses = {name: s.volume_v.sum() * PIXEL_A**3 for name, s in builtins.items()}
    assert masses["small"] < masses["elongated"] and masses["small"] < masses["apoferritin"]


@pytest.mark.parametrize("name", list(BUILTIN_SPECIMENS))
def test_builtin_integrated_potential_does_not_depend_on_pixel_size(builtins, name):
    coarse = builtins[name].volume_v.sum(dtype=np.float64) * PIXEL_A**3
    fine = builtin_specimen(name, 1.0).volume_v.sum(dtype=np.float64) * 1.0**3
    assert fine == pytest.approx(coarse, rel=0.03)


def test_apoferritin_is_a_hollow_shell(builtins):
    volume = builtins["apoferritin"].volume_v
    radius = radii_a(volume.shape[0], PIXEL_A)
    shell = volume[np.abs(radius - 50.0) < PIXEL_A]
    assert shell.mean() > 0.6 * PROTEIN_CONTRAST_V
    assert volume[radius < 30.0].max() < 1e-3
    assert volume[radius < 35.0].mean() < 0.01 * shell.mean()
    assert volume[radius > 66.0].max() < 0.05 * PROTEIN_CONTRAST_V


def test_octahedral_rotations_form_the_group():
    rotations = octahedral_rotations()
    assert rotations.shape == (24, 3, 3)
    np.testing.assert_array_equal(rotations[0], np.eye(3))
    identities = np.tile(np.eye(3), (24, 1, 1))
    np.testing.assert_allclose(rotations @ rotations.transpose(0, 2, 1), identities)
    np.testing.assert_allclose(np.linalg.det(rotations), 1.0)
    keys = {r.astype(int).tobytes() for r in rotations}
    assert len(keys) == 24
    products = {(a @ b).astype(int).tobytes() for a in rotations for b in rotations}
    assert products == keys


def test_apoferritin_is_invariant_under_its_grid_rotations(builtins):
    # A 90-degree grid rotation about voxel D//2 maps index i to D - i: index 0 has no image,
    # so compare on the sub-cube [1:, 1:, 1:], whose centre is still voxel D//2. Rotations
    # about two axes generate the whole octahedral group.
    volume = builtins["apoferritin"].volume_v
    assert np.abs(volume[0]).max() == 0.0
    sub = volume[1:, 1:, 1:]
    for axes in ((0, 1), (1, 2), (0, 2)):
        np.testing.assert_allclose(np.rot90(sub, axes=axes), sub, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.transpose(sub, (1, 2, 0)), sub, rtol=0, atol=1e-5)  # 3-fold
    # 432 holds no mirror: the subunits' arrangement is chiral.
    assert np.abs(np.flip(sub, axis=0) - sub).max() > 0.5


def test_projection_along_z_is_four_fold_for_apoferritin_only(builtins):
    def four_fold_error(volume: np.ndarray) -> float:
        projection = volume.sum(axis=0)[1:, 1:]
        return float(np.abs(np.rot90(projection) - projection).max() / projection.max())

    assert four_fold_error(builtins["apoferritin"].volume_v) < 1e-5
    assert four_fold_error(builtins["elongated"].volume_v) > 0.2
    assert four_fold_error(builtins["small"].volume_v) > 0.05


def test_small_has_its_two_fold_about_z_and_no_other(builtins):
    sub = builtins["small"].volume_v[1:, 1:, 1:]
    two_fold_z = np.rot90(sub, 2, axes=(1, 2))
    np.testing.assert_allclose(two_fold_z, sub, rtol=0, atol=1e-5)
    for axes in ((0, 1), (0, 2)):
        assert np.abs(np.rot90(sub, 2, axes=axes) - sub).max() > 0.5


def test_measure_diameter_of_a_sphere():
    radius = radii_a(64, 1.5)
    ball = (radius <= 30.0).astype(np.float32)
    assert measure_diameter_a(ball, 1.5) == pytest.approx(61.5, abs=1.5)


def test_specimen_validation():
    good = np.zeros((10, 10, 10), np.float32)
    Specimen("x", good, 2.0, 16.0, "C1")
    with pytest.raises(ValueError, match="even"):
        Specimen("x", np.zeros((9, 9, 9), np.float32), 2.0, 10.0, "C1")
    with pytest.raises(ValueError, match="cube"):
        Specimen("x", np.zeros((10, 10, 12), np.float32), 2.0, 10.0, "C1")
    with pytest.raises(ValueError, match="float32"):
        Specimen("x", good.astype(np.float64), 2.0, 10.0, "C1")
    with pytest.raises(ValueError, match="NaN"):
        Specimen("x", np.full((10, 10, 10), np.nan, np.float32), 2.0, 10.0, "C1")
    with pytest.raises(ValueError, match="smaller"):
        Specimen("x", good, 2.0, 17.0, "C1")
    with pytest.raises(ValueError, match="point group"):
        Specimen("x", good, 2.0, 10.0, "P1")
    with pytest.raises(ValueError, match="pixel_size_a"):
        Specimen("x", good, 0.0, 10.0, "C1")


# ----------------------------------------------------------------------------- atomic models


@pytest.mark.parametrize(
    ("name", "diameter_range_a"),
    [("7a4m_apoferritin_chainA.pdb", (50.0, 75.0)), ("3j5p_trpv1.pdb", (100.0, 170.0))],
)
def test_specimen_from_model(shared_data, name, diameter_range_a):
    path = shared_data("models", name)
    structure = gemmi.read_structure(str(path))
    structure.remove_waters()
    atoms = structure[0].count_occupancies()  # alternate conformations share one atom
    per_atom = {}
    for pixel_size_a in (2.0, 3.0):
        specimen = specimen_from_model(path, pixel_size_a)
        volume = specimen.volume_v
        assert specimen.symmetry == "C1" and volume.shape[0] % 2 == 0
        assert volume.min() >= 0.0
        np.testing.assert_allclose(centroid_a(volume, pixel_size_a), 0.0, atol=pixel_size_a)
        assert diameter_range_a[0] < specimen.diameter_a < diameter_range_a[1]
        measured = measure_diameter_a(volume, pixel_size_a)
        assert measured == pytest.approx(specimen.diameter_a, rel=0.15)
        per_atom[pixel_size_a] = volume.sum(dtype=np.float64) * pixel_size_a**3 / atoms
    # C, N, O have f_e(0) of 2.5, 2.2, 2.0 A: about 95-120 V*A^3 each (47.878 V*A^2 per A).
    assert 95.0 < per_atom[2.0] < 125.0
    assert per_atom[3.0] == pytest.approx(per_atom[2.0], rel=0.01)


def test_specimen_from_model_reads_gzipped_mmcif(tmp_path, shared_data):
    model = shared_data("models", "7a4m_apoferritin_chainA.pdb")
    structure = gemmi.read_structure(str(model))
    structure.setup_entities()
    gz_path = tmp_path / "subunit.cif.gz"
    gz_path.write_bytes(gzip.compress(structure.make_mmcif_document().as_string().encode()))
    from_cif = load_specimen(str(gz_path), 3.0)
    from_pdb = load_specimen(str(model), 3.0)
    np.testing.assert_allclose(from_cif.volume_v, from_pdb.volume_v, atol=1e-4)


# ----------------------------------------------------------------------------- user maps


def write_map(path: Path, volume: np.ndarray, pixel_size_a: float) -> None:
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.ascontiguousarray(volume, dtype=np.float32))
        mrc.voxel_size = pixel_size_a


def test_specimen_from_map_keeps_size_and_centre(builtins, tmp_path):
    reference = builtins["elongated"]
    # Arbitrary units: scaled and offset.
    path = tmp_path / "elongated.mrc"
    write_map(path, 7.0 * reference.volume_v + 100.0, PIXEL_A)
    specimen = load_specimen(str(path), 3.0)
    assert specimen.name == "elongated.mrc" and specimen.symmetry == "C1"
    assert specimen.pixel_size_a == 3.0 and specimen.volume_v.shape[0] % 2 == 0
    assert np.percentile(specimen.volume_v, 99.9) == pytest.approx(PROTEIN_CONTRAST_V, rel=1e-3)
    reference_diameter = measure_diameter_a(reference.volume_v, PIXEL_A)
    assert specimen.diameter_a == pytest.approx(reference_diameter, rel=0.1)
    assert specimen.diameter_a == pytest.approx(reference.diameter_a, rel=0.1)
    np.testing.assert_allclose(
        centroid_a(specimen.volume_v, 3.0), centroid_a(reference.volume_v, PIXEL_A), atol=0.5
    )
    # The integral survives the resampling (up to the percentile scaling).
    scale = PROTEIN_CONTRAST_V / np.percentile(reference.volume_v, 99.9)
    expected = reference.volume_v.sum(dtype=np.float64) * PIXEL_A**3 * scale
    assert specimen.volume_v.sum(dtype=np.float64) * 27.0 == pytest.approx(expected, rel=0.02)


def test_specimen_from_map_pads_an_odd_non_cubic_map(builtins, tmp_path):
    reference = builtins["small"]
    volume = reference.volume_v
    # Crops chosen so that each axis' centre n//2 stays on the particle centre.
    cropped = volume[2:-1, 1:, :]
    path = tmp_path / "cropped.map"
    write_map(path, cropped, PIXEL_A)
    specimen = specimen_from_map(path, 1.5)
    assert specimen.volume_v.shape[0] % 2 == 0
    np.testing.assert_allclose(
        centroid_a(specimen.volume_v, 1.5), centroid_a(volume, PIXEL_A), atol=0.3
    )
    assert specimen.diameter_a == pytest.approx(measure_diameter_a(volume, PIXEL_A), rel=0.1)


def test_specimen_from_map_rejects_an_empty_map(tmp_path):
    path = tmp_path / "flat.mrc"
    write_map(path, np.ones((8, 8, 8)), PIXEL_A)
    with pytest.raises(InputError, match="no density"):
        specimen_from_map(path, PIXEL_A)


# ----------------------------------------------------------------------------- errors


def test_load_specimen_dispatches_builtin_names(builtins):
    specimen = load_specimen("small", PIXEL_A)
    np.testing.assert_array_equal(specimen.volume_v, builtins["small"].volume_v)


@pytest.mark.parametrize("spec", ["ribosome", "missing_model.pdb", "missing_map.mrc"])
def test_unknown_specimen_is_an_input_error(spec, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="unknown specimen; choose one of apoferritin"):
        load_specimen(spec, PIXEL_A)


def test_existing_file_of_an_unknown_kind_is_an_input_error(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("apoferritin\n")
    with pytest.raises(InputError, match="unknown specimen"):
        load_specimen(str(path), PIXEL_A)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hello, this is not a model\n", "no atoms"),
        ("ATOM  garbage garbage\n", "cannot read the atomic model"),
        (
            "ATOM      1  CA  GLY A   1      10.000  10.000  10.000  1.00 20.00           X\n",
            "no electron scattering factors for element",
        ),
    ],
)
def test_bad_atomic_model_is_an_input_error(tmp_path, text, message):
    path = tmp_path / "bad.pdb"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as info:
        load_specimen(str(path), PIXEL_A)
    assert "\n" not in str(info.value)


def test_bad_pixel_size_is_an_input_error():
    with pytest.raises(InputError, match="pixel size"):
        builtin_specimen("small", 0.0)
    with pytest.raises(InputError, match="unknown built-in specimen"):
        builtin_specimen("ribosome", PIXEL_A)


@pytest.mark.parametrize("kind", ["random-compact", "random-elongated"])
def test_random_specimens_are_reproducible_and_sized_as_documented(kind):
    from cryoscore.simulate.volume import load_specimen

    specimens = [load_specimen(f"{kind}:{seed}", 4.0) for seed in range(6)]
    again = load_specimen(f"{kind}:0", 4.0)
    np.testing.assert_array_equal(again.volume_v, specimens[0].volume_v)
    diameters = [specimen.diameter_a for specimen in specimens]
    low, high = (45, 260) if kind == "random-compact" else (120, 480)
    assert all(low <= diameter <= high for diameter in diameters), diameters
    assert len({round(diameter) for diameter in diameters}) == 6  # each seed draws another particle
    assert all(specimen.volume_v.max() == pytest.approx(3.0, rel=0.02) for specimen in specimens)


def test_a_shell_is_hollow_with_the_stated_diameters_and_its_volume():
    from cryoscore.simulate.procedural import hollow_sphere, is_generated_specimen

    pixel_a = 2.0
    shell = load_specimen("shell:120:80", pixel_a)
    assert shell.name == "shell:120:80" and shell.diameter_a == 120.0 and shell.symmetry == "C1"
    volume = shell.volume_v
    centre = volume.shape[0] // 2
    profile = volume[centre, centre, centre:]  # along +x, voxel i at 2 i A
    assert profile[0] == pytest.approx(0.0, abs=1e-3)            # the cavity (radius < 40 A)
    assert profile[25] == pytest.approx(3.0, rel=1e-3)           # 50 A: inside the wall
    assert profile[20] == pytest.approx(1.5, rel=1e-3)           # 40 A: half-way up the inner edge
    assert profile[30] == pytest.approx(1.5, rel=1e-3)           # 60 A: half-way down the outer edge
    assert profile[35] == pytest.approx(0.0, abs=1e-3)           # 70 A: outside
    expected_a3 = 4 / 3 * np.pi * (60.0**3 - 40.0**3)            # error-function edges keep the volume
    assert volume.sum() * pixel_a**3 / 3.0 == pytest.approx(expected_a3, rel=0.02)
    ball = hollow_sphere(100.0, 0.0, pixel_a)
    assert ball.volume_v[ball.volume_v.shape[0] // 2, ball.volume_v.shape[0] // 2, ball.volume_v.shape[0] // 2] == pytest.approx(3.0)
    assert [is_generated_specimen(spec) for spec in ("apoferritin", "random-compact:3", "shell:120:80",
                                                      "shell:", "random-compact:x", "map.mrc")] == [
        True, True, True, False, False, False]


@pytest.mark.parametrize("spec", ["shell:80:120", "shell:abc", "shell:120:80:40", "shell:-5"])
def test_a_bad_shell_is_an_input_error(spec):
    with pytest.raises(InputError, match="not a shell specimen shell:OUTER_A:INNER_A"):
        load_specimen(spec, PIXEL_A)
