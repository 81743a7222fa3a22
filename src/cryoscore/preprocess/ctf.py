"""CTF estimation from a micrograph's Thon rings, fitted on torch-ctf's forward model.

The method follows CTFFIND's outline, with a background model that is linear in its
parameters so every candidate defocus is scored by one least-squares solve:

1. **Amplitude spectrum**: the square root of the mean periodogram of overlapping tiles
   (50 % overlap, each tile mean-subtracted and edge-tapered), on the tile's rfft grid.
2. **1D search**: the spectrum is divided by a smooth radial background, averaged in rings,
   and for each defocus on a grid over ``defocus_range_um`` the ring profile between
   ``resolution_range_a`` is fitted as ``B(k) + E(k) * CTF^2(k)`` with ``B`` and ``E`` cubic
   polynomials in ``k`` (solved linearly); the few best local minima of the residual are
   each refined by a bounded scalar search (astigmatism smears the average's outer rings, so
   the global minimum alone can be wrong).
3. **2D refinement**: the same model on every spectrum pixel of the annulus, now with
   astigmatism (mean defocus, and the astigmatism as the vector
   ``(U - V) / 2 * (cos 2 angle, sin 2 angle)`` so no angle is singular), by Nelder-Mead from
   each 1D candidate; the smallest residual wins.
4. **Fit resolution**: outward from the low-resolution limit, the Pearson correlation between
   the spectrum and the fitted ``CTF^2`` inside each Thon ring (one period of ``CTF^2``); the
   fit resolution is the outer edge of the last ring before two consecutive rings correlate
   below :data:`RING_CORRELATION_THRESHOLD`.

Conventions are RELION's (:class:`~cryoscore.simulate.ctf.CtfParams`): defocus positive for
underfocus, the U axis at ``astigmatism_angle_deg`` from the image x axis (columns).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from scipy import optimize, signal
from torch_ctf import calculate_total_phase_shift

from cryoscore.errors import InputError
from cryoscore.fourier import radial_frequency
from cryoscore.io.ctf_star import MicrographCtf
from cryoscore.io.mrc import read_mrc
from cryoscore.simulate.ctf import CtfParams, ctf_2d, electron_wavelength_a

RING_CORRELATION_THRESHOLD = 0.3
"""A Thon ring counts as fitted while the spectrum correlates with the model above this inside it."""
RELIABLE_FIGURE_OF_MERIT = 0.1
"""Below this correlation over the fit range no Thon rings were found: the defocus is a guess.
(Simulated micrographs with ice: 0.3; pure noise and the published EMPIAR-10146 crops: under 0.07.)"""
_POLYNOMIAL_DEGREE = 3
_CANDIDATES = 4
"""Local minima of the 1D search that are refined in 2D."""


@dataclass(frozen=True)
class CtfSearch:
    """What the estimate searches over and the optics it assumes.

    ``defocus_range_um``: (lowest, highest) mean defocus, micrometres, underfocus positive;
    ``resolution_range_a``: (low, high) resolution limits of the fit, Angstrom (the high limit
    is raised to 2.2 pixels where the micrograph's Nyquist limit is coarser);
    ``max_astigmatism_um``: the largest ``(U - V) / 2`` accepted; ``tile_px``: the spectrum's
    tile size, even (smaller micrographs use their largest even square).
    """

    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.07
    defocus_range_um: tuple[float, float] = (0.3, 5.0)
    resolution_range_a: tuple[float, float] = (30.0, 5.0)
    max_astigmatism_um: float = 0.5
    tile_px: int = 512

    def __post_init__(self) -> None:
        low_df, high_df = self.defocus_range_um
        low_res, high_res = self.resolution_range_a
        problems = []
        if not 0 < low_df < high_df:
            problems.append(f"defocus range must be 0 < low < high um, got {self.defocus_range_um}")
        if not low_res > high_res > 0:
            problems.append(f"resolution range must be low > high > 0 A, got {self.resolution_range_a}")
        if self.voltage_kv <= 0 or self.cs_mm < 0 or not 0 <= self.amplitude_contrast < 1:
            problems.append("voltage must be > 0 kV, Cs >= 0 mm and amplitude contrast in [0, 1)")
        if self.max_astigmatism_um < 0 or self.tile_px < 64 or self.tile_px % 2:
            problems.append("max astigmatism must be >= 0 um and the tile an even number of pixels >= 64")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True)
class CtfEstimate:
    """A fitted CTF: ``params`` (with the search's optics), ``fit_resolution_a`` (the highest
    resolution to which the Thon rings were fitted, Angstrom), ``figure_of_merit`` (Pearson
    correlation of the background-normalised spectrum with ``CTF^2`` over the fit range) and
    the tile size the spectrum used."""

    params: CtfParams
    fit_resolution_a: float
    figure_of_merit: float
    tile_px: int


def amplitude_spectrum(image: np.ndarray, tile_px: int) -> np.ndarray:
    """Square root of the mean periodogram of 50 %-overlapping ``tile_px`` tiles of ``image`` (H, W).

    Each tile has its mean removed and a Tukey taper (10 % of its width) against edge
    streaks. Returns float64 (tile_px, tile_px // 2 + 1) on the unshifted rfft grid.
    """
    rows, cols = image.shape
    taper = signal.windows.tukey(tile_px, alpha=0.1)
    window = np.outer(taper, taper)
    step = tile_px // 2
    total = np.zeros((tile_px, tile_px // 2 + 1))
    count = 0
    for row in range(0, rows - tile_px + 1, step):
        for col in range(0, cols - tile_px + 1, step):
            tile = image[row:row + tile_px, col:col + tile_px].astype(np.float64)
            total += np.abs(np.fft.rfft2((tile - tile.mean()) * window)) ** 2
            count += 1
    return np.sqrt(total / count)


def _polynomial_basis(k: np.ndarray, k_low: float, k_high: float, degree: int) -> np.ndarray:
    """Legendre polynomials of degree 0..``degree`` of k mapped onto [-1, 1]: (n, degree + 1)."""
    x = 2 * (k - k_low) / (k_high - k_low) - 1
    return np.polynomial.legendre.legvander(x, degree)


def _fit_residual(data: np.ndarray, basis: np.ndarray, ctf_squared: np.ndarray) -> tuple[float, np.ndarray]:
    """Least squares of ``data`` on ``B(k) + E(k) * ctf_squared``: (residual sum of squares, fitted values)."""
    design = np.concatenate([basis, basis * ctf_squared[:, None]], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, data, rcond=None)
    fitted = design @ coefficients
    return float(np.sum((data - fitted) ** 2)), fitted


def _ctf_squared(search: CtfSearch, defocus_u_um: float, defocus_v_um: float, angle_deg: float,
                 tile_px: int, pixel_size_a: float) -> np.ndarray:
    params = CtfParams(defocus_u_um, defocus_v_um, angle_deg, search.voltage_kv, search.cs_mm,
                       search.amplitude_contrast)
    return ctf_2d(params, (tile_px, tile_px), pixel_size_a, rfft=True).double().numpy() ** 2


def _radial_ctf_squared(search: CtfSearch, defocus_um: np.ndarray, k: np.ndarray) -> np.ndarray:
    """CTF^2 without astigmatism for each defocus of ``defocus_um`` (n,) at frequencies ``k`` (m,) 1/A:
    (n, m), from torch-ctf's phase (the same CTF as :func:`~cryoscore.simulate.ctf.ctf_2d`)."""
    phase = calculate_total_phase_shift(
        defocus_um=torch.as_tensor(defocus_um, dtype=torch.float64)[:, None],
        voltage_kv=torch.tensor(search.voltage_kv, dtype=torch.float64),
        spherical_aberration_mm=torch.tensor(search.cs_mm, dtype=torch.float64),
        phase_shift_degrees=torch.tensor(0.0, dtype=torch.float64),
        amplitude_contrast_fraction=torch.tensor(search.amplitude_contrast, dtype=torch.float64),
        fftfreq_grid_angstrom_squared=torch.as_tensor(k, dtype=torch.float64)[None, :] ** 2,
    )
    return torch.sin(phase).numpy() ** 2


def _ring_profile(values: np.ndarray, k: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` in rings between ``edges`` (1/A): (ring centres, means), empty rings dropped."""
    index = np.digitize(k.ravel(), edges) - 1
    inside = (index >= 0) & (index < len(edges) - 1)
    sums = np.bincount(index[inside], weights=values.ravel()[inside], minlength=len(edges) - 1)
    counts = np.bincount(index[inside], minlength=len(edges) - 1)
    keep = counts > 0
    centres = 0.5 * (edges[:-1] + edges[1:])
    return centres[keep], sums[keep] / counts[keep]


def estimate_ctf(image: np.ndarray, pixel_size_a: float, search: CtfSearch = CtfSearch()) -> CtfEstimate:
    """The CTF of one micrograph ``image`` (H, W) at ``pixel_size_a`` Angstrom per pixel.

    Raises ValueError if the micrograph is smaller than 64 px or the fit range holds no
    frequencies at this pixel size.
    """
    tile_px = min(search.tile_px, min(image.shape) // 2 * 2)
    if tile_px < 64:
        raise ValueError(f"a {image.shape[1]} x {image.shape[0]} px micrograph is too small for a CTF fit (64 px)")
    k_low = 1 / search.resolution_range_a[0]
    k_high = min(1 / search.resolution_range_a[1], 1 / (2.2 * pixel_size_a))
    if k_high <= k_low * 1.5:
        raise ValueError(f"the resolution range {search.resolution_range_a} A leaves no room for Thon rings "
                         f"at {pixel_size_a:g} A/px")
    spectrum = amplitude_spectrum(image, tile_px)
    k = radial_frequency((tile_px, tile_px), pixel_size_a)
    annulus = (k >= k_low) & (k <= k_high)
    k_fit = k[annulus]
    basis = _polynomial_basis(k_fit, k_low, k_high, _POLYNOMIAL_DEGREE)
    # Background-normalise: divide by a smooth radial fit of the log spectrum (it falls by decades
    # over the range), so the rings and the noise are about even across it.
    data = spectrum[annulus]
    smooth_basis = _polynomial_basis(k_fit, k_low, k_high, 5)
    log_fit, *_ = np.linalg.lstsq(smooth_basis, np.log(np.maximum(data, 1e-30)), rcond=None)
    data = data / np.exp(smooth_basis @ log_fit)

    # 1D search on the ring profile, one FFT pixel per ring.
    edges = np.arange(k_low, k_high + 1 / (tile_px * pixel_size_a), 1 / (tile_px * pixel_size_a))
    ring_k, ring_data = _ring_profile(data, k_fit, edges)
    ring_basis = _polynomial_basis(ring_k, k_low, k_high, _POLYNOMIAL_DEGREE)

    def radial_residual(defocus_um: float) -> float:
        ctf_squared = _radial_ctf_squared(search, np.array([defocus_um]), ring_k)[0]
        return _fit_residual(ring_data, ring_basis, ctf_squared)[0]

    # A grid fine enough that the phase at k_high moves by at most 0.3 rad between neighbours.
    phase_per_um = math.pi * electron_wavelength_a(search.voltage_kv) * k_high**2 * 1e4
    step_um = min(0.3 / phase_per_um, 0.05)
    grid = np.arange(search.defocus_range_um[0], search.defocus_range_um[1] + step_um, step_um)
    residuals = np.array([_fit_residual(ring_data, ring_basis, row)[0]
                          for row in _radial_ctf_squared(search, grid, ring_k)])
    # Astigmatism smears the rotational average's outer rings, so the global minimum can be a
    # wrong defocus: the best few local minima each go on to the 2D fit, which sees the rings as they are.
    minima = [index for index in range(len(grid))
              if residuals[index] <= residuals[max(index - 1, 0)] and residuals[index] <= residuals[min(index + 1, len(grid) - 1)]]
    candidates = []
    for index in sorted(minima, key=lambda index: residuals[index])[:_CANDIDATES]:
        refined = optimize.minimize_scalar(radial_residual, method="bounded", options={"xatol": 1e-4},
                                           bounds=(max(grid[index] - step_um, grid[0] / 2), grid[index] + step_um))
        candidates.append(float(refined.x))

    # 2D refinement with astigmatism.
    def parameters(vector: np.ndarray) -> tuple[float, float, float]:
        mean, astig_x, astig_y = vector
        half_difference = min(math.hypot(astig_x, astig_y), search.max_astigmatism_um)
        angle = math.degrees(0.5 * math.atan2(astig_y, astig_x))
        return mean + half_difference, max(mean - half_difference, 1e-3), angle

    def planar_residual(vector: np.ndarray) -> float:
        if vector[0] <= 0:
            return math.inf
        u, v, angle = parameters(vector)
        return _fit_residual(data, basis, _ctf_squared(search, u, v, angle, tile_px, pixel_size_a)[annulus])[0]

    simplex = np.array([[0, 0, 0], [0.02, 0, 0], [0, 0.1, 0], [0, 0, 0.1]])
    fits = [optimize.minimize(planar_residual, start, method="Nelder-Mead",
                              options={"xatol": 1e-4, "fatol": 1e-9, "initial_simplex": start + simplex})
            for start in (np.array([defocus, 0.0, 0.0]) for defocus in candidates)]
    best_fit = min(fits, key=lambda fit: fit.fun)
    u, v, angle = parameters(best_fit.x)
    angle = (angle + 180.0) % 180.0
    params = CtfParams(u, v, angle, search.voltage_kv, search.cs_mm, search.amplitude_contrast)
    model = _ctf_squared(search, u, v, angle, tile_px, pixel_size_a)
    figure_of_merit = float(np.corrcoef(data, model[annulus])[0, 1])
    return CtfEstimate(params, _fit_resolution(spectrum, model, k, k_low, pixel_size_a), figure_of_merit, tile_px)


def _fit_resolution(spectrum: np.ndarray, model: np.ndarray, k: np.ndarray, k_low: float,
                    pixel_size_a: float) -> float:
    """The resolution (A) of the outer edge of the last Thon ring, counted outward from
    ``k_low``, before two consecutive rings correlate with ``model`` (CTF^2) below
    :data:`RING_CORRELATION_THRESHOLD`; rings are the periods of ``model`` between its zeros."""
    k_nyquist = 1 / (2 * pixel_size_a)
    inside = (k >= k_low) & (k <= 0.95 * k_nyquist)
    # Ring boundaries: the zeros of CTF^2 along the radius, found on the ring profile of the model.
    edges = np.arange(k_low, 0.95 * k_nyquist, 0.25 / (spectrum.shape[0] * pixel_size_a))
    ring_k, ring_model = _ring_profile(model, k, edges)
    minima = signal.argrelmin(ring_model)[0]
    zeros = np.concatenate([[k_low], ring_k[minima], [0.95 * k_nyquist]])
    last_good, failures = k_low, 0
    for inner, outer in zip(zeros[:-1], zeros[1:]):
        ring = inside & (k >= inner) & (k < outer)
        if ring.sum() < 16:
            continue
        correlation = np.corrcoef(spectrum[ring], model[ring])[0, 1]
        if np.isfinite(correlation) and correlation >= RING_CORRELATION_THRESHOLD:
            last_good, failures = outer, 0
        else:
            failures += 1
            if failures == 2:
                break
    return float(1 / last_good)


def estimate_ctf_files(paths: Sequence[Path], search: CtfSearch = CtfSearch(), *, pixel_size_a: float | None = None,
                       report: Callable[[MicrographCtf], None] | None = None) -> tuple[list[MicrographCtf], float]:
    """The CTF of each MRC micrograph of ``paths`` (pixel size from each header unless
    ``pixel_size_a`` is given), calling ``report`` after each; returns them and the pixel size.

    Raises InputError naming the file for an unreadable micrograph, one too small to fit, or
    pixel sizes that differ between micrographs (one STAR optics group holds one).
    """
    results, pixel_sizes = [], set()
    for path in paths:
        image, pixel = read_mrc(path, pixel_size_a=pixel_size_a)
        pixel_sizes.add(round(pixel, 4))
        if len(pixel_sizes) > 1:
            raise InputError(path, f"pixel size {pixel:g} A differs from the earlier micrographs'; "
                                   "estimate them separately or pass --pixel-size")
        try:
            estimate = estimate_ctf(image, pixel, search)
        except ValueError as error:
            raise InputError(path, str(error)) from None
        result = MicrographCtf(str(path), estimate.params, estimate.fit_resolution_a, estimate.figure_of_merit)
        results.append(result)
        if report is not None:
            report(result)
    return results, pixel_sizes.pop()
