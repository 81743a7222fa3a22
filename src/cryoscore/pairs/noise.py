"""The noise of a micrograph, measured from its two independent halves.

With halves ``a = s + n_a`` and ``b = s + n_b`` (same signal, independent zero-mean noise
of equal statistics), ``a - b = n_a - n_b`` is pure noise with twice one half's variance.
So one half's noise variance is ``var(a - b) / 2`` and its noise power spectrum is
``|FFT(a - b)|^2 / (2 * pixels)``; the full sum ``a + b`` carries twice that variance
around twice the signal, i.e. half the variance on the half's scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cryoscore.fourier import frequency_axes


@dataclass(frozen=True)
class NoiseEstimate:
    """Noise of one half of a micrograph.

    Attributes
    ----------
    sigma_half:
        Per-pixel noise standard deviation of one half, in the image's units.
    power_spectrum:
        (tile, tile) noise power spectrum of one half on an unshifted FFT grid, averaged
        over tiles (Welch), normalised so that its mean equals ``sigma_half**2``; white
        noise gives a flat spectrum.
    """

    sigma_half: float
    power_spectrum: np.ndarray

    def radial_profile(self) -> tuple[np.ndarray, np.ndarray]:
        """Rotationally averaged spectrum: (frequency in cycles/pixel, power), each (tile//2,)."""
        tile = self.power_spectrum.shape[0]
        k = np.hypot(*frequency_axes((tile, tile), rfft=False))
        shells = np.minimum((k * tile).round().astype(int), tile // 2)
        power = np.bincount(shells.ravel(), self.power_spectrum.ravel()) / np.bincount(shells.ravel())
        return np.arange(tile // 2) / tile, power[: tile // 2]


def estimate_noise(even: np.ndarray, odd: np.ndarray, *, tile: int = 128) -> NoiseEstimate:
    """Measure one half's noise from two halves (H, W) of the same micrograph.

    The spectrum is the average periodogram of non-overlapping ``tile`` x ``tile`` tiles of
    ``(even - odd)``, each with its mean removed; ``tile`` is reduced to fit small images.
    """
    if even.shape != odd.shape or even.ndim != 2:
        raise ValueError(f"halves must be two 2D images of one shape, got {even.shape} and {odd.shape}")
    difference = even.astype(np.float64) - odd.astype(np.float64)
    tile = min(tile, *difference.shape)
    rows, cols = difference.shape[0] // tile, difference.shape[1] // tile
    tiles = difference[: rows * tile, : cols * tile].reshape(rows, tile, cols, tile).transpose(0, 2, 1, 3)
    tiles = tiles - tiles.mean(axis=(2, 3), keepdims=True)
    periodograms = np.abs(np.fft.fft2(tiles)) ** 2 / (2 * tile * tile)
    spectrum = periodograms.mean(axis=(0, 1))
    variance = difference.var() / 2
    return NoiseEstimate(sigma_half=float(np.sqrt(variance)), power_spectrum=spectrum.astype(np.float32))


#: Band of the single-image noise estimate, cycles per pixel: above most of the signal
#: (the CTF envelope has damped it at any pixel size a model works at), below the corner
#: frequencies that a non-square pixel grid or a detector's anti-aliasing may distort.
NOISE_BAND_CYCLES_PER_PX = (0.3, 0.48)
#: Which quantile of the band's ring powers is taken: CTF rings and the few particles with
#: detail that fine raise some rings, never lower any, so a low quantile is the noise floor.
NOISE_BAND_QUANTILE = 0.5


def spectral_noise_sigma(image: np.ndarray, *, tile: int = 256) -> float:
    """Per-pixel noise std of one image (H, W), from the power of its finest frequencies.

    The Welch spectrum (Hann-windowed ``tile``-pixel tiles, averaged) is averaged over rings
    of radius ``NOISE_BAND_CYCLES_PER_PX``; a low quantile of those rings is the white-noise
    power, i.e. the per-pixel variance. Unlike neighbour differences (which weigh every
    frequency above a quarter of the sampling rate), it does not count fine signal (CTF
    rings of large particles, sharp features at coarse pixel sizes) as noise. Where the
    noise itself falls at high frequency (binned or interpolated data) it says too little,
    the safe side: a model told less noise leaves some, and never smooths particles away.
    """
    if image.ndim != 2 or min(image.shape) < 8:
        raise ValueError(f"need a 2D image of at least 8 x 8 pixels, got shape {image.shape}")
    tile = min(tile, *image.shape) // 2 * 2
    rows, cols = image.shape[0] // tile, image.shape[1] // tile
    tiles = image[: rows * tile, : cols * tile].astype(np.float64).reshape(rows, tile, cols, tile).transpose(0, 2, 1, 3)
    tiles = tiles - tiles.mean(axis=(2, 3), keepdims=True)
    window = np.outer(np.hanning(tile), np.hanning(tile))
    power = (np.abs(np.fft.rfft2(tiles * window)) ** 2).mean(axis=(0, 1)) / np.sum(window**2)
    k = np.hypot(*frequency_axes((tile, tile)))
    low, high = NOISE_BAND_CYCLES_PER_PX
    shells = np.round(k * tile).astype(int)
    in_band = (k >= low) & (k <= high)
    ring_power = np.bincount(shells[in_band], power[in_band])
    ring_count = np.bincount(shells[in_band])
    rings = ring_power[ring_count > 0] / ring_count[ring_count > 0]
    return float(np.sqrt(np.quantile(rings, NOISE_BAND_QUANTILE)))
