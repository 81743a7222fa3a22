"""Tests for cryoscore.io.movie: MRC and TIFF movies, frame by frame."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest
import tifffile

from cryoscore.errors import InputError
from cryoscore.io.movie import even_odd_sums, open_movie, write_movie


@pytest.fixture
def counts():
    """Seven 16 x 20 frames of electron counts."""
    return np.random.default_rng(2).poisson(1.5, size=(7, 16, 20)).astype(np.float32)


def _one_at_a_time(frames):
    """A generator, so write_movie cannot know the frames in advance."""
    yield from frames


@pytest.mark.parametrize("name", ["movie.mrcs", "movie.MRC", "movie.tif", "movie.TIFF"])
def test_round_trip_frame_by_frame(tmp_path, counts, name):
    path = tmp_path / name
    write_movie(path, _one_at_a_time(counts), 1.1, n_frames=len(counts))
    with open_movie(path, pixel_size_a=1.1) as movie:
        assert movie.n_frames == 7 and movie.shape == (7, 16, 20)
        assert movie.pixel_size_a == 1.1 and movie.path == path
        for index, expected in enumerate(counts):
            frame = movie.frame(index)
            assert frame.dtype == np.float32
            np.testing.assert_array_equal(frame, expected)


def test_mrc_movie_keeps_pixel_size(tmp_path, counts):
    path = tmp_path / "movie.mrc"
    write_movie(path, counts, 0.9, n_frames=len(counts))
    with open_movie(path) as movie:
        assert movie.pixel_size_a == 0.9


def test_equal_frames_give_identical_mrc_movies(tmp_path, counts):
    for name in ("a.mrcs", "b.mrcs"):
        write_movie(tmp_path / name, iter(counts), 1.5, n_frames=len(counts))
    assert (tmp_path / "a.mrcs").read_bytes() == (tmp_path / "b.mrcs").read_bytes()
    with mrcfile.open(tmp_path / "a.mrcs") as mrc:  # no time of writing in the header
        assert mrc.header.label[0].startswith(b"cryoscore ")


def test_tiff_is_zlib_compressed_uint16_for_counts_else_float32(tmp_path, counts):
    path = tmp_path / "counts.tif"
    write_movie(path, counts, 1.0, n_frames=len(counts))
    with tifffile.TiffFile(path) as tif:
        assert len(tif.pages) == 7
        assert all(page.dtype == np.uint16 for page in tif.pages)
        assert all(page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE for page in tif.pages)

    smooth = counts + 0.25
    path = tmp_path / "float.tiff"
    write_movie(path, smooth, 1.0, n_frames=len(smooth), compression=None)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].dtype == np.float32
        assert tif.pages[0].compression == tifffile.COMPRESSION.NONE
    with open_movie(path, pixel_size_a=1.0) as movie:
        np.testing.assert_array_equal(movie.frame(6), smooth[6])


@pytest.mark.parametrize("name", ["movie.mrcs", "movie.tif"])
def test_even_odd_sums(tmp_path, counts, name):
    path = tmp_path / name
    write_movie(path, counts, 1.0, n_frames=len(counts))
    with open_movie(path, pixel_size_a=1.0) as movie:
        even, odd = even_odd_sums(movie)
    assert even.dtype == odd.dtype == np.float32
    np.testing.assert_allclose(even, counts[0::2].sum(axis=0))
    np.testing.assert_allclose(odd, counts[1::2].sum(axis=0))


def test_even_odd_sums_needs_two_frames(tmp_path, counts):
    path = tmp_path / "one.mrcs"
    write_movie(path, counts[:1], 1.0, n_frames=1)
    with open_movie(path) as movie:
        with pytest.raises(InputError, match="at least 2 frames for even/odd sums, found 1"):
            even_odd_sums(movie)


def test_tiff_needs_a_pixel_size(tmp_path, counts):
    path = tmp_path / "movie.tif"
    write_movie(path, counts, 1.0, n_frames=len(counts))
    with pytest.raises(InputError, match="no pixel size for a TIFF movie; pass --pixel-size"):
        open_movie(path)


def test_bad_movie_files(tmp_path):
    with pytest.raises(InputError, match="unsupported movie format '.eer'"):
        open_movie(tmp_path / "movie.eer")
    with pytest.raises(InputError, match="cannot open the file"):
        open_movie(tmp_path / "missing.tif", pixel_size_a=1.0)
    text = tmp_path / "text.tif"
    text.write_text("not a tiff\n")
    with pytest.raises(InputError, match="not a readable TIFF file"):
        open_movie(text, pixel_size_a=1.0)
    rgb = tmp_path / "rgb.tif"
    tifffile.imwrite(rgb, np.zeros((8, 8, 3), dtype=np.uint8), photometric="rgb")
    with pytest.raises(InputError, match="2D grey images"):
        open_movie(rgb, pixel_size_a=1.0)


@pytest.mark.parametrize("name", ["movie.mrcs", "movie.tif"])
@pytest.mark.parametrize("n_frames", [6, 8])
def test_write_checks_the_frame_count(tmp_path, counts, name, n_frames):
    with pytest.raises(ValueError, match="n_frames"):
        write_movie(tmp_path / name, _one_at_a_time(counts), 1.0, n_frames=n_frames)
    assert list(tmp_path.iterdir()) == []


def test_write_refuses_mixed_or_bad_frames(tmp_path, counts):
    with pytest.raises(ValueError, match="frame 1 is not integers"):
        write_movie(tmp_path / "mixed.tif", [counts[0], counts[1] + 0.5], 1.0, n_frames=2)
    with pytest.raises(ValueError, match="shape"):
        write_movie(tmp_path / "shapes.mrcs", [counts[0], counts[1, :8]], 1.0, n_frames=2)
    with pytest.raises(ValueError, match="NaN"):
        write_movie(tmp_path / "nan.mrcs", [counts[0] * np.nan], 1.0, n_frames=1)
    assert list(tmp_path.iterdir()) == []
