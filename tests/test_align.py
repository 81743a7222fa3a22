"""Movie alignment (cryoscore.preprocess.align, ``cryoscore align``) on simulated movies with a
known stage drift: shifts recovered to a fraction of a pixel, sharper sums, the dataset layout
``train`` reads, and clear errors for movies that cannot be aligned."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import starfile

from cryoscore.io.layout import DatasetLayout
from cryoscore.io.movie import open_movie
from cryoscore.io.mrc import read_mrc, write_mrc
from cryoscore.pairs.halves import pairs_from_dataset, pairs_from_movies
from cryoscore.preprocess.align import AlignSettings, align_frames
from cryoscore.simulate.background import BackgroundParams
from cryoscore.simulate.dataset import SimulationConfig, write_dataset


@pytest.fixture(scope="module")
def drifting_movies(tmp_path_factory):
    """Two 384 px movies of 16 frames at 1.5 A/px, 40 e/A^2, 15 A of drift each, frames written."""
    root = tmp_path_factory.mktemp("movies") / "data"
    write_dataset(SimulationConfig(specimen="apoferritin", n_micrographs=2, size_px=384, pixel_size_a=1.5,
                                   particles_per_micrograph=12, dose_e_per_a2=40.0, n_frames=16, drift_a=15.0,
                                   write_frames=True, background=BackgroundParams(vitreous_ice_a=300.0), seed=4),
                  root, progress=False)
    return DatasetLayout(root)


def _frames(path):
    with open_movie(path) as movie:
        return np.stack([movie.frame(index) for index in range(movie.n_frames)]), movie.pixel_size_a


def _band_correlation(first, second, pixel_a, low_a, high_a):
    """Fourier ring correlation of two images pooled over the band between ``low_a`` and ``high_a``."""
    a, b = np.fft.rfft2(first - first.mean()), np.fft.rfft2(second - second.mean())
    k = np.sqrt(np.fft.fftfreq(first.shape[0], pixel_a)[:, None] ** 2 + np.fft.rfftfreq(first.shape[1], pixel_a) ** 2)
    band = (k > 1 / low_a) & (k < 1 / high_a)
    return float(np.real(np.sum(a[band] * np.conj(b[band]))) / np.sqrt(np.sum(np.abs(a[band]) ** 2) * np.sum(np.abs(b[band]) ** 2)))


def test_alignment_recovers_the_drift_to_a_fraction_of_a_pixel_and_sharpens_the_halves(drifting_movies):
    manifest = json.loads(drifting_movies.manifest.read_text())
    for entry in manifest["micrographs"]:
        frames, pixel_a = _frames(drifting_movies.frames(entry["name"]))
        aligned = align_frames(frames, pixel_a)
        truth = np.array(entry["frame_shifts_px"])
        truth -= truth.mean(axis=0)
        error = np.sqrt(np.mean(np.sum((aligned.shifts_px - truth) ** 2, axis=1)))
        assert error < 0.5, error
        assert np.linalg.norm(truth[-1] - truth[0]) > 8  # the drift was worth correcting
        even, odd = read_mrc(drifting_movies.even(entry["name"]))[0], read_mrc(drifting_movies.odd(entry["name"]))[0]
        before = _band_correlation(even, odd, pixel_a, 12.0, 5.0)
        after = _band_correlation(aligned.even, aligned.odd, pixel_a, 12.0, 5.0)
        assert after > before + 0.02, (before, after)
        np.testing.assert_allclose(aligned.full_sum, aligned.even + aligned.odd, rtol=1e-5, atol=1e-3)


def test_a_still_movie_stays_still(tmp_path):
    rng = np.random.default_rng(0)
    scene = rng.normal(size=(256, 256)).astype(np.float32)
    frames = np.stack([rng.poisson(np.clip(20 + 8 * scene, 0, None)).astype(np.float32) for _ in range(8)])
    aligned = align_frames(frames, 2.0, AlignSettings(resolution_range_a=(300.0, 8.0)))
    assert np.abs(aligned.shifts_px).max() < 0.3


def test_cryoscore_align_writes_what_train_reads_and_refuses_bad_movies(tmp_path, drifting_movies):
    movies = sorted(str(path) for path in (drifting_movies.root / "frames").glob("*.mrcs"))
    command = [sys.executable, "-m", "cryoscore.cli", "align"]
    ran = subprocess.run(command + movies + ["-o", str(tmp_path / "aligned")], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert "2 movies aligned" in ran.stdout and "Warning" not in ran.stderr
    pairs = pairs_from_dataset(tmp_path / "aligned")
    assert [pair.name for pair in pairs] == ["mic_0000", "mic_0001"]
    motion = starfile.read(tmp_path / "aligned" / "motion" / "mic_0000.star", always_dict=True)
    assert len(motion["global_shift"]) == 16 and motion["general"]["rlnImageSizeZ"] == 16
    record = json.loads((tmp_path / "aligned" / "align.json").read_text())["movies"][0]
    assert record["frames"] == 16 and record["total_drift_px"] > 8

    frames, pixel_a = _frames(movies[0])
    write_mrc(tmp_path / "one_frame.mrc", frames[0], pixel_a)
    failed = subprocess.run(command + [str(tmp_path / "one_frame.mrc"), "-o", str(tmp_path / "x")],
                            capture_output=True, text=True)
    assert failed.returncode == 2 and "at least 2 frames" in failed.stderr
    write_mrc(tmp_path / "gain.mrc", np.ones((100, 100), dtype=np.float32), pixel_a)
    failed = subprocess.run(command + [movies[0], "-o", str(tmp_path / "y"), "--gain", str(tmp_path / "gain.mrc")],
                            capture_output=True, text=True)
    assert failed.returncode == 2 and "gain.mrc" in failed.stderr and len(failed.stderr.strip().splitlines()) == 1


def test_training_pairs_from_movies_can_be_aligned_first(drifting_movies, tmp_path):
    movies = sorted((drifting_movies.root / "frames").glob("*.mrcs"))[:1]
    aligned = pairs_from_movies(movies, align=AlignSettings())[0]
    frames, pixel_a = _frames(movies[0])
    expected = align_frames(frames, pixel_a)
    np.testing.assert_allclose(aligned.even, expected.even, rtol=1e-5, atol=1e-3)
    as_recorded = pairs_from_movies(movies)[0]
    assert _band_correlation(aligned.even, aligned.odd, pixel_a, 12.0, 5.0) > \
        _band_correlation(as_recorded.even, as_recorded.odd, pixel_a, 12.0, 5.0)
    refused = subprocess.run([sys.executable, "-m", "cryoscore.cli", "train", str(drifting_movies.root), "--align", "--method", "n2n",
                              "-o", str(tmp_path / "m.pt")], capture_output=True, text=True)
    assert refused.returncode == 2 and "--align: applies to --movies only" in refused.stderr
