"""Independent noisy halves of each micrograph, from wherever a user keeps them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np

from cryoscore.errors import InputError
from cryoscore.io.layout import DatasetLayout
from cryoscore.io.movie import even_odd_sums, open_movie
from cryoscore.io.mrc import read_half_pair

if TYPE_CHECKING:  # torch-motion-correction is imported only when movies are aligned
    from cryoscore.preprocess.align import AlignSettings


@dataclass(frozen=True, eq=False)
class HalfPair:
    """Two independent noisy halves (H, W) float32 of one micrograph, same signal."""

    name: str
    even: np.ndarray
    odd: np.ndarray
    pixel_size_a: float

    def __post_init__(self) -> None:
        if self.even.shape != self.odd.shape or self.even.ndim != 2:
            raise ValueError(f"{self.name}: halves must be 2D images of one shape")


def pairs_from_dataset(root: str | os.PathLike, *, pixel_size_a: float | None = None) -> list[HalfPair]:
    """The even/odd halves of every micrograph of a dataset directory (see ``io.layout``)."""
    layout = DatasetLayout(Path(root))
    names = layout.micrograph_names() or sorted(path.stem for path in (layout.root / "even").glob("*.mrc"))
    if not names:
        raise InputError(root, "no micrographs/ or even/ MRC files: not a dataset directory")
    return [_read_pair(name, layout.even(name), layout.odd(name), pixel_size_a) for name in names]


def pairs_from_directories(
    even_dir: str | os.PathLike, odd_dir: str | os.PathLike, *, pixel_size_a: float | None = None
) -> list[HalfPair]:
    """Halves matched by file name between two folders of MRC files."""
    even_files = {path.name: path for path in Path(even_dir).glob("*.mrc")}
    odd_files = {path.name: path for path in Path(odd_dir).glob("*.mrc")}
    if not even_files:
        raise InputError(even_dir, "no .mrc files")
    unmatched = sorted(set(even_files) ^ set(odd_files))
    if unmatched:
        raise InputError(odd_dir, f"{len(unmatched)} file(s) without a partner half, e.g. {unmatched[0]}")
    return [
        _read_pair(Path(name).stem, even_files[name], odd_files[name], pixel_size_a) for name in sorted(even_files)
    ]


def pairs_from_movies(paths: Iterable[str | os.PathLike], *, pixel_size_a: float | None = None,
                      align: AlignSettings | None = None) -> list[HalfPair]:
    """Halves from movies (MRC stacks or TIFF): frames summed by parity one at a time, or,
    with ``align``, motion-corrected first (:func:`~cryoscore.preprocess.align.align_frames`;
    the whole movie in memory)."""
    pairs = []
    for path in paths:
        with open_movie(path, pixel_size_a=pixel_size_a) as movie:
            if align is None:
                even, odd = even_odd_sums(movie)
            elif movie.n_frames < 2:
                raise InputError(path, f"need at least 2 frames to align, found {movie.n_frames}")
            else:
                from cryoscore.preprocess.align import align_frames

                frames = np.stack([movie.frame(index) for index in range(movie.n_frames)])
                aligned = align_frames(frames, movie.pixel_size_a, align)
                even, odd = aligned.even, aligned.odd
            pairs.append(HalfPair(Path(path).stem, even, odd, movie.pixel_size_a))
    return pairs


def _read_pair(name: str, even_path: Path, odd_path: Path, pixel_size_a: float | None) -> HalfPair:
    even, odd, pixel_size = read_half_pair(even_path, odd_path, pixel_size_a=pixel_size_a)
    return HalfPair(name, even, odd, pixel_size)
