"""Tests for cryoscore.io.coords: STAR, EMAN .box and CSV coordinate files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import starfile

from cryoscore.errors import InputError
from cryoscore.io.coords import ParticleCoordinates, read_coordinates, write_coordinates


@pytest.fixture
def full():
    """Four particles with every optional field, at values exact to 6 decimals."""
    return ParticleCoordinates(
        x_px=[10.5, 20.25, 30.0, 1239.0],
        y_px=[5.0, 6.5, 7.125, 1199.0],
        figure_of_merit=[0.9, 0.8, 0.7, 0.6],
        angles_deg=[[10.0, 20.0, 30.0], [-40.0, 50.0, 60.0], [0.0, 90.0, 180.0], [1.5, 2.5, 3.5]],
        defocus_u_a=[15000.0, 15100.5, 15200.0, 15300.0],
        defocus_v_a=[14000.0, 14100.0, 14200.25, 14300.0],
        defocus_angle_deg=[45.0, 46.0, 47.0, 48.5],
    )


def _assert_same(got, expected, fields):
    assert len(got) == len(expected)
    for field in fields:
        np.testing.assert_allclose(getattr(got, field), getattr(expected, field), atol=1e-6)


ALL_FIELDS = (
    "x_px", "y_px", "figure_of_merit", "angles_deg", "defocus_u_a", "defocus_v_a",
    "defocus_angle_deg",
)


def test_star_round_trip_with_relion_columns(tmp_path, full):
    path = tmp_path / "mic.star"
    write_coordinates(path, full)
    _assert_same(read_coordinates(path), full, ALL_FIELDS)

    blocks = starfile.read(path, always_dict=True)
    assert list(blocks) == [""]  # one unnamed block, like RELION's per-micrograph files
    table = starfile.read(path)
    assert list(table.columns) == [
        "rlnCoordinateX", "rlnCoordinateY", "rlnAutopickFigureOfMerit", "rlnAngleRot",
        "rlnAngleTilt", "rlnAnglePsi", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle",
    ]
    np.testing.assert_allclose(table["rlnCoordinateX"], full.x_px)
    np.testing.assert_allclose(table["rlnAnglePsi"], full.angles_deg[:, 2])
    np.testing.assert_allclose(table["rlnDefocusV"], full.defocus_v_a)


def test_star_with_only_coordinates(tmp_path, full):
    path = tmp_path / "xy.star"
    write_coordinates(path, ParticleCoordinates(full.x_px, full.y_px))
    assert list(starfile.read(path).columns) == ["rlnCoordinateX", "rlnCoordinateY"]
    got = read_coordinates(path)
    _assert_same(got, full, ("x_px", "y_px"))
    assert got.figure_of_merit is None and got.angles_deg is None and got.defocus_u_a is None


def test_star_block_is_found_among_several(tmp_path, full):
    path = tmp_path / "blocks.star"
    table = pd.DataFrame({"rlnCoordinateX": full.x_px, "rlnCoordinateY": full.y_px})
    starfile.write({"general": {"rlnImageSizeX": 1240}, "coordinates": table}, path)
    _assert_same(read_coordinates(path), full, ("x_px", "y_px"))


@pytest.mark.parametrize("name", ["empty.star", "empty.box", "empty.csv"])
def test_zero_particles_round_trip(tmp_path, name):
    path = tmp_path / name
    write_coordinates(path, ParticleCoordinates(np.empty(0), np.empty(0)), box_size_px=64)
    got = read_coordinates(path)
    assert len(got) == 0 and got.x_px.shape == (0,) and got.y_px.dtype == np.float64


def test_box_round_trip_centres_boxes(tmp_path, full):
    path = tmp_path / "mic.box"
    write_coordinates(path, full, box_size_px=100)
    rows = np.loadtxt(path)
    np.testing.assert_allclose(rows[0], [10.5 - 50, 5.0 - 50, 100, 100])  # corner, no y flip
    got = read_coordinates(path, box_size_px=100)
    _assert_same(got, full, ("x_px", "y_px"))
    assert got.figure_of_merit is None
    with pytest.raises(InputError, match="differ from the expected 64 px"):
        read_coordinates(path, box_size_px=64)


def test_box_needs_a_box_size_to_write(tmp_path, full):
    with pytest.raises(InputError, match="needs a box size"):
        write_coordinates(tmp_path / "mic.box", full)
    assert list(tmp_path.iterdir()) == []


def test_csv_round_trip(tmp_path, full):
    path = tmp_path / "mic.csv"
    write_coordinates(path, full)
    assert path.read_text().splitlines()[0] == "x,y,score"
    got = read_coordinates(path)
    _assert_same(got, full, ("x_px", "y_px", "figure_of_merit"))
    assert got.angles_deg is None
    path.write_text("x,y\n1.5,2.5\n")
    got = read_coordinates(path)
    assert got.x_px.tolist() == [1.5] and got.y_px.tolist() == [2.5]
    assert got.figure_of_merit is None


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("no_x.star", "data_\nloop_\n_rlnCoordinateY\n1\n", "one data block with rlnCoordinateX"),
        ("no_y.star", "data_\nloop_\n_rlnCoordinateX\n1\n", "missing column rlnCoordinateY"),
        ("text.star", "data_\nloop_\n_rlnCoordinateX\n_rlnCoordinateY\n1 a\n", "non-numeric"),
        ("ragged.star", "data_\nloop_\n_rlnCoordinateX\n_rlnCoordinateY\n1 2 3\n", "STAR"),
        ("nan.star", "data_\nloop_\n_rlnCoordinateX\n_rlnCoordinateY\n1 nan\n", "y_px has 1 NaN"),
        ("no_y.csv", "x,score\n1,2\n", "missing column y"),
        ("empty.csv", "", "not a readable CSV file"),
        ("short.box", "1 2 3\n", "line 1: expected numbers"),
        ("words.box", "10 10 64 64\n\na b c d\n", "line 3: expected numbers"),
        ("mic.txt", "1 2\n", "unsupported coordinate format '.txt'"),
    ],
)
def test_bad_coordinate_files(tmp_path, name, content, problem):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputError, match=problem) as info:
        read_coordinates(path)
    assert info.value.source == str(path)


def test_missing_file_and_several_micrographs(tmp_path):
    with pytest.raises(InputError, match="cannot open the file"):
        read_coordinates(tmp_path / "missing.star")
    path = tmp_path / "particles.star"
    starfile.write(
        pd.DataFrame({
            "rlnCoordinateX": [1.0, 2.0],
            "rlnCoordinateY": [1.0, 2.0],
            "rlnMicrographName": ["a.mrc", "b.mrc"],
        }),
        path,
    )
    with pytest.raises(InputError, match="particles of 2 micrographs"):
        read_coordinates(path)


def test_particle_coordinates_validation():
    coords = ParticleCoordinates(np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    assert len(coords) == 2 and coords.x_px.dtype == np.float64
    with pytest.raises(ValueError):
        coords.x_px[0] = 5.0  # read-only: the dataclass is frozen all the way down
    with pytest.raises(ValueError, match=r"y_px must have shape \(2,\)"):
        ParticleCoordinates([1.0, 2.0], [3.0])
    with pytest.raises(ValueError, match=r"angles_deg must have shape \(2, 3\)"):
        ParticleCoordinates([1.0, 2.0], [3.0, 4.0], angles_deg=[1.0, 2.0])
    with pytest.raises(ValueError, match="x_px has 1 NaN or infinite"):
        ParticleCoordinates([np.inf, 2.0], [3.0, 4.0])


def test_real_relion_coordinates(apoferritin_dir):
    paths = sorted((apoferritin_dir / "coordinates").glob("*.star"))
    assert len(paths) == 10
    for path in paths:
        coords = read_coordinates(path)
        assert 149 <= len(coords) <= 178
        assert np.all((coords.x_px >= 0) & (coords.x_px < 1240))
        assert np.all((coords.y_px >= 0) & (coords.y_px < 1200))
        table = starfile.read(path)
        np.testing.assert_array_equal(coords.x_px, table["rlnCoordinateX"])
        np.testing.assert_array_equal(coords.y_px, table["rlnCoordinateY"])


def test_scoring_at_least_keeps_the_annotations_of_the_kept_particles():
    coordinates = ParticleCoordinates(x_px=[1, 2, 3], y_px=[4, 5, 6], figure_of_merit=[0.5, 2.0, 1.0],
                                      defocus_u_a=[10000, 11000, 12000])
    kept = coordinates.scoring_at_least(1.0)
    np.testing.assert_array_equal(kept.x_px, [2, 3])
    np.testing.assert_array_equal(kept.defocus_u_a, [11000, 12000])
    assert kept.angles_deg is None
    assert coordinates.scoring_at_least(None) is coordinates
    assert len(coordinates.scoring_at_least(5.0)) == 0
    with pytest.raises(ValueError, match="no figure of merit"):
        ParticleCoordinates(x_px=[1], y_px=[1]).scoring_at_least(0.0)
