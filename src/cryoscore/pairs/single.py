"""Noise2Noise pairs from a single micrograph (no frames).

Two ways, for two uses:

- **Recorrupted pairs** (``recorrupted_pair``; Pang et al. 2021, "Recorrupted-to-Recorrupted"),
  what training and ``denoise --adapt`` use: with the image ``y = s + n`` and its white noise
  level ``sigma`` measured from its finest frequencies (``pairs.noise.spectral_noise_sigma``),
  draw ``z`` of the same level and take ``y + z`` and ``y - z``. Their noises ``n + z`` and
  ``n - z`` are uncorrelated (independent where ``n`` is Gaussian, which shot noise at
  cryo-EM counts per pixel nearly is), each has twice ``y``'s variance, and their mean is
  ``y`` itself: exactly the statistics of an even/odd pair whose full sum is ``y``. The pair
  keeps the micrograph's grid (no change of pixel size, no misregistered signal). Where the
  noise is coloured (a detector MTF, interpolation), the white ``z`` does not match it and the
  pair shares part of the noise, so a model trained on it keeps that part: the safe side.
- **Neighbour sub-sampling** (``neighbour_subsample_pair``), used to map how the noise level
  varies across a micrograph (``pairs.normalise.relative_noise_map``): each 2 x 2 cell of the image gives one pixel to each of two half-resolution images,
two different pixels of the cell chosen at random (Neighbor2Neighbor, Huang et al. 2021).
The two images see almost the same signal and, where the noise is independent from pixel
to pixel (a counting detector, no interpolation), independent noise.

Limits: the pair has half the resolution (twice the pixel size) of the micrograph; the
signal in the two images differs by up to one pixel, which acts like a slight blur in the
learned target; and noise that is correlated between neighbouring pixels (after motion
correction with interpolation, binning by Fourier cropping, or a detector's MTF) is
partly shared by the two images.

Even/odd frame sums are better than either whenever a movie exists.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from cryoscore.io.mrc import read_mrc
from cryoscore.pairs.halves import HalfPair
from cryoscore.pairs.noise import spectral_noise_sigma

# The six ways to pick two different pixels of a 2 x 2 cell, as (row, col) offsets.
_CELL = np.array([(0, 0), (0, 1), (1, 0), (1, 1)])
_PAIRS = np.array([(i, j) for i in range(4) for j in range(4) if i < j])


def neighbour_subsample_pair(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two (H//2, W//2) float32 images from one (H, W) image; which pixel goes where is random."""
    if image.ndim != 2 or min(image.shape) < 2:
        raise ValueError(f"need a 2D image of at least 2 x 2 pixels, got shape {image.shape}")
    height, width = image.shape[0] // 2, image.shape[1] // 2
    cells = image[: 2 * height, : 2 * width].reshape(height, 2, width, 2).transpose(0, 2, 1, 3).reshape(height, width, 4)
    choice = _PAIRS[rng.integers(len(_PAIRS), size=(height, width))]
    swap = rng.integers(2, size=(height, width)).astype(bool)  # which of the two goes first
    first = np.where(swap, choice[..., 1], choice[..., 0])
    second = np.where(swap, choice[..., 0], choice[..., 1])
    take = lambda index: np.take_along_axis(cells, index[..., None], axis=2)[..., 0]  # noqa: E731
    return take(first).astype(np.float32), take(second).astype(np.float32)


def recorrupted_pair(image: np.ndarray, rng: np.random.Generator, alpha: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Two (H, W) float32 images ``image + alpha z`` and ``image - z / alpha``, ``z`` white Gaussian noise
    of the image's own noise level (``spectral_noise_sigma``): a pair with uncorrelated noises. With the
    default ``alpha = 1`` its mean is ``image``; a smaller ``alpha`` makes the first image nearer ``image``
    and the second noisier."""
    sigma = spectral_noise_sigma(image)
    extra = rng.normal(0.0, sigma, size=image.shape)
    return (image + alpha * extra).astype(np.float32), (image - extra / alpha).astype(np.float32)


def pairs_from_single_micrographs(
    paths: Sequence[str | os.PathLike], *, pixel_size_a: float | None = None, seed: int = 0
) -> list[HalfPair]:
    """A recorrupted pair of each micrograph, on the micrograph's own grid and pixel size."""
    pairs = []
    for index, path in enumerate(paths):
        image, pixel_size = read_mrc(path, pixel_size_a=pixel_size_a)
        first, second = recorrupted_pair(image.astype(np.float64), np.random.default_rng([seed, index]))
        pairs.append(HalfPair(Path(path).stem, first, second, pixel_size))
    return pairs
