"""The noise of a micrograph, measured from its two independent halves.

With halves ``a = s + n_a`` and ``b = s + n_b`` (same signal, independent zero-mean noise
of equal statistics), ``a - b = n_a - n_b`` is pure noise with twice one half's variance.
So one half's noise variance is ``var(a - b) / 2`` and its noise power spectrum is
``|FFT(a - b)|^2 / (2 * pixels)``; the full sum ``a + b`` carries twice that variance
around twice the signal, i.e. half the variance on the half's scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from cryoscore.fourier import frequency_axes, radial_frequency


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


#: Tile edge (px) of the local spectra behind :func:`noise_power_spectrum`.
NOISE_SPECTRUM_TILE_PX = 64
#: Below this frequency (cycles per pixel) the noise spectrum is taken as flat at its value
#: there: a detector's or a binning's colouring varies on the scale of pixels, while at lower
#: frequencies ice and gradients, which cover the whole micrograph, would pass for noise.
NOISE_SPECTRUM_FLAT_BELOW_CYCLES_PER_PX = 0.125


def _tile_ring_powers(image: np.ndarray, tile: int) -> np.ndarray:
    """Ring-averaged periodograms (tiles, tile//2 + 1) of the half-overlapping Hann-windowed
    ``tile``-pixel tiles of ``image`` (H, W); ring ``i`` holds frequencies ``i / tile`` cycles/px."""
    window = np.outer(np.hanning(tile), np.hanning(tile))
    step = tile // 2
    starts = [(row, col) for row in range(0, image.shape[0] - tile + 1, step)
              for col in range(0, image.shape[1] - tile + 1, step)]
    tiles = np.stack([image[row:row + tile, col:col + tile] for row, col in starts]).astype(np.float64)
    tiles = (tiles - tiles.mean(axis=(1, 2), keepdims=True)) * window
    power = np.abs(np.fft.rfft2(tiles)) ** 2 / np.sum(window**2)
    rings = np.minimum(np.round(radial_frequency((tile, tile)) * tile).astype(int), tile // 2).ravel()
    counts = np.bincount(rings, minlength=tile // 2 + 1)
    totals = np.stack([np.bincount(rings, weights, minlength=tile // 2 + 1) for weights in power.reshape(len(tiles), -1)])
    return totals / counts


@lru_cache(maxsize=4)
def _median_to_mean(tile: int) -> np.ndarray:
    """Median over tiles of each ring's power divided by its mean, for white Gaussian noise (tile//2 + 1,)."""
    rings = _tile_ring_powers(np.random.default_rng(0).standard_normal((1024, 1024)), tile)
    return np.median(rings, axis=0) / rings.mean(axis=0)


def noise_power_spectrum(image: np.ndarray, *, tile: int = NOISE_SPECTRUM_TILE_PX) -> tuple[np.ndarray, np.ndarray]:
    """The radial noise power density of one image (H, W): (frequency in cycles/px, density), each (tile//2 + 1,).

    The density is a per-pixel variance per unit of frequency area (white noise of variance
    ``s^2`` has ``s^2`` everywhere), so it carries the noise's colour (a detector's MTF,
    binning, interpolation), which :func:`spectral_noise_sigma` does not. Shot noise is
    stationary and particles and ice are not: each ring's power is measured in many small
    tiles and the median over tiles, divided by the median-to-mean ratio white noise gives
    there, is the noise power wherever signal reaches fewer than half the tiles at that
    frequency. Below :data:`NOISE_SPECTRUM_FLAT_BELOW_CYCLES_PER_PX` it is held flat. On the real
    EMPIAR-10146 micrographs it agrees within 2 % with the spectrum of their particle-free
    regions (which fall by 20 % from 0.06 cycles/px to Nyquist).
    """
    if image.ndim != 2:
        raise ValueError(f"need a 2D image, got shape {image.shape}")
    tile = min(tile, *image.shape) // 2 * 2
    if tile < 8:
        raise ValueError(f"need an image of at least 8 x 8 pixels, got shape {image.shape}")
    density = np.median(_tile_ring_powers(image, tile), axis=0) / _median_to_mean(tile)
    frequencies = np.arange(tile // 2 + 1) / tile
    flat = frequencies < NOISE_SPECTRUM_FLAT_BELOW_CYCLES_PER_PX
    density[flat] = density[np.argmin(flat)]
    return frequencies, density


def coloured_noise(shape: tuple[int, int], frequencies: np.ndarray, density: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise (H, W), float64, whose radial power density is ``density`` at ``frequencies``
    (cycles/px, as :func:`noise_power_spectrum` returns; interpolated, the last value beyond)."""
    transfer = np.sqrt(np.maximum(np.interp(radial_frequency(shape), frequencies, density), 0.0))
    return np.fft.irfft2(np.fft.rfft2(rng.standard_normal(shape)) * transfer, s=shape)
