"""Tests for cryoscore.io.mrc: reading, lazy stacks, atomic writing, and bad files."""

from __future__ import annotations

import hashlib

import mrcfile
import numpy as np
import pytest

from cryoscore.errors import InputError
from cryoscore.io.mrc import open_mrc_stack, read_half_pair, read_mrc, write_mrc


def _write_raw(path, data, voxel_size=1.5):
    """Write ``data`` with mrcfile directly, keeping its dtype (and so its MRC mode)."""
    with mrcfile.new(path, data, overwrite=True) as mrc:
        mrc.voxel_size = voxel_size
    return path


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def image():
    return np.random.default_rng(0).normal(size=(24, 32)).astype(np.float32)


@pytest.mark.parametrize("float16", [False, True])
def test_write_read_round_trip(tmp_path, image, float16):
    path = tmp_path / "image.mrc"
    write_mrc(path, image, 1.23, float16=float16)
    data, pixel_size_a = read_mrc(path)
    assert data.dtype == np.float32 and data.flags.c_contiguous and data.flags.writeable
    expected = image.astype(np.float16).astype(np.float32) if float16 else image
    np.testing.assert_array_equal(data, expected)
    assert pixel_size_a == 1.23
    with mrcfile.open(path) as mrc:
        assert mrc.header.mode == (12 if float16 else 2)
        assert mrc.header.dmax == pytest.approx(expected.max())
        assert mrc.header.rms == pytest.approx(expected.std(), rel=1e-3)


def test_write_read_stack(tmp_path):
    stack = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    path = tmp_path / "stack.mrcs"
    write_mrc(path, stack, 2.0)
    data, pixel_size_a = read_mrc(path, ndim=3)
    np.testing.assert_array_equal(data, stack)
    assert pixel_size_a == 2.0
    with mrcfile.open(path) as mrc:
        assert mrc.is_image_stack()


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.float32, np.uint16, np.float16])
def test_reads_every_supported_mode(tmp_path, dtype):
    values = np.array([[0, 1, 2], [3, 4, 100]], dtype=dtype)
    path = _write_raw(tmp_path / "mode.mrc", values)
    data, pixel_size_a = read_mrc(path)
    assert data.dtype == np.float32
    np.testing.assert_array_equal(data, values.astype(np.float32))
    assert pixel_size_a == 1.5


def test_pixel_size_override_and_missing(tmp_path, image):
    path = _write_raw(tmp_path / "no_pixel.mrc", image, voxel_size=0)
    with pytest.raises(InputError, match="no pixel size in the header; pass --pixel-size") as info:
        read_mrc(path)
    assert info.value.source == str(path)
    assert read_mrc(path, pixel_size_a=3.5)[1] == 3.5
    with pytest.raises(InputError, match="positive"):
        read_mrc(path, pixel_size_a=0.0)


def test_stack_where_image_expected_and_vice_versa(tmp_path, image):
    stack = _write_raw(tmp_path / "stack.mrcs", np.stack([image] * 3))
    with pytest.raises(InputError, match="expected a 2D image .* stack of 3 sections"):
        read_mrc(stack)
    single = _write_raw(tmp_path / "single.mrc", image)
    with pytest.raises(InputError, match="expected a stack or volume"):
        read_mrc(single, ndim=3)


@pytest.mark.filterwarnings("ignore:Data array contains NaN")
def test_non_finite_pixels(tmp_path, image):
    image[3, 4] = np.nan
    image[5, 6] = np.inf
    path = _write_raw(tmp_path / "nan.mrc", image)
    with pytest.raises(InputError, match="2 of 768 pixels are NaN or infinite"):
        read_mrc(path)


def test_truncated_file(tmp_path, image):
    good = tmp_path / "good.mrc"
    write_mrc(good, image, 1.0)
    cut = tmp_path / "cut.mrc"
    cut.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(InputError, match="truncated: header says 3072 bytes of data, found 2972"):
        read_mrc(cut)
    with pytest.raises(InputError, match="truncated"):
        open_mrc_stack(cut)


def test_file_longer_than_its_header(tmp_path, image):
    path = tmp_path / "long.mrc"
    write_mrc(path, image, 1.0)
    path.write_bytes(path.read_bytes() + b"\0" * 8)
    with pytest.raises(InputError, match="8 bytes longer"):
        read_mrc(path)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "file is empty"),
        (b"hello, this is not an image\n", "not an MRC file"),
        (b"x" * 2000, r"not an MRC file \(bad header\)"),
    ],
)
def test_not_an_mrc_file(tmp_path, content, problem):
    path = tmp_path / "x.mrc"
    path.write_bytes(content)
    with pytest.raises(InputError, match=problem) as info:
        read_mrc(path)
    assert str(info.value).startswith(str(path))


def test_missing_file_and_unsupported_mode(tmp_path):
    with pytest.raises(InputError, match="cannot open the file"):
        read_mrc(tmp_path / "missing.mrc")
    path = _write_raw(tmp_path / "complex.mrc", np.ones((4, 4), dtype=np.complex64))
    with pytest.raises(InputError, match="unsupported MRC mode 4"):
        read_mrc(path)


def test_half_pair(tmp_path, image):
    even = _write_raw(tmp_path / "even.mrc", image)
    odd = _write_raw(tmp_path / "odd.mrc", image + 1)
    got_even, got_odd, pixel_size_a = read_half_pair(even, odd)
    np.testing.assert_array_equal(got_even, image)
    np.testing.assert_array_equal(got_odd, image + 1)
    assert pixel_size_a == 1.5

    small = _write_raw(tmp_path / "small.mrc", image[:10])
    with pytest.raises(InputError, match=r"shape \(10, 32\) differs .* \(24, 32\)") as info:
        read_half_pair(even, small)
    assert info.value.source == str(small)

    other_pixel = _write_raw(tmp_path / "other.mrc", image, voxel_size=2.0)
    with pytest.raises(InputError, match="pixel size 2.0 A differs .* 1.5 A") as info:
        read_half_pair(even, other_pixel)
    assert info.value.source == str(other_pixel)
    assert read_half_pair(even, other_pixel, pixel_size_a=1.0)[2] == 1.0


def test_stack_reads_sections_lazily(tmp_path):
    stack = np.random.default_rng(1).normal(size=(5, 6, 7)).astype(np.float32)
    path = _write_raw(tmp_path / "stack.mrcs", stack, voxel_size=0.8)
    with open_mrc_stack(path) as lazy:
        assert len(lazy) == 5 and lazy.shape == (5, 6, 7)
        assert lazy.pixel_size_a == 0.8 and lazy.dtype == np.float32
        sections = [lazy[i] for i in range(len(lazy))]
        np.testing.assert_array_equal(lazy[-1], stack[4])
        with pytest.raises(IndexError):
            lazy[5]
    for got, expected in zip(sections, stack):
        np.testing.assert_array_equal(got, expected)
    assert not np.shares_memory(sections[0], sections[1])
    sections[0][:] = 0  # a copy: writable, and neither the file nor the other sections change
    np.testing.assert_array_equal(read_mrc(path, ndim=3)[0], stack)
    with pytest.raises(ValueError, match="closed"):
        lazy[0]


@pytest.mark.filterwarnings("ignore:Data array contains NaN")
def test_stack_of_one_and_non_finite_section(tmp_path, image):
    with open_mrc_stack(_write_raw(tmp_path / "one.mrc", image)) as lazy:
        assert lazy.shape == (1, 24, 32)
        np.testing.assert_array_equal(lazy[0], image)
    bad = np.stack([image, image])
    bad[1, 0, 0] = np.nan
    with open_mrc_stack(_write_raw(tmp_path / "bad.mrcs", bad)) as lazy:
        lazy[0]
        with pytest.raises(InputError, match="section 1: 1 of 768 pixels"):
            lazy[1]


def test_reading_leaves_the_file_untouched(tmp_path, image):
    path = _write_raw(tmp_path / "input.mrc", image)
    before = _sha256(path)
    read_mrc(path)
    with open_mrc_stack(path) as lazy:
        lazy[0]
    assert _sha256(path) == before


def test_failed_write_leaves_nothing_behind(tmp_path, image, monkeypatch):
    real_new = mrcfile.new

    def new_then_fail(name, *args, **kwargs):
        real_new(name, *args, **kwargs).close()
        raise OSError("disk full")

    monkeypatch.setattr(mrcfile, "new", new_then_fail)
    target = tmp_path / "out.mrc"
    with pytest.raises(OSError, match="disk full"):
        write_mrc(target, image, 1.0)
    assert list(tmp_path.iterdir()) == []

    existing = tmp_path / "existing.mrc"
    existing.write_bytes(b"previous contents")
    with pytest.raises(OSError, match="disk full"):
        write_mrc(existing, image, 1.0)
    assert list(tmp_path.iterdir()) == [existing]
    assert existing.read_bytes() == b"previous contents"


@pytest.mark.parametrize(
    ("data", "pixel_size_a", "float16"),
    [
        (np.full((4, 4), np.nan, dtype=np.float32), 1.0, False),
        (np.full((4, 4), 1e6, dtype=np.float32), 1.0, True),  # beyond float16
        (np.zeros((4, 4), dtype=np.float32), 0.0, False),
        (np.zeros(4, dtype=np.float32), 1.0, False),
    ],
)
def test_write_refuses_bad_data(tmp_path, data, pixel_size_a, float16):
    with pytest.raises(ValueError):
        write_mrc(tmp_path / "bad.mrc", data, pixel_size_a, float16=float16)
    assert list(tmp_path.iterdir()) == []


def test_real_micrographs(apoferritin_dir):
    paths = sorted((apoferritin_dir / "micrographs").glob("*.mrc"))
    assert len(paths) == 10
    for path in paths:
        with mrcfile.open(path, header_only=True) as mrc:
            assert mrc.header.mode == 6
        data, pixel_size_a = read_mrc(path)
        assert data.shape == (1200, 1240) and data.dtype == np.float32
        assert pixel_size_a == 1.85
        assert data.min() >= 0 and data.max() <= 65535 and data.std() > 0


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_get_the_permissions_of_the_umask(tmp_path, image, umask):
    """Atomic writes go through an owner-only temporary file; the output must not stay 0600
    when the user's umask lets the group and others read new files."""
    import os
    import stat

    previous = os.umask(umask)
    try:
        write_mrc(tmp_path / "image.mrc", image, 1.0)
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "image.mrc").stat().st_mode) == 0o666 & ~umask
