"""Particle pickers: simulated and real particles are found, noise is not, files are written."""

from __future__ import annotations

import json

import mrcfile
import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist, pdist

from cryoscore import __version__
from cryoscore.errors import InputError
from cryoscore.io.coords import ParticleCoordinates, read_coordinates
from cryoscore.io.layout import DatasetLayout
from cryoscore.io.mrc import read_mrc, write_mrc
from cryoscore.pick import pick_blobs, pick_micrographs, pick_template
from cryoscore.pick.peaks import flatten_background
from cryoscore.simulate.dataset import SimulationConfig, render_truth, sample_halves, write_dataset
from cryoscore.simulate.procedural import builtin_specimen

PIXEL_A = 3.5
DIAMETER_A = 120.0  # the built-in apoferritin
RADIUS_PX = DIAMETER_A / PIXEL_A / 2
# 16 apoferritins of 34 px on 384 x 384 px at a low dose (10 e/A^2): a moderately noisy micrograph.
CONFIG = SimulationConfig(
    specimen="apoferritin",
    n_micrographs=1,
    size_px=384,
    pixel_size_a=PIXEL_A,
    particles_per_micrograph=16,
    dose_e_per_a2=10.0,
    n_frames=8,
    seed=11,
)


@pytest.fixture(scope="module")
def specimen():
    return builtin_specimen("apoferritin", PIXEL_A)


@pytest.fixture(scope="module")
def truth(specimen):
    return render_truth(CONFIG, specimen, 0)


def _xy(coordinates: ParticleCoordinates) -> np.ndarray:
    return np.stack([coordinates.x_px, coordinates.y_px], axis=1)


def _matched_distances(picks: np.ndarray, true_xy: np.ndarray, max_distance: float) -> np.ndarray:
    """Distances of the one-to-one (Hungarian) matches of picks (n, 2) to true centres (m, 2) within max_distance."""
    if len(picks) == 0 or len(true_xy) == 0:
        return np.zeros(0)
    distances = cdist(picks, true_xy)
    rows, cols = linear_sum_assignment(np.where(distances <= max_distance, distances, 1e9))
    matched = distances[rows, cols]
    return matched[matched <= max_distance]


def _recall_precision(coordinates: ParticleCoordinates, true_xy: np.ndarray, n_picks: int) -> tuple[float, float]:
    """Recall and precision of the best ``n_picks`` picks, matched within half a diameter."""
    picks = _xy(coordinates)[:n_picks]
    n_matched = len(_matched_distances(picks, true_xy, RADIUS_PX))
    return n_matched / len(true_xy), n_matched / max(len(picks), 1)


def _true_xy(truth) -> np.ndarray:
    return truth.centres_rc[:, ::-1]


def test_blob_picker_finds_the_particles_of_a_clean_image(truth):
    true_xy = _true_xy(truth)
    picks = pick_blobs(truth.clean.numpy(), PIXEL_A, DIAMETER_A)
    recall, precision = _recall_precision(picks, true_xy, len(true_xy))
    assert recall >= 0.9 and precision >= 0.9
    # Well centred: the hollow shell's rim is uneven, so a few pixels off at most (34 px particle).
    distances = _matched_distances(_xy(picks)[: len(true_xy)], true_xy, RADIUS_PX)
    assert np.median(distances) < 0.15 * 2 * RADIUS_PX


def test_picks_are_sorted_apart_inside_and_obey_the_limits(truth):
    image = truth.clean.numpy()
    picks = pick_blobs(image, PIXEL_A, DIAMETER_A)
    scores = picks.figure_of_merit
    assert len(picks) > len(truth.centres_rc)  # every local maximum, for a precision-recall sweep
    assert np.all(np.diff(scores) <= 0) and np.all(scores > 0)
    assert pdist(_xy(picks)).min() >= RADIUS_PX
    height, width = image.shape
    assert picks.x_px.min() >= RADIUS_PX and picks.x_px.max() <= width - 1 - RADIUS_PX
    assert picks.y_px.min() >= RADIUS_PX and picks.y_px.max() <= height - 1 - RADIUS_PX

    limited = pick_blobs(image, PIXEL_A, DIAMETER_A, max_picks=5)
    np.testing.assert_allclose(_xy(limited), _xy(picks)[:5])
    threshold = float(np.median(scores))
    above = pick_blobs(image, PIXEL_A, DIAMETER_A, threshold=threshold)
    assert len(above) == np.count_nonzero(scores > threshold)


def test_blob_scores_are_in_noise_units(truth):
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(384, 384)).astype(np.float32)
    noise_top = pick_blobs(noise, PIXEL_A, DIAMETER_A).figure_of_merit[0]
    assert noise_top < 5  # the largest of ~100 local maxima of a unit-variance field
    clean = truth.clean.numpy()
    particle_scores = pick_blobs(clean, PIXEL_A, DIAMETER_A, max_picks=len(truth.centres_rc)).figure_of_merit
    assert particle_scores.min() > 2 * noise_top
    # Robust scaling: an affine change of the image's intensities changes no score.
    rescaled = pick_blobs(3.0 * clean + 1000.0, PIXEL_A, DIAMETER_A, max_picks=len(truth.centres_rc))
    np.testing.assert_allclose(rescaled.figure_of_merit, particle_scores, rtol=1e-3)


@pytest.mark.parametrize("with_ctf", [True, False], ids=["ctf", "no-ctf"])
def test_template_picker_finds_the_particles_of_a_noisy_micrograph(truth, specimen, with_ctf):
    true_xy = _true_xy(truth)
    noisy = sum(half.numpy() for half in sample_halves(truth))
    ctf = truth.ctf if with_ctf else None
    picks = pick_template(noisy, PIXEL_A, DIAMETER_A, specimen.volume_v, ctf, angular_step_deg=45)
    recall, _ = _recall_precision(picks, true_xy, len(true_xy))
    assert recall >= 0.8
    assert np.all(np.diff(picks.figure_of_merit) <= 0)


def _dark_disc(shape: tuple[int, int], centre_xy: tuple[float, float], radius_px: float) -> np.ndarray:
    """A 1-valued image with a smooth-edged disc at 0 (sub-pixel centre, x = column)."""
    rows, cols = np.indices(shape, dtype=np.float64)
    distance = np.hypot(cols - centre_xy[0], rows - centre_xy[1])
    return (1.0 - 1.0 / (1.0 + np.exp((distance - radius_px) / 0.7))).astype(np.float32)


def _sphere(diameter_px: float) -> np.ndarray:
    """A uniform ball (D, D, D) of ``diameter_px`` centred on voxel D//2."""
    size = 2 * int(np.ceil(0.75 * diameter_px))
    z, y, x = np.indices((size,) * 3) - size // 2
    return (np.sqrt(x**2 + y**2 + z**2) <= diameter_px / 2).astype(np.float32)


@pytest.mark.parametrize("diameter_px", [20.0, 72.0, 96.0], ids=["unbinned", "bin3", "bin4"])
def test_picks_are_in_the_original_pixel_frame(diameter_px):
    centre_xy = (300.3, 211.7)
    image = _dark_disc((512, 480), centre_xy, diameter_px / 2)
    blob = pick_blobs(image, 1.0, diameter_px, max_picks=1)
    template = pick_template(image, 1.0, diameter_px, _sphere(diameter_px), None, angular_step_deg=90, max_picks=1)
    for picks in (blob, template):
        assert np.hypot(picks.x_px[0] - centre_xy[0], picks.y_px[0] - centre_xy[1]) < 1.5


def test_blob_picker_recalls_annotated_particles_of_a_real_micrograph(apoferritin_dir):
    name = "May08_03.13.02"
    image, pixel_a = read_mrc(apoferritin_dir / "micrographs" / f"{name}.mrc")
    annotated = _xy(read_coordinates(apoferritin_dir / "coordinates" / f"{name}.star"))
    picks = pick_blobs(image, pixel_a, DIAMETER_A)
    n_picks = int(1.5 * len(annotated))
    matched = _matched_distances(_xy(picks)[:n_picks], annotated, DIAMETER_A / pixel_a / 2)
    # Measured 0.73 (0.62-0.76 over the ten micrographs); 10% of the annotations lie
    # within a radius of the edge, where the picker does not pick.
    assert len(matched) / len(annotated) >= 0.65


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory) -> DatasetLayout:
    config = SimulationConfig(size_px=256, pixel_size_a=4.0, particles_per_micrograph=8, n_micrographs=2, seed=3)
    layout = DatasetLayout(tmp_path_factory.mktemp("pick") / "data")
    write_dataset(config, layout.root, progress=False)
    return layout


def test_pick_micrographs_writes_a_star_file_per_micrograph_and_a_record(tmp_path, small_dataset):
    inputs = [small_dataset.micrograph(name) for name in small_dataset.micrograph_names()]
    records = pick_micrographs(inputs, tmp_path / "blob", DIAMETER_A, progress=False)
    assert [record.status for record in records] == ["ok"] * len(inputs)
    outputs = [tmp_path / "blob" / f"{path.stem}.star" for path in inputs]
    for path, output in zip(inputs, outputs):
        image, pixel_a = read_mrc(path)
        written = read_coordinates(output)
        expected = pick_blobs(image, pixel_a, DIAMETER_A)
        np.testing.assert_allclose(_xy(written), _xy(expected), atol=1e-5)
        np.testing.assert_allclose(written.figure_of_merit, expected.figure_of_merit, atol=1e-5)
    record = json.loads((tmp_path / "blob" / "pick.json").read_text())
    assert record["picker"] == "blob" and record["diameter_a"] == DIAMETER_A
    assert record["cryoscore_version"] == __version__ and record["threshold"] is None
    assert record["command_line"] is None  # called from Python, not the command line
    assert [entry["pixel_size_a"] for entry in record["micrographs"]] == [4.0, 4.0]

    pick_micrographs(
        inputs, tmp_path / "template", DIAMETER_A, picker="template",
        reference=str(small_dataset.reference), angular_step_deg=60, max_picks=5, progress=False,
    )
    assert all(len(read_coordinates(tmp_path / "template" / output.name)) == 5 for output in outputs)
    record = json.loads((tmp_path / "template" / "pick.json").read_text())
    assert record["reference"] == str(small_dataset.reference) and record["ctf"] is None


def _no_pixel_size(path):
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.zeros((64, 64), dtype=np.float32))
    return path


BAD_FILES = {
    # case: (make the bad input in tmp_path, text its failure names)
    "missing file": (lambda tmp: tmp / "absent.mrc", "cannot open the file"),
    "not an MRC file": (lambda tmp: tmp / "notes.mrc", "not an MRC file"),
    "no pixel size": (lambda tmp: _no_pixel_size(tmp / "bare.mrc"), "pixel size"),
    "a stack": (lambda tmp: tmp / "stack.mrcs", "stack of 2 sections"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_micrograph_that_cannot_be_used_fails_alone(tmp_path, small_dataset, case):
    (tmp_path / "notes.mrc").write_text("not an image\n")
    write_mrc(tmp_path / "stack.mrcs", np.zeros((2, 32, 32), dtype=np.float32), 1.0)
    make_input, problem = BAD_FILES[case]
    bad = make_input(tmp_path)
    records = pick_micrographs([bad, small_dataset.micrograph("mic_0000")], tmp_path / "out", DIAMETER_A,
                               progress=False)
    assert [record.status for record in records] == ["failed", "ok"]
    assert records[0].error.startswith(str(bad)) and problem in records[0].error
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["mic_0000.star", "pick.json"]
    entries = json.loads((tmp_path / "out" / "pick.json").read_text())["micrographs"]
    assert entries[0]["status"] == "failed" and entries[0]["error"] == records[0].error


BAD_INPUTS = {
    # case: (make the bad input in tmp_path -> extra inputs, keyword arguments, text the message names)
    "same stem": (lambda tmp: [tmp / "other" / "mic_0000.mrc"], {}, "mic_0000.mrc"),
    "bad diameter": (lambda tmp: [], {"diameter_a": 0.0}, "--diameter"),
    "no reference": (lambda tmp: [], {"picker": "template"}, "--reference"),
    "missing reference": (lambda tmp: [], {"picker": "template", "reference": "absent.pdb"}, "absent.pdb"),
    "unknown picker": (lambda tmp: [], {"picker": "topaz"}, "--picker"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_pick_micrographs_rejects_bad_options_before_writing(tmp_path, small_dataset, case):
    (tmp_path / "other").mkdir()
    write_mrc(tmp_path / "other" / "mic_0000.mrc", np.zeros((32, 32), dtype=np.float32), 4.0)
    make_inputs, options, named = BAD_INPUTS[case]
    inputs = [small_dataset.micrograph("mic_0000"), *make_inputs(tmp_path)]
    options = {"diameter_a": DIAMETER_A, **options}
    with pytest.raises(InputError, match=named):
        pick_micrographs(inputs, tmp_path / "out", progress=False, **options)
    assert not (tmp_path / "out").exists()


def test_local_normalised_correlation_is_pearson_with_the_best_template():
    from cryoscore.pick.template import local_normalised_correlation

    rng = np.random.default_rng(5)
    size = 9
    templates = torch.from_numpy(rng.normal(size=(3, size, size)).astype(np.float32))
    templates -= templates.mean(dim=(-2, -1), keepdim=True)
    templates /= torch.linalg.vector_norm(templates, dim=(-2, -1), keepdim=True)
    image = rng.normal(size=(40, 50)).astype(np.float32)
    image[10:19, 20:29] = 5 * templates[1].numpy() + 2.0  # an exact copy, scaled and offset
    correlation = local_normalised_correlation(image, templates)
    assert correlation.shape == (40 - size + 1, 50 - size + 1)
    assert correlation[10, 20] == pytest.approx(1.0, abs=0.01)
    # Brute force at a few windows: Pearson of the window with each template, best one.
    for row, column in [(0, 0), (5, 33), (31, 41)]:
        window = image[row:row + size, column:column + size].ravel()
        expected = max(np.corrcoef(window, template.numpy().ravel())[0, 1] for template in templates)
        assert correlation[row, column] == pytest.approx(expected, abs=0.02)
    # Pure noise correlates weakly with every template (Pearson over 81 pixels: sd about 0.11).
    noise = local_normalised_correlation(rng.normal(size=(60, 60)).astype(np.float32), templates)
    assert np.abs(noise).mean() < 0.15 and noise.max() < 0.6


def test_the_median_background_follows_a_carbon_edge_that_the_gaussian_one_leaves():
    """A sharp step of 10 (a carbon edge) under sparse particles of peak 1: the Gaussian background
    (one diameter) leaves a band of the step a few units deep either side of it, the median one
    (two diameters, edge-following) little of it, and the flat field and the particles as they are."""
    diameter_px = 16.0
    rows, columns = np.mgrid[:256, :256]
    edge_distance = (columns + 0.3 * rows - 140) / np.hypot(1, 0.3)
    centres = [(row, column) for row in range(24, 240, 48) for column in range(24, 240, 48)]
    to_nearest = np.min([np.hypot(rows - row, columns - column) for row, column in centres], axis=0)
    particles = np.exp(-(to_nearest ** 2) / (2 * (diameter_px / 4) ** 2))
    image = np.where(edge_distance >= 0, 10.0, 0.0) + particles
    beside_edge = (np.abs(edge_distance) > diameter_px / 2) & (np.abs(edge_distance) < 2 * diameter_px)
    away = to_nearest > diameter_px
    far_particles = [(row, column) for row, column in centres if abs(edge_distance[row, column]) > 2 * diameter_px]
    gaussian, median = (flatten_background(image, diameter_px, method) for method in ("gaussian", "median"))
    left_by_gaussian = np.abs(gaussian[beside_edge & away]).max()
    left_by_median = np.abs(median[beside_edge & away]).max()
    assert left_by_gaussian > 3 and left_by_median < 0.3 * left_by_gaussian  # measured 3.81 and 1.05
    assert np.abs(median[(np.abs(edge_distance) > 2 * diameter_px) & away]).max() < 0.05  # measured 0.0
    assert min(median[row, column] for row, column in far_particles) > 0.95  # peaks of 1
    with pytest.raises(ValueError, match="median, gaussian"):
        flatten_background(image, diameter_px, "mean")
