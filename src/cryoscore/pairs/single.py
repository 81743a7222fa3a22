"""Noise2Noise pairs from a single micrograph (no frames), by neighbour sub-sampling.

Each 2 x 2 cell of the image gives one pixel to each of two half-resolution images,
two different pixels of the cell chosen at random (Neighbor2Neighbor, Huang et al. 2021).
The two images see almost the same signal and, where the noise is independent from pixel
to pixel (a counting detector, no interpolation), independent noise.

Limits: the pair has half the resolution (twice the pixel size) of the micrograph; the
signal in the two images differs by up to one pixel, which acts like a slight blur in the
learned target; and noise that is correlated between neighbouring pixels (after motion
correction with interpolation, binning by Fourier cropping, or a detector's MTF) is
partly shared by the two images, so a network trained on them keeps that part of the
noise. Even/odd frame sums are better whenever a movie exists.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from cryoscore.io.mrc import read_mrc
from cryoscore.pairs.halves import HalfPair

# The six ways to pick two different pixels of a 2 x 2 cell, as (row, col) offsets.
_CELL = np.array([(0, 0), (0, 1), (1, 0), (1, 1)])
_PAIRS = np.array([(i, j) for i in range(4) for j in range(4) if i < j])


def neighbour_subsample_pair(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two (H//2, W//2) float32 images from one (H, W) image; which pixel goes where is random."""
    if image.ndim != 2 or min(image.shape) < 2:
        raise ValueError(f"need a 2D image of at least 2 x 2 pixels, got shape {image.shape}")
    height, width = image.shape[0] // 2, image.shape[1] // 2
    cells = image[: 2 * height, : 2 * width].reshape(height, 2, width, 2).transpose(0, 2, 1, 3)
    cells = cells.reshape(height, width, 4)
    choice = _PAIRS[rng.integers(len(_PAIRS), size=(height, width))]
    swap = rng.integers(2, size=(height, width)).astype(bool)  # which of the two goes first
    first = np.where(swap, choice[..., 1], choice[..., 0])
    second = np.where(swap, choice[..., 0], choice[..., 1])
    take = lambda index: np.take_along_axis(cells, index[..., None], axis=2)[..., 0]  # noqa: E731
    return take(first).astype(np.float32), take(second).astype(np.float32)


def pairs_from_single_micrographs(
    paths: Sequence[str | os.PathLike], *, pixel_size_a: float | None = None, seed: int = 0
) -> list[HalfPair]:
    """A neighbour-sub-sampled pair from each micrograph; the pairs' pixel size is doubled."""
    pairs = []
    for index, path in enumerate(paths):
        image, pixel_size = read_mrc(path, pixel_size_a=pixel_size_a)
        first, second = neighbour_subsample_pair(image, np.random.default_rng([seed, index]))
        pairs.append(HalfPair(Path(path).stem, first, second, 2 * pixel_size))
    return pairs
