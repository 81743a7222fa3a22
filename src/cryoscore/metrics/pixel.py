"""Pixel-level judges of a denoised micrograph against simulation ground truth.

Every image is a float array (H, W) in electron counts on the full sum's scale, the
units of the dataset's ``micrographs/`` and ``clean/`` files (see ``io.layout``). The
ground truth is ``clean``: the particles' expected contribution, without the ice
background. Denoisers and raw micrographs carry an arbitrary offset (the mean electron
count), so PSNR and SSIM compare mean-subtracted images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from skimage.metrics import structural_similarity

from cryoscore.filters import lowpass_filter


def _check_same_shape(first: np.ndarray, second: np.ndarray, first_name: str, second_name: str) -> None:
    if first.shape != second.shape:
        raise ValueError(f"{first_name} has shape {first.shape} but {second_name} has shape {second.shape}")


def _peak_to_peak(clean: np.ndarray) -> float:
    """The ground truth's range ``max - min`` (its units); ValueError if it is constant."""
    peak = float(np.max(clean)) - float(np.min(clean))
    if not peak > 0:
        raise ValueError("the clean image is constant: PSNR and SSIM need a non-zero range")
    return peak


def _centred(image: np.ndarray) -> np.ndarray:
    """``image`` as float64 with its mean subtracted."""
    image = np.asarray(image, dtype=np.float64)
    return image - image.mean()


def particle_free_mask(shape: tuple[int, int], centres_rc: np.ndarray, diameter_px: float) -> np.ndarray:
    """Pixels farther than one particle diameter from every particle centre.

    Parameters
    ----------
    shape:
        (H, W) of the micrograph, pixels.
    centres_rc:
        (n, 2) particle centres as (row, col) in pixels, the first pixel's centre at 0;
        n may be 0. Centres outside the image are allowed.
    diameter_px:
        Particle diameter, pixels (> 0).

    Returns
    -------
    bool array (H, W): True where the distance to the nearest centre exceeds
    ``diameter_px``; all True without centres. Exact: each centre clears only the
    pixels of its own (2 d + 1)^2 window, so the cost is n d^2, not n H W.
    """
    centres_rc = np.asarray(centres_rc, dtype=np.float64).reshape(-1, 2)
    if not diameter_px > 0:
        raise ValueError(f"particle diameter must be > 0 px, got {diameter_px}")
    free = np.ones(shape, dtype=bool)
    for centre_row, centre_col in centres_rc:
        row_start, row_stop = (
            max(math.ceil(centre_row - diameter_px), 0), min(math.floor(centre_row + diameter_px) + 1, shape[0])
        )
        col_start, col_stop = (
            max(math.ceil(centre_col - diameter_px), 0), min(math.floor(centre_col + diameter_px) + 1, shape[1])
        )
        if row_start >= row_stop or col_start >= col_stop:
            continue
        row_offsets = np.arange(row_start, row_stop) - centre_row
        col_offsets = np.arange(col_start, col_stop) - centre_col
        squared_distance = row_offsets[:, None] ** 2 + col_offsets[None, :] ** 2
        free[row_start:row_stop, col_start:col_stop] &= squared_distance > diameter_px**2
    return free


def psnr(estimate: np.ndarray, clean: np.ndarray) -> float:
    """Peak signal-to-noise ratio of ``estimate`` against ``clean``, dB.

    Both (H, W) images are mean-subtracted first; the peak is the clean image's range
    ``max - min``: ``10 log10(peak^2 / MSE)``. Identical images give ``inf``.
    """
    _check_same_shape(estimate, clean, "estimate", "clean image")
    peak = _peak_to_peak(clean)
    mean_squared_error = float(np.mean((_centred(estimate) - _centred(clean)) ** 2))
    if mean_squared_error == 0:
        return math.inf
    return 10 * math.log10(peak**2 / mean_squared_error)


def ssim(estimate: np.ndarray, clean: np.ndarray) -> float:
    """Mean structural similarity of ``estimate`` against ``clean`` (1 when identical).

    scikit-image's ``structural_similarity`` (Wang et al. 2004, 7 x 7 window) on the
    mean-subtracted (H, W) images, with the clean image's ``max - min`` as data range.
    """
    _check_same_shape(estimate, clean, "estimate", "clean image")
    return float(structural_similarity(_centred(estimate), _centred(clean), data_range=_peak_to_peak(clean)))


def correlation(estimate: np.ndarray, clean: np.ndarray) -> float:
    """Pearson correlation of ``estimate`` with ``clean`` over all pixels, in [-1, 1].

    Unlike PSNR it cannot be won by shrinking the output: an image of zeros scores 0
    (PSNR rewards it, because at low dose the clean particle image is small next to the
    background and noise a denoiser might leave).
    """
    _check_same_shape(estimate, clean, "estimate", "clean image")
    x, y = _centred(estimate), _centred(clean)
    norm = math.sqrt(float(np.sum(x * x)) * float(np.sum(y * y)))
    return float(np.sum(x * y)) / norm if norm > 0 else 0.0


def low_frequency_power(image: np.ndarray, pixel_size_a: float, mask: np.ndarray, cutoff_a: float) -> float:
    """Mean squared low-pass of ``image`` over ``mask``, in the image's units squared.

    The image (H, W) is mean-subtracted, Gaussian low-passed at ``cutoff_a`` Angstrom
    (transfer 1/sqrt(2) at 1/cutoff_a, periodic edges; ``cryoscore.filters``) at
    ``pixel_size_a`` Angstrom per pixel, and its squares averaged over the True pixels
    of ``mask`` (bool, H x W). Over particle-free pixels this is the structured
    low-frequency background left in the image: ice gradients, thickness variation,
    carbon, which a good denoiser suppresses.
    """
    _check_same_shape(mask, image, "mask", "image")
    if not np.any(mask):
        raise ValueError("the mask selects no pixels")
    smooth = lowpass_filter(_centred(image), pixel_size_a, cutoff_a, kind="gaussian")
    return float(np.mean(smooth[mask].astype(np.float64) ** 2))


@dataclass(frozen=True)
class PixelMetrics:
    """The pixel-level judges of one denoised micrograph.

    Attributes
    ----------
    psnr_db:
        PSNR against the clean image, dB (:func:`psnr`).
    ssim:
        Mean SSIM against the clean image, at most 1 (:func:`ssim`).
    correlation:
        Pearson correlation with the clean image (:func:`correlation`).
    background_power:
        Low-frequency power left in particle-free areas, electron counts squared
        (:func:`low_frequency_power` at a cut-off of two particle diameters).
    """

    psnr_db: float
    ssim: float
    correlation: float
    background_power: float


def pixel_metrics(
    estimate: np.ndarray,
    clean: np.ndarray,
    centres_rc: np.ndarray,
    diameter_px: float,
    pixel_size_a: float,
) -> PixelMetrics:
    """PSNR, SSIM and background power of ``estimate`` against ``clean``, both (H, W).

    ``centres_rc`` (n, 2) are the particle centres (row, col) in pixels and
    ``diameter_px`` their diameter in pixels; ``pixel_size_a`` is Angstrom per pixel.
    The background power is taken over pixels farther than one diameter from every
    particle, low-passed at ``2 * diameter_px * pixel_size_a`` Angstrom: a wavelength
    of two particle diameters or longer cannot describe a particle (whose image is
    about one diameter across), so what is left there is background, not signal.

    Raises ValueError when the shapes differ or no pixel is free of particles.
    """
    _check_same_shape(estimate, clean, "estimate", "clean image")
    mask = particle_free_mask(clean.shape, centres_rc, diameter_px)
    if not np.any(mask):
        raise ValueError(
            f"no pixel lies farther than one particle diameter ({diameter_px:.1f} px) from all "
            f"{len(centres_rc)} particles: the background power is undefined"
        )
    return PixelMetrics(
        psnr_db=psnr(estimate, clean),
        ssim=ssim(estimate, clean),
        correlation=correlation(estimate, clean),
        background_power=low_frequency_power(estimate, pixel_size_a, mask, 2 * diameter_px * pixel_size_a),
    )
