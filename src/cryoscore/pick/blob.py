"""Reference-free particle picking: a Difference-of-Gaussians blob detector sized from the diameter.

The detector is the primary picking judge (DESIGN.md section 3): the same picker for
every denoiser, with no reference that could favour a reference-guided one. Particles
are dark on a lighter background in recorded micrographs (negative contrast), so the
response is high where the image is darker than its surroundings at the particle scale.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cryoscore.filters import bin_image
from cryoscore.io.coords import ParticleCoordinates
from cryoscore.pick.peaks import (
    binning_factor,
    check_arguments,
    find_peaks,
    flatten_background,
    robust_standardise,
)

#: The micrograph is binned so that the particle diameter is about this many pixels.
BLOB_TARGET_DIAMETER_PX = 24.0

#: Inner and outer Gaussian standard deviations of the DoG, in particle radii.
INNER_SIGMA_RADII = 0.5
OUTER_SIGMA_RADII = 1.0


def blob_response(image: np.ndarray, radius_px: float) -> np.ndarray:
    """Difference-of-Gaussians response to dark discs of radius ``radius_px`` in ``image`` (H, W).

    ``G(outer) * image - G(inner) * image`` with standard deviations of half a radius
    and one radius. Its zero crossing is that of a Laplacian of Gaussian of standard
    deviation 0.68 radius, close to ``radius / sqrt(2)`` where the scale-normalised LoG
    of a disc peaks; the pair was tuned on simulated apoferritin and on EMPIAR-10146
    (hollow shells whose projections are darkest near the rim, hence the narrow inner
    Gaussian). Positive where the image is darker than its surroundings; float32 (H, W),
    arbitrary units.
    """
    inner = ndimage.gaussian_filter(image, INNER_SIGMA_RADII * radius_px, mode="reflect")
    outer = ndimage.gaussian_filter(image, OUTER_SIGMA_RADII * radius_px, mode="reflect")
    return (outer - inner).astype(np.float32)


def blob_score_map(image: np.ndarray, pixel_size_a: float, diameter_a: float) -> tuple[np.ndarray, int]:
    """The blob picker's score map on the binned grid, and the binning factor.

    Bins ``image`` (H, W) so the particle is about :data:`BLOB_TARGET_DIAMETER_PX` across,
    flattens the background, takes :func:`blob_response` and scales it to robust noise
    standard deviations. Returns (float32 (H // factor, W // factor), factor).
    """
    diameter_px = diameter_a / pixel_size_a
    factor = binning_factor(diameter_px, BLOB_TARGET_DIAMETER_PX)
    coarse = flatten_background(bin_image(image, factor), diameter_px / factor)
    return robust_standardise(blob_response(coarse, diameter_px / factor / 2)), factor


def pick_blobs(
    image: np.ndarray,
    pixel_size_a: float,
    diameter_a: float,
    *,
    max_picks: int | None = None,
    threshold: float | None = None,
) -> ParticleCoordinates:
    """Pick dark, roughly round particles of ``diameter_a`` Angstrom in a micrograph.

    Parameters
    ----------
    image:
        (H, W) micrograph, any real dtype, particles darker than the background (as
        recorded, or denoised from it).
    pixel_size_a:
        Angstrom per pixel (> 0).
    diameter_a:
        Particle diameter, Angstrom (> 0).
    max_picks:
        Return at most this many picks, the best.
    threshold:
        Minimum score in robust noise standard deviations; None returns every local
        maximum scoring above 0, for sweeping a precision-recall curve.

    Returns
    -------
    ParticleCoordinates in pixels of ``image`` (x = column, y = row), with
    ``figure_of_merit`` the score (DoG response in robust noise standard deviations),
    sorted best first. Picks are at least one particle radius apart and their centres at
    least one radius from the edge.
    """
    check_arguments(image, pixel_size_a, diameter_a)
    scores, factor = blob_score_map(image, pixel_size_a, diameter_a)
    radius_px = diameter_a / pixel_size_a / 2
    return find_peaks(scores, factor, image.shape, radius_px, threshold=threshold, max_picks=max_picks)
