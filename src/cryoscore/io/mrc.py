"""MRC/MRCS images, stacks and volumes, read and written with ``mrcfile``.

Readers return float32 numpy arrays indexed ``[row, column]`` (``[section, row, column]``
for stacks), i.e. ``(H, W)`` = ``(ny, nx)`` in MRC header terms, and the pixel size in
Angstrom per pixel. Every problem a user can fix (a missing, truncated or non-MRC file,
a missing pixel size, NaN pixels) raises :class:`~cryoscore.errors.InputError` naming
the file. Files are only ever opened read-only; writes go through
:func:`~cryoscore.io.atomic.atomic_path`.

This module also holds the small checks the other readers and writers in
``cryoscore.io`` share (:func:`check_readable`, :func:`check_pixel_size`,
:func:`check_finite`, :func:`check_output`).
"""

from __future__ import annotations

import math
import operator
import os
from pathlib import Path
from typing import Callable

import mrcfile
import mrcfile.utils
import numpy as np
from mrcfile.mrcfile import MrcFile

from cryoscore import __version__
from cryoscore.errors import InputError
from cryoscore.io.atomic import atomic_path

#: MRC modes this package reads: int8, int16, float32, uint16, float16.
READABLE_MODES = (0, 1, 2, 6, 12)

_HEADER_BYTES = 1024
_VOLUME_STACK_MIN_SPACEGROUP = 401


def check_readable(path: str | os.PathLike) -> int:
    """Return the size in bytes of the file at ``path``, which must exist and be readable.

    Raises :class:`InputError` ("cannot open the file (No such file or directory)", ...)
    otherwise. The file is opened read-only and closed again.
    """
    try:
        with open(path, "rb") as handle:
            return os.fstat(handle.fileno()).st_size
    except OSError as err:
        raise InputError(path, f"cannot open the file ({err.strerror})") from err


def check_pixel_size(source: str | os.PathLike, pixel_size_a: float) -> float:
    """Return ``pixel_size_a`` (Angstrom per pixel) as a float; InputError unless finite and > 0."""
    if not (math.isfinite(pixel_size_a) and pixel_size_a > 0):
        raise InputError(
            source, f"pixel size must be a positive number of Angstrom, got {pixel_size_a}"
        )
    return float(pixel_size_a)


def check_finite(source: str | os.PathLike, data: np.ndarray, where: str = "") -> None:
    """Raise InputError if ``data`` holds NaN or Inf; ``where`` ("frame 3: ") starts the message."""
    n_bad = data.size - np.count_nonzero(np.isfinite(data))
    if n_bad:
        raise InputError(source, f"{where}{n_bad} of {data.size} pixels are NaN or infinite")


def check_output(data: np.ndarray, pixel_size_a: float, ndims: tuple[int, ...]) -> None:
    """Check data about to be written; ValueError (a programming error) if it is unfit.

    ``data`` must have one of the dimensionalities in ``ndims`` and be finite, and
    ``pixel_size_a`` (Angstrom per pixel) must be finite and > 0.
    """
    if data.ndim not in ndims:
        allowed = " or ".join(map(str, ndims))
        raise ValueError(f"expected {allowed} dimensions, got an array of shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise ValueError(f"refusing to write {data.dtype} data containing NaN or Inf")
    if not (math.isfinite(pixel_size_a) and pixel_size_a > 0):
        raise ValueError(f"pixel_size_a must be positive, got {pixel_size_a}")


def _check_layout(path: Path) -> None:
    """Check that ``path`` is an MRC file this package can read, before handing it to mrcfile.

    Reads only the header (strictly, without mrcfile's gzip/bzip2 detection) and compares
    the data size it announces with the file size, so a truncated or padded file gets an
    exact message instead of a numpy memmap error.
    """
    size = check_readable(path)
    if size == 0:
        raise InputError(path, "file is empty")
    if size < _HEADER_BYTES:
        raise InputError(path, f"not an MRC file (only {size} bytes, less than an MRC header)")
    try:
        with MrcFile(path, mode="r", permissive=False, header_only=True) as mrc:
            header = mrc.header
    except ValueError as err:
        raise InputError(path, "not an MRC file (bad header)") from err
    mode, ispg = int(header.mode), int(header.ispg)
    if mode not in READABLE_MODES:
        modes = ", ".join(map(str, READABLE_MODES))
        raise InputError(path, f"unsupported MRC mode {mode}; readable modes are {modes}")
    if ispg >= _VOLUME_STACK_MIN_SPACEGROUP:
        raise InputError(path, f"holds a stack of volumes (space group {ispg}); not supported")
    nx, ny, nz = int(header.nx), int(header.ny), int(header.nz)
    if min(nx, ny, nz) < 1:
        raise InputError(path, f"header gives invalid dimensions {nx} x {ny} x {nz}")
    expected = nx * ny * nz * mrcfile.utils.dtype_from_mode(header.mode).itemsize
    found = size - _HEADER_BYTES - int(header.nsymbt)
    if found < expected:
        raise InputError(
            path, f"file is truncated: header says {expected} bytes of data, found {found}"
        )
    if found > expected:
        raise InputError(
            path, f"file is {found - expected} bytes longer than its header says (bad header?)"
        )


def _open_checked(path: Path, opener: Callable[..., MrcFile]) -> MrcFile:
    """Check ``path`` (:func:`_check_layout`), then open it read-only and strictly with ``opener``.

    ``opener`` is ``mrcfile.open`` (whole file in memory) or ``mrcfile.mmap`` (memory map).
    """
    _check_layout(path)
    try:
        return opener(path, mode="r", permissive=False)
    except (ValueError, OSError) as err:
        raise InputError(path, f"cannot read the MRC file ({err})") from err


def _header_float(value: np.floating) -> float:
    """A float32 header value as the shortest decimal that round-trips (1.85, not 1.8500000238)."""
    return float(np.format_float_positional(np.float32(value), unique=True))


def _pixel_size(path: Path, mrc: MrcFile, pixel_size_a: float | None) -> float:
    """``pixel_size_a`` if given (validated), else the header's square pixel size in Angstrom."""
    if pixel_size_a is not None:
        return check_pixel_size(path, pixel_size_a)
    with np.errstate(divide="ignore", invalid="ignore"):  # mrcfile divides cella by mx, my
        voxel_size = mrc.voxel_size
    x_a, y_a = _header_float(voxel_size.x), _header_float(voxel_size.y)
    if not (math.isfinite(x_a) and x_a > 0):
        raise InputError(path, "no pixel size in the header; pass --pixel-size")
    if y_a > 0 and not math.isclose(x_a, y_a, rel_tol=1e-4):
        raise InputError(
            path, f"pixels are not square in the header (x {x_a} A, y {y_a} A); pass --pixel-size"
        )
    return x_a


def _as_sections(data: np.ndarray) -> np.ndarray:
    """View ``data`` (2D image, or 3D stack/volume) as sections of shape (n, H, W)."""
    return data.reshape((-1,) + data.shape[-2:])


def read_mrc(
    path: str | os.PathLike, *, ndim: int = 2, pixel_size_a: float | None = None
) -> tuple[np.ndarray, float]:
    """Read a whole MRC/MRCS file into memory.

    Parameters
    ----------
    path:
        The file; modes 0 (int8), 1 (int16), 2 (float32), 6 (uint16) and 12 (float16).
    ndim:
        2 for a single image (a file with one section), returned as (H, W); 3 for a
        stack or volume (more than one section), returned as (n, H, W).
    pixel_size_a:
        Angstrom per pixel; overrides the header when given.

    Returns
    -------
    (data, pixel_size_a):
        A new, writable, C-contiguous float32 array and the pixel size in Angstrom.
    """
    if ndim not in (2, 3):
        raise ValueError(f"ndim must be 2 or 3, got {ndim}")
    path = Path(path)
    with _open_checked(path, mrcfile.open) as mrc:
        pixel = _pixel_size(path, mrc, pixel_size_a)
        sections = _as_sections(mrc.data)
        n_sections = sections.shape[0]
        if ndim == 2 and n_sections > 1:
            raise InputError(
                path, f"expected a 2D image but the file holds a stack of {n_sections} sections"
            )
        if ndim == 3 and n_sections == 1:
            raise InputError(path, "expected a stack or volume but the file holds one 2D image")
        data = np.array(sections[0] if ndim == 2 else sections, dtype=np.float32, order="C")
    check_finite(path, data)
    return data, pixel


class MrcStack:
    """A memory-mapped MRC stack read one section at a time; build it with :func:`open_mrc_stack`.

    Attributes
    ----------
    path:
        The file.
    shape:
        (n, H, W): sections, rows, columns. A 2D file is a stack of one.
    pixel_size_a:
        Angstrom per pixel.
    dtype:
        The numpy dtype stored in the file (sections are returned as float32).
    """

    def __init__(self, path: Path, mrc: MrcFile, pixel_size_a: float):
        self.path = path
        self.pixel_size_a = pixel_size_a
        self._mrc = mrc
        self._sections: np.ndarray | None = _as_sections(mrc.data)
        self.shape: tuple[int, int, int] = self._sections.shape
        self.dtype: np.dtype = self._sections.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> np.ndarray:
        """Section ``index`` as a new float32 (H, W) array; InputError if it holds NaN or Inf."""
        if self._sections is None:
            raise ValueError(f"{self.path} is closed")
        index = range(len(self))[operator.index(index)]
        section = np.array(self._sections[index], dtype=np.float32, order="C")
        check_finite(self.path, section, f"section {index}: ")
        return section

    def close(self) -> None:
        """Release the memory map; further indexing raises ValueError."""
        self._sections = None
        self._mrc.close()

    def __enter__(self) -> MrcStack:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_mrc_stack(path: str | os.PathLike, *, pixel_size_a: float | None = None) -> MrcStack:
    """Open an MRC/MRCS file for lazy, section-by-section reading (see :class:`MrcStack`).

    ``pixel_size_a`` (Angstrom per pixel) overrides the header when given.
    """
    path = Path(path)
    mrc = _open_checked(path, mrcfile.mmap)
    try:
        return MrcStack(path, mrc, _pixel_size(path, mrc, pixel_size_a))
    except BaseException:
        mrc.close()
        raise


_STATS_CHUNK = 2**20
"""Values per float64 chunk when the header statistics are summed (8 MiB of temporary memory)."""


def _set_header_stats(mrc: MrcFile) -> None:
    """Set the header's dmin, dmax, dmean and rms from the data, summed in float64.

    mrcfile's ``update_header_stats`` squares float32 data in float32, so values beyond about
    1e19 overflow (a numpy warning and ``rms = inf`` in the header); float64 holds the square of
    any float32, and the statistics of float32 data fit float32 again.
    """
    data = mrc.data
    if data.size == 0:
        mrc.update_header_stats()
        return
    flat = data.reshape(-1)
    mean = float(np.sum(flat, dtype=np.float64)) / flat.size
    squares = 0.0
    for start in range(0, flat.size, _STATS_CHUNK):  # float64 copies of a chunk, not of the image
        deviation = flat[start:start + _STATS_CHUNK].astype(np.float64) - mean
        squares += float(np.dot(deviation, deviation))
    mrc.header.dmin = float(flat.min())
    mrc.header.dmax = float(flat.max())
    mrc.header.dmean = np.float32(mean)
    mrc.header.rms = np.float32(min(math.sqrt(squares / flat.size), float(np.finfo(np.float32).max)))


def finish_header(mrc: MrcFile, pixel_size_a: float) -> None:
    """Set the voxel size (Angstrom) and data statistics of a file whose data are written.

    mrcfile's default label holds the time of writing; a fixed one keeps equal data in
    equal files.
    """
    mrc.voxel_size = pixel_size_a
    _set_header_stats(mrc)
    mrc.header.label[0] = f"cryoscore {__version__}".encode()


def write_mrc(
    path: str | os.PathLike, data: np.ndarray, pixel_size_a: float, *, float16: bool = False
) -> None:
    """Write a 2D image (H, W) or 3D stack/volume (n, H, W) atomically.

    Stored as mode 2 (float32), or mode 12 (float16) when ``float16`` is true, with the
    voxel size set to ``pixel_size_a`` (Angstrom per pixel) and the header statistics
    filled in. A 3D array goes to a ``.mrcs`` path as an image stack, otherwise as a
    volume. Raises ValueError for data that are not finite once stored (NaN, Inf, or
    beyond the float16 range) or a non-positive pixel size.
    """
    with np.errstate(over="ignore"):  # an overflow becomes Inf, refused just below
        stored = np.ascontiguousarray(data, dtype=np.float16 if float16 else np.float32)
    check_output(stored, pixel_size_a, ndims=(2, 3))
    with atomic_path(path) as tmp, mrcfile.new(tmp, overwrite=True) as mrc:
        with np.errstate(over="ignore", invalid="ignore"):  # float32 statistics may overflow; finish_header redoes them
            mrc.set_data(stored)
        if stored.ndim == 3 and Path(path).suffix.lower() == ".mrcs":
            mrc.set_image_stack()
        finish_header(mrc, pixel_size_a)


def read_half_pair(
    even_path: str | os.PathLike,
    odd_path: str | os.PathLike,
    *,
    pixel_size_a: float | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Read two independent 2D halves of one micrograph (e.g. even/odd frame sums).

    Returns ``(even, odd, pixel_size_a)``: two float32 (H, W) arrays and the pixel size
    in Angstrom (the argument if given, else the headers'). Raises InputError naming
    the odd file when the shapes or header pixel sizes differ.
    """
    even, even_pixel_a = read_mrc(even_path, pixel_size_a=pixel_size_a)
    odd, odd_pixel_a = read_mrc(odd_path, pixel_size_a=pixel_size_a)
    if even.shape != odd.shape:
        raise InputError(
            odd_path, f"shape {odd.shape} differs from the even half's {even.shape} ({even_path})"
        )
    if not math.isclose(even_pixel_a, odd_pixel_a, rel_tol=1e-4):
        raise InputError(
            odd_path,
            f"pixel size {odd_pixel_a} A differs from the even half's "
            f"{even_pixel_a} A ({even_path})",
        )
    return even, odd, even_pixel_a
