"""Dose-fractionated movies (MRC/MRCS stacks or multi-frame TIFF), one frame at a time.

A movie can be far larger than memory, so :class:`Movie` reads a single frame on demand
(MRC through a memory map, TIFF page by page) and :func:`write_movie` writes frames as
they come. Frames are float32 (H, W) arrays indexed ``[row, column]``.
"""

from __future__ import annotations

import itertools
import operator
import os
from pathlib import Path
from typing import Iterable, Iterator, Protocol

import mrcfile
import numpy as np
import tifffile

from cryoscore.errors import InputError
from cryoscore.io.atomic import atomic_path
from cryoscore.io.mrc import (
    check_finite,
    check_output,
    check_pixel_size,
    check_readable,
    finish_header,
    open_mrc_stack,
)

_MRC_SUFFIXES = (".mrc", ".mrcs")
_TIFF_SUFFIXES = (".tif", ".tiff")
_ANGSTROM_PER_CM = 1e8
_UINT16_MAX = np.iinfo(np.uint16).max


class _Frames(Protocol):
    """What :class:`Movie` needs from a format: :class:`~cryoscore.io.mrc.MrcStack` has it."""

    path: Path
    shape: tuple[int, int, int]
    pixel_size_a: float

    def __getitem__(self, index: int) -> np.ndarray: ...

    def close(self) -> None: ...


def _is_tiff(path: Path) -> bool:
    """True for a TIFF movie, False for an MRC one; InputError for any other suffix."""
    suffix = path.suffix.lower()
    if suffix not in _MRC_SUFFIXES + _TIFF_SUFFIXES:
        known = ", ".join(_MRC_SUFFIXES + _TIFF_SUFFIXES)
        raise InputError(path, f"unsupported movie format {path.suffix!r}; use one of {known}")
    return suffix in _TIFF_SUFFIXES


class _TiffFrames:
    """The pages of a multi-frame TIFF, decoded one at a time; same interface as MrcStack."""

    def __init__(self, path: Path, pixel_size_a: float | None):
        if pixel_size_a is None:
            raise InputError(path, "no pixel size for a TIFF movie; pass --pixel-size")
        self.path = path
        self.pixel_size_a = check_pixel_size(path, pixel_size_a)
        check_readable(path)
        try:
            self._tif = tifffile.TiffFile(path)
        except (ValueError, OSError) as err:  # tifffile.TiffFileError is a ValueError
            raise InputError(path, f"not a readable TIFF file ({err})") from err
        frame_shape = self._tif.pages.first.shape
        if len(frame_shape) != 2:
            self._tif.close()
            raise InputError(path, f"frames must be 2D grey images, found pages of {frame_shape}")
        self.shape: tuple[int, int, int] = (len(self._tif.pages), *frame_shape)

    def __getitem__(self, index: int) -> np.ndarray:
        """Page ``index`` as a new float32 (H, W) array; InputError if undecodable or not finite."""
        index = range(self.shape[0])[operator.index(index)]
        try:
            page = self._tif.pages[index].asarray()
        except (ValueError, OSError) as err:
            raise InputError(self.path, f"cannot decode frame {index} ({err})") from err
        if page.shape != self.shape[1:]:
            raise InputError(
                self.path, f"frame {index} has shape {page.shape}, frame 0 has {self.shape[1:]}"
            )
        frame = page.astype(np.float32)
        check_finite(self.path, frame, f"frame {index}: ")
        return frame

    def close(self) -> None:
        self._tif.close()


class Movie:
    """An open movie; build it with :func:`open_movie`.

    Attributes
    ----------
    path:
        The file.
    shape:
        (n_frames, H, W).
    pixel_size_a:
        Angstrom per pixel.
    """

    def __init__(self, frames: _Frames):
        self._frames = frames
        self.path = frames.path
        self.shape = frames.shape
        self.pixel_size_a = frames.pixel_size_a

    @property
    def n_frames(self) -> int:
        return self.shape[0]

    def frame(self, index: int) -> np.ndarray:
        """Frame ``index`` read from the file now, as a new float32 (H, W) array."""
        return self._frames[index]

    def close(self) -> None:
        self._frames.close()

    def __enter__(self) -> Movie:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_movie(path: str | os.PathLike, *, pixel_size_a: float | None = None) -> Movie:
    """Open a ``.mrc``/``.mrcs``/``.tif``/``.tiff`` movie (suffix case-insensitive).

    ``pixel_size_a`` (Angstrom per pixel) overrides an MRC header and is required for
    TIFF, whose resolution tags are too often wrong to trust.
    """
    path = Path(path)
    if _is_tiff(path):
        return Movie(_TiffFrames(path, pixel_size_a))
    return Movie(open_mrc_stack(path, pixel_size_a=pixel_size_a))


def even_odd_sums(movie: Movie) -> tuple[np.ndarray, np.ndarray]:
    """Sum the even-indexed (0, 2, ...) and odd-indexed (1, 3, ...) frames.

    Reads one frame at a time and accumulates in float64. Returns two float32 (H, W)
    arrays; InputError if the movie has fewer than 2 frames.
    """
    if movie.n_frames < 2:
        raise InputError(
            movie.path, f"need at least 2 frames for even/odd sums, found {movie.n_frames}"
        )
    sums = np.zeros((2, *movie.shape[1:]), dtype=np.float64)
    for index in range(movie.n_frames):
        sums[index % 2] += movie.frame(index)
    return sums[0].astype(np.float32), sums[1].astype(np.float32)


def _checked_frames(
    frames: Iterable[np.ndarray], pixel_size_a: float, n_frames: int
) -> Iterator[np.ndarray]:
    """Yield ``frames`` as float32, checking each (2D, finite, same shape) and their count."""
    shape = None
    count = 0
    for count, frame in enumerate(frames, start=1):
        if count > n_frames:
            raise ValueError(f"got more frames than n_frames={n_frames}")
        frame = np.asarray(frame, dtype=np.float32)
        check_output(frame, pixel_size_a, ndims=(2,))
        shape = shape or frame.shape
        if frame.shape != shape:
            raise ValueError(f"frame {count - 1} has shape {frame.shape}, frame 0 has {shape}")
        yield frame
    if count != n_frames:
        raise ValueError(f"got {count} frames, expected n_frames={n_frames}")


def _write_mrc_frames(
    tmp: Path, frames: Iterator[np.ndarray], pixel_size_a: float, n_frames: int
) -> None:
    """Fill a memory-mapped float32 MRC image stack frame by frame."""
    first = next(frames)
    with mrcfile.new_mmap(tmp, shape=(n_frames, *first.shape), mrc_mode=2, overwrite=True) as mrc:
        mrc.set_image_stack()
        for index, frame in enumerate(itertools.chain([first], frames)):
            mrc.data[index] = frame
        finish_header(mrc, pixel_size_a)


def _fits_uint16(frame: np.ndarray) -> bool:
    """True if every value of ``frame`` is an integer in 0..65535."""
    return bool(
        frame.min() >= 0 and frame.max() <= _UINT16_MAX and np.all(frame == np.round(frame))
    )


def _write_tiff_frames(
    tmp: Path, frames: Iterator[np.ndarray], pixel_size_a: float, compression: str | None
) -> None:
    """Write one TIFF page per frame: uint16 if frame 0 holds counts (integers), else float32."""
    first = next(frames)
    dtype = np.uint16 if _fits_uint16(first) else np.float32
    pixels_per_cm = _ANGSTROM_PER_CM / pixel_size_a
    with tifffile.TiffWriter(tmp) as tif:
        for index, frame in enumerate(itertools.chain([first], frames)):
            if dtype is np.uint16 and not _fits_uint16(frame):
                raise ValueError(f"frame {index} is not integers in 0..65535 like frame 0")
            tif.write(
                frame.astype(dtype),
                photometric="minisblack",
                compression=compression,
                resolution=(pixels_per_cm, pixels_per_cm),
                resolutionunit="CENTIMETER",
                metadata=None,
            )


def write_movie(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray],
    pixel_size_a: float,
    *,
    n_frames: int,
    compression: str | None = "zlib",
) -> None:
    """Write ``n_frames`` (H, W) frames to an MRC/MRCS or TIFF movie, atomically.

    Frames are consumed one at a time, never all held in memory. MRC/MRCS: a float32
    image stack with voxel size ``pixel_size_a`` (Angstrom per pixel). TIFF: one page per
    frame compressed with ``compression`` (TIFF only; ``"zlib"`` needs no extra codec),
    stored as uint16 when frame 0 is integer-valued in 0..65535 (counts; every later
    frame must then be too) and as float32 otherwise; the pixel size goes into the
    resolution tags. Raises ValueError if ``frames`` does not yield exactly ``n_frames``
    finite 2D frames of one shape, or if ``pixel_size_a`` is not positive.
    """
    path = Path(path)
    is_tiff = _is_tiff(path)
    if n_frames < 1:
        raise ValueError(f"n_frames must be at least 1, got {n_frames}")
    checked = _checked_frames(frames, pixel_size_a, n_frames)
    with atomic_path(path) as tmp:
        if is_tiff:
            _write_tiff_frames(tmp, checked, pixel_size_a, compression)
        else:
            _write_mrc_frames(tmp, checked, pixel_size_a, n_frames)
