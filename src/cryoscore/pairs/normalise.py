"""Put micrographs in noise units, the scale every model trains and runs in.

A micrograph made of ``m`` independent halves (``m = 1`` for an even or odd sum,
``m = 2`` for a full sum) is mapped to ``u = (y - mean(y)) / (m * sigma_half)``: the
signal then has the same amplitude whatever ``m`` (a full sum carries twice a half's
signal) and the noise has standard deviation ``1 / sqrt(m)``. That standard deviation is
the ``sigma`` the network is told; a model trained on halves (sigma 1) applied to a full
sum is told 0.707.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cryoscore.pairs.halves import HalfPair
from cryoscore.pairs.noise import estimate_noise, spectral_noise_sigma
from cryoscore.pairs.single import neighbour_subsample_pair

NORMALISATION = "noise-units-v2"
"""The name of this module's scaling; recorded in every model so inference matches training."""


@dataclass(frozen=True)
class Normalisation:
    """``u = (y - offset) / scale``; ``noise_sigma`` is the noise std of ``u``."""

    offset: float
    scale: float
    noise_sigma: float

    def __post_init__(self) -> None:
        if not (self.scale > 0 and self.noise_sigma > 0):
            raise ValueError("scale and noise sigma must be positive")

    def apply(self, image: np.ndarray) -> np.ndarray:
        return ((image - self.offset) / self.scale).astype(np.float32)

    def invert(self, normalised: np.ndarray) -> np.ndarray:
        return (normalised * self.scale + self.offset).astype(np.float32)


def normalise_pair(pair: HalfPair) -> HalfPair:
    """The pair in noise units: each half's noise (measured from even - odd) has std 1."""
    sigma_half = estimate_noise(pair.even, pair.odd).sigma_half
    if not sigma_half > 0:
        raise ValueError(f"{pair.name}: the two halves are identical, so no noise can be measured")
    offset = float((pair.even.mean() + pair.odd.mean()) / 2)
    scale = Normalisation(offset, sigma_half, 1.0)
    return HalfPair(pair.name, scale.apply(pair.even), scale.apply(pair.odd), pair.pixel_size_a)


def signal_std(normalised_pairs: list[HalfPair]) -> float:
    """Median over micrographs of the signal std, ``sqrt(cov(even, odd))``, in noise units.

    The shared part of two halves is their signal (particles and background); it sets the
    EDM preconditioner's ``sigma_data``. Floored at 0.05 for data with almost no signal.
    """
    covariances = [
        float(np.mean((pair.even - pair.even.mean()) * (pair.odd - pair.odd.mean()))) for pair in normalised_pairs
    ]
    return max(math.sqrt(max(float(np.median(covariances)), 0.0)), 0.05)


def relative_noise_map(image: np.ndarray, window_px: int = 64) -> np.ndarray:
    """Local noise std of ``image`` (H, W) relative to its global noise std (mean about 1), float32 (H, W).

    From neighbour sub-sampling (:mod:`cryoscore.pairs.single`): the local variance
    of the difference image over ``window_px``-wide windows, brought back to full size.
    Where thick ice, carbon or a lower dose change the noise, the map says by how much.
    """
    first, second = neighbour_subsample_pair(image, np.random.default_rng(0))
    difference = first.astype(np.float64) - second
    local_variance = ndimage.uniform_filter(difference**2, size=max(window_px // 2, 1), mode="reflect")
    relative = np.sqrt(local_variance / max(float(np.mean(difference**2)), 1e-30))
    zoom = (image.shape[0] / relative.shape[0], image.shape[1] / relative.shape[1])
    return ndimage.zoom(relative, zoom, order=1, mode="nearest", grid_mode=True).astype(np.float32)


def normalisation_for_image(image: np.ndarray, halves_in_image: int) -> Normalisation:
    """The noise-unit normalisation of an image made of ``halves_in_image`` halves."""
    if halves_in_image < 1:
        raise ValueError("an image holds at least one half")
    sigma_image = spectral_noise_sigma(image)
    if not sigma_image > 0:
        raise ValueError("the image has no measurable noise (constant or too smooth)")
    scale = sigma_image * math.sqrt(halves_in_image)  # = halves * sigma_half
    return Normalisation(float(image.mean()), scale, 1 / math.sqrt(halves_in_image))
