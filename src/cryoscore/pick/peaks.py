"""What the pickers share: binning, background flattening, robust scaling and peak finding.

Both pickers work on a coarse copy of the micrograph made by block-averaging ``factor``
x ``factor`` pixels (:func:`cryoscore.filters.bin_image`). Coarse pixel ``i`` averages original pixels
``i * factor ... i * factor + factor - 1``, so its centre is original pixel
``i * factor + (factor - 1) / 2``; :func:`find_peaks` maps picks back to the original
frame with that rule, so callers never see coarse coordinates.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree
from skimage.feature import peak_local_max

from cryoscore.filters import bin_image
from cryoscore.io.coords import ParticleCoordinates
from cryoscore.settings import BACKGROUND_METHODS

#: Scale of a normal distribution's standard deviation in units of its median absolute deviation.
_MAD_TO_STD = 1.4826

#: Scores at or below this (robust noise standard deviations) are never picks.
SCORE_FLOOR = 0.0


def check_arguments(image: np.ndarray, pixel_size_a: float, diameter_a: float) -> None:
    """ValueError unless ``image`` is 2D and the pixel size and diameter (Angstrom) are > 0."""
    if image.ndim != 2:
        raise ValueError(f"expected a 2D micrograph, got an array of shape {image.shape}")
    if not (pixel_size_a > 0 and diameter_a > 0):
        raise ValueError(f"pixel size and diameter must be > 0, got {pixel_size_a} A and {diameter_a} A")


def binning_factor(diameter_px: float, target_px: float) -> int:
    """Integer binning that brings a ``diameter_px`` particle closest to ``target_px`` pixels (>= 1)."""
    return max(1, round(diameter_px / target_px))


def flatten_background(image: np.ndarray, diameter_px: float, method: str = "gaussian") -> np.ndarray:
    """``image`` (H, W) minus its background, for particles ``diameter_px`` across; float32 (H, W).

    ``"gaussian"``: the background is the Gaussian low-pass of standard deviation one diameter. It
    removes ice gradients and other background varying over a few diameters or more (the Gaussian's
    half-maximum width is 2.4 diameters) but not a sharp step: a carbon edge or the rim of a
    contamination is left as a band of about a diameter each side of the step.
    ``"median"``: :func:`median_background`, which follows such steps.
    """
    if method not in BACKGROUND_METHODS:
        raise ValueError(f"background method must be one of {', '.join(BACKGROUND_METHODS)}, got {method!r}")
    image = np.asarray(image, dtype=np.float32)
    if method == "median":
        return image - median_background(image, diameter_px)
    return image - ndimage.gaussian_filter(image, diameter_px, mode="reflect")


def median_background(image: np.ndarray, diameter_px: float) -> np.ndarray:
    """The background of ``image`` (H, W) under particles ``diameter_px`` across, following sharp edges.

    The median over squares about two diameters wide: particles fill a minority of such a square and
    barely move its median, while on either side of a carbon edge or a contamination's rim the side the
    square's centre lies on is the majority, so the estimate steps where the image steps (a Gaussian
    low-pass smears the step over a few diameters). Computed on a grid block-averaged to about a quarter
    diameter (:func:`~cryoscore.filters.bin_image`, after reflect-padding to a whole number of blocks),
    interpolated back linearly and smoothed by a Gaussian of a quarter diameter; float32 (H, W).
    """
    image = np.asarray(image, dtype=np.float32)
    height, width = image.shape
    factor = max(1, round(diameter_px / 4))
    padded = np.pad(image, ((0, -height % factor), (0, -width % factor)), mode="reflect")
    coarse = bin_image(padded, factor)
    window = 2 * max(1, round(diameter_px / factor)) + 1
    median = ndimage.median_filter(coarse, size=window, mode="reflect")
    rows = (np.arange(height) - (factor - 1) / 2) / factor  # coarse pixel i is centred on i * factor + (factor - 1) / 2
    columns = (np.arange(width) - (factor - 1) / 2) / factor
    background = ndimage.map_coordinates(median, np.meshgrid(rows, columns, indexing="ij"), order=1, mode="nearest")
    return ndimage.gaussian_filter(background, diameter_px / 4, mode="reflect").astype(np.float32)


def robust_standardise(response: np.ndarray) -> np.ndarray:
    """``response`` minus its median, divided by its robust standard deviation (1.4826 MAD).

    Particles occupy a minority of the pixels, so the median and MAD measure the noise
    and scores become numbers of noise standard deviations, comparable across micrographs
    and denoisers. Where the signal outweighs the noise at the particle scale (a clean or
    well-denoised image) the MAD measures the spread between particles instead, and scores
    depend on how crowded the micrograph is. Falls back to the plain standard deviation when the MAD is 0 (more than
    half the pixels equal), and returns zeros for a constant response. float32, same shape.
    """
    centred = response - np.median(response)
    scale = _MAD_TO_STD * float(np.median(np.abs(centred)))
    if not scale > 0:
        scale = float(np.std(centred))
    if not scale > 0:
        return np.zeros_like(response, dtype=np.float32)
    return (centred / scale).astype(np.float32)


def _subpixel_offsets(score_map: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Offsets (within +-0.5 px) of the vertices of parabolas through each peak and its neighbours.

    ``rows``, ``cols`` must be at least one pixel from the edge of ``score_map``.
    """

    def vertex(before: np.ndarray, centre: np.ndarray, after: np.ndarray) -> np.ndarray:
        curvature = before - 2 * centre + after
        with np.errstate(divide="ignore", invalid="ignore"):
            offset = np.where(curvature < 0, (before - after) / (2 * curvature), 0.0)
        return np.clip(offset, -0.5, 0.5)

    centre = score_map[rows, cols].astype(np.float64)
    d_row = vertex(score_map[rows - 1, cols], centre, score_map[rows + 1, cols])
    d_col = vertex(score_map[rows, cols - 1], centre, score_map[rows, cols + 1])
    return d_row, d_col


def _greedy_suppression(points: np.ndarray, radius: float) -> np.ndarray:
    """Indices of ``points`` (n, 2), given best first, keeping each one not within ``radius`` of a kept one."""
    tree = cKDTree(points)
    suppressed = np.zeros(len(points), dtype=bool)
    kept = []
    for index in range(len(points)):
        if suppressed[index]:
            continue
        kept.append(index)
        suppressed[tree.query_ball_point(points[index], radius)] = True
    return np.array(kept, dtype=np.int64)


def find_peaks(
    score_map: np.ndarray,
    factor: int,
    image_shape: tuple[int, int],
    radius_px: float,
    *,
    threshold: float | None = None,
    max_picks: int | None = None,
    floor: float = SCORE_FLOOR,
) -> ParticleCoordinates:
    """Non-maximum suppression of a coarse score map; picks in the original pixel frame.

    Candidates are the map's local maxima (3 x 3 neighbourhood, ``skimage.feature.peak_local_max``;
    a flat map has none) above the threshold; they are kept best first unless within one
    particle radius of a pick already kept.

    Parameters
    ----------
    score_map:
        (h, w) scores on the grid binned by ``factor`` (:func:`cryoscore.filters.bin_image`), high = particle.
    factor:
        The binning factor, original pixels per coarse pixel.
    image_shape:
        (H, W) of the original micrograph, pixels.
    radius_px:
        Particle radius in original pixels. No two picks are closer than this; picks whose
        centre is less than this from the micrograph's edge are dropped.
    threshold:
        Keep scores above this (and always above ``floor``); None keeps every local
        maximum above the floor, for sweeping a precision-recall curve later.
    max_picks:
        Keep at most this many, the best.
    floor:
        Scores at or below this are never picks: :data:`SCORE_FLOOR` for scores in noise
        standard deviations, ``-inf`` for scores of any sign (a network's logits).

    Returns
    -------
    ParticleCoordinates with ``figure_of_merit`` = score, sorted by score, best first.
    Positions are refined to sub-pixel by a parabola through each peak and its neighbours.
    """
    if min(score_map.shape) < 3:  # no pixel has a neighbour on each side for the parabola
        return ParticleCoordinates(x_px=np.zeros(0), y_px=np.zeros(0), figure_of_merit=np.zeros(0))
    floor = floor if threshold is None else max(threshold, floor)
    # 3 x 3 local maxima above the floor, none on the border (the parabola needs a neighbour on each side)
    rows, cols = peak_local_max(score_map, min_distance=1, threshold_abs=floor, exclude_border=1).T
    scores = score_map[rows, cols].astype(np.float64)
    d_row, d_col = _subpixel_offsets(score_map, rows, cols)
    y_px = (rows + d_row) * factor + (factor - 1) / 2
    x_px = (cols + d_col) * factor + (factor - 1) / 2
    height, width = image_shape
    inside = (
        (y_px >= radius_px) & (y_px <= height - 1 - radius_px) & (x_px >= radius_px) & (x_px <= width - 1 - radius_px)
    )
    order = np.argsort(-scores[inside], kind="stable")
    x_px, y_px, scores = x_px[inside][order], y_px[inside][order], scores[inside][order]
    if len(scores):
        kept = _greedy_suppression(np.stack([y_px, x_px], axis=1), radius_px)
        x_px, y_px, scores = x_px[kept], y_px[kept], scores[kept]
    if max_picks is not None:
        x_px, y_px, scores = x_px[:max_picks], y_px[:max_picks], scores[:max_picks]
    return ParticleCoordinates(x_px=x_px, y_px=y_px, figure_of_merit=scores)
