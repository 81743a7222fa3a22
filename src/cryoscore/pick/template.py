"""Template picking: cross-correlation with CTF-modulated projections of a reference map.

The secondary picking judge (DESIGN.md section 3). Give it a reference *different* from
the one a guided denoiser was trained with, or it measures the guidance, not the particles.

Everything happens on a coarse grid where the particle is about
:data:`TEMPLATE_TARGET_DIAMETER_PX` pixels across: the micrograph is block-averaged
(:func:`~cryoscore.filters.bin_image`) and the reference Fourier-cropped
(:func:`bin_volume`) by the same integer factor. Each orientation's cross-correlation map
is divided by its own standard deviation; the maximum over orientations is then scaled
to robust noise standard deviations and its peaks are picked like the blob picker's
(:func:`~cryoscore.pick.peaks.find_peaks`). For speed, only a low-rank basis of the
templates is correlated (with FFTs), and near-identical templates are skipped
(:func:`correlation_map`): a few hundred orientations on a 1024 x 1024 micrograph take
about a second on one CPU core.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft
import torch
from torch_fourier_rescale import fourier_rescale_3d
from torch_so3 import get_uniform_euler_angles

from cryoscore.filters import bin_image
from cryoscore.fourier import pad_or_crop_centred
from cryoscore.io.coords import ParticleCoordinates
from cryoscore.pick.peaks import (
    binning_factor,
    check_arguments,
    find_peaks,
    flatten_background,
    robust_standardise,
)
from cryoscore.simulate.ctf import CtfParams, ctf_2d, electron_wavelength_a
from cryoscore.simulate.project import project_potential

#: The micrograph and the reference are binned so that the particle is about this many pixels across.
TEMPLATE_TARGET_DIAMETER_PX = 24.0

#: Edge of the template box before CTF padding, in particle diameters (see :func:`make_templates`).
TEMPLATE_BOX_DIAMETERS = 2.0

#: Default step of the orientation grid, degrees (552 orientations).
DEFAULT_ANGULAR_STEP_DEG = 30.0

#: Fraction of the templates' summed squared norms kept by their low-rank basis.
TEMPLATE_ENERGY = 0.995

#: Templates correlating at least this well with an earlier one are left out (see :func:`_distinct`).
TEMPLATE_SIMILARITY = 0.99

#: Basis images correlated per batch; bounds memory at a few (batch, H, W) float32 maps.
_BATCH = 16
#: Pixels per block when combining basis maps; bounds memory at (n templates, block) float32.
_PIXELS = 16384


def orientation_grid(angular_step_deg: float) -> np.ndarray:
    """Orientations covering SO(3) about ``angular_step_deg`` apart, RELION (rot, tilt, psi) (n, 3), degrees.

    torch-so3's uniform grid (Hopf fibration), the same step for tilt and in-plane angle.
    """
    if not angular_step_deg > 0:
        raise ValueError(f"angular step must be > 0 degrees, got {angular_step_deg}")
    return get_uniform_euler_angles(psi_step=angular_step_deg, theta_step=angular_step_deg).numpy()


def bin_volume(volume: np.ndarray, factor: int) -> np.ndarray:
    """Resample a cube (D, D, D) to ``factor`` times coarser voxels by Fourier cropping.

    Values stay in the same units (a sampled potential, not a sum). The volume is
    zero-padded to ``factor * M`` voxels, M even, with voxel D//2 landing on a multiple of
    ``factor`` so that it becomes the coarse centre voxel M//2
    (:func:`~cryoscore.fourier.pad_or_crop_centred`), then Fourier-cropped by
    torch-fourier-rescale. Returns float32 (M, M, M), ``M = 2 * ceil(D / (2 factor))``; the
    input itself (as float32) when ``factor`` is 1.
    """
    volume = np.asarray(volume, dtype=np.float32)
    if factor == 1:
        return volume
    coarse = 2 * math.ceil(volume.shape[0] / (2 * factor))
    padded = torch.from_numpy(pad_or_crop_centred(volume, coarse * factor))
    return fourier_rescale_3d(padded, target_shape=(coarse,) * 3)[0].numpy()


def _centre_in_box(array: torch.Tensor, box_px: int, n_axes: int) -> torch.Tensor:
    """Zero-pad or crop the last ``n_axes`` axes of ``array`` (each D long) to ``box_px``,
    index D//2 landing on box_px//2."""
    size = array.shape[-1]
    before = box_px // 2 - size // 2
    return torch.nn.functional.pad(array, (before, box_px - size - before) * n_axes)


def make_templates(
    volume: np.ndarray, pixel_size_a: float, angles_deg: np.ndarray, ctf: CtfParams | None, box_px: int
) -> torch.Tensor:
    """Zero-mean, unit-norm templates (n, T, T) of ``volume`` (D, D, D) at each orientation (n, 3).

    Each is the projection in a ``box_px`` box, padded by the CTF's delocalisation at
    Nyquist, multiplied by the CTF in Fourier space and negated: particles are dark, as
    recorded (the image's contrast is ``-2 IFFT(CTF * FFT(phase))``, see
    :mod:`cryoscore.simulate.micrograph`). With ``ctf`` None the template is the negated
    projection itself, right for phase-flipped micrographs and a low-resolution
    approximation for raw ones (at low frequency the CTF of an underfocused image is
    positive). Subtracting the mean over the box makes the template ask for a particle
    darker than its surroundings, so ``box_px`` sets how much surround is compared.
    Centre pixel T//2 is the particle centre.
    """
    volume_t = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))
    if volume_t.shape[-1] < box_px:  # room for the projector; the projections are cut to box_px anyway
        volume_t = _centre_in_box(volume_t, box_px, 3)
    projections = _centre_in_box(project_potential(volume_t, angles_deg, pixel_size_a), box_px, 2)
    if ctf is None:
        templates = -projections
    else:
        nyquist_per_a = 1 / (2 * pixel_size_a)
        max_defocus_a = max(ctf.defocus_u_um, ctf.defocus_v_um) * 1e4
        pad = math.ceil(electron_wavelength_a(ctf.voltage_kv) * max_defocus_a * nyquist_per_a / pixel_size_a)
        padded = torch.nn.functional.pad(projections, (pad, pad, pad, pad))
        transfer = ctf_2d(ctf, (padded.shape[-2], padded.shape[-1]), pixel_size_a, rfft=True)
        templates = -torch.fft.irfft2(torch.fft.rfft2(padded) * transfer, s=padded.shape[-2:])
    templates = templates - templates.mean(dim=(-2, -1), keepdim=True)
    norms = torch.linalg.vector_norm(templates, dim=(-2, -1), keepdim=True)
    return templates / norms.clamp_min(torch.finfo(torch.float32).tiny)


def _basis(templates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A few basis images (k, T, T) and coefficients (n, k) that rebuild ``templates`` (n, T, T).

    The leading principal axes of the templates (right singular vectors), as many as hold
    :data:`TEMPLATE_ENERGY` of their summed squared norms: templates of neighbouring
    orientations are nearly alike, so k is typically 10-200 for a few hundred templates.
    Computed in float64 from the eigenvectors of the smaller of the two Gram matrices
    (numpy's eigh: torch's is erratically slow on a busy CPU).
    """
    count, size = templates.shape[0], templates.shape[-1]
    flat = templates.reshape(count, -1).double().numpy()
    by_template = count <= flat.shape[1]
    eigenvalues, vectors = np.linalg.eigh(flat @ flat.T if by_template else flat.T @ flat)
    eigenvalues, vectors = np.clip(eigenvalues[::-1], 0, None), vectors[:, ::-1]  # largest first
    energy = np.cumsum(eigenvalues) / np.sum(eigenvalues)
    rank = min(int(np.searchsorted(energy, TEMPLATE_ENERGY)) + 1, int(np.count_nonzero(eigenvalues)))
    if by_template:  # vectors are left singular vectors u; v = A^T u / s
        singular = np.sqrt(eigenvalues[:rank])
        basis, coefficients = (vectors[:, :rank].T @ flat) / singular[:, None], vectors[:, :rank] * singular
    else:
        basis = vectors[:, :rank].T
        coefficients = flat @ vectors[:, :rank]
    basis = np.ascontiguousarray(basis.reshape(rank, size, size), dtype=np.float32)
    return torch.from_numpy(basis), torch.from_numpy(np.ascontiguousarray(coefficients, dtype=np.float32))


def _distinct(coefficients: torch.Tensor) -> torch.Tensor:
    """Indices of the templates, given by their basis coefficients (n, k), that are not near-copies.

    Greedy, in grid order: a template is kept unless its correlation with a kept one
    reaches :data:`TEMPLATE_SIMILARITY`. Round particles give many near-copies across
    orientations; dropping them barely moves the maximum over templates.
    """
    directions = coefficients / torch.linalg.vector_norm(coefficients, dim=1, keepdim=True).clamp_min(1e-30)
    kept = torch.zeros(len(directions), dtype=torch.bool)
    kept[0] = True
    for index in range(1, len(directions)):
        kept[index] = bool((directions[kept] @ directions[index]).max() < TEMPLATE_SIMILARITY)
    return torch.nonzero(kept).ravel()


def correlation_map(image: np.ndarray, templates: torch.Tensor) -> np.ndarray:
    """Maximum over templates of their standardised cross-correlation with ``image`` (h, w).

    ``templates`` (n, T, T) have their centre at pixel T//2; output pixel (r, c) is the
    correlation with the template centred there (zero outside the image, no wrap-around).
    Each template's map is divided by its standard deviation over the image, so templates
    with more power in noisy frequencies do not dominate the maximum. float32 (h, w).

    The templates are expanded on a low-rank basis (:func:`_basis`): only the k basis
    images are correlated with FFTs, each template's map is a linear combination of
    theirs, and its standard deviation follows from their covariance. Near-copies among
    the templates are left out first (:func:`_distinct`).
    """
    height, width = image.shape
    basis, coefficients = _basis(templates)
    coefficients = coefficients[_distinct(coefficients)]
    maps = _basis_correlations(image, basis)
    mean = maps.mean(dim=1).double()
    covariance = (maps @ maps.T).double() / maps.shape[1] - torch.outer(mean, mean)
    variances = torch.einsum("ji,ik,jk->j", coefficients.double(), covariance, coefficients.double())
    scaled = coefficients / variances.clamp_min(torch.finfo(torch.float32).tiny).sqrt().float()[:, None]
    best = [(scaled @ maps[:, start : start + _PIXELS]).amax(dim=0) for start in range(0, maps.shape[1], _PIXELS)]
    return torch.cat(best).reshape(height, width).numpy()


def _basis_correlations(image: np.ndarray, basis: torch.Tensor) -> torch.Tensor:
    """Cross-correlation of ``image`` (h, w) with each basis image (k, T, T) centred at every
    pixel, zero outside the image (no wrap-around); float32 (k, h * w)."""
    height, width = image.shape
    size = basis.shape[-1]
    centre = size // 2
    padded_shape = tuple(scipy.fft.next_fast_len(length + size, real=True) for length in (height, width))
    padded = torch.zeros(padded_shape)
    padded[centre : centre + height, centre : centre + width] = torch.from_numpy(image)
    image_spectrum = torch.fft.rfft2(padded)
    maps = torch.empty((len(basis), height * width))
    for start in range(0, len(basis), _BATCH):
        spectra = torch.fft.rfft2(basis[start : start + _BATCH], s=padded_shape)
        batch = torch.fft.irfft2(image_spectrum * spectra.conj(), s=padded_shape)[:, :height, :width]
        maps[start : start + _BATCH] = batch.reshape(len(batch), -1)
    return maps


def local_normalised_correlation(image: np.ndarray, templates: torch.Tensor) -> np.ndarray:
    """Pearson correlation of every template-sized window of ``image`` (h, w) with the
    best-matching template (n, T, T; zero-mean, unit-norm, as :func:`make_templates` makes
    them), in [-1, 1]; float32 (h - T + 1, w - T + 1), one value per window lying wholly
    inside the image, window (i, j) centred on image pixel (i + T//2, j + T//2).

    Unlike :func:`correlation_map` this is not standardised per image, so it compares
    images on an absolute scale: how much of a window looks like a projection of the
    reference. Computed on the templates' low-rank basis (the rebuilt templates hold
    :data:`TEMPLATE_ENERGY` of their norm, so values can fall a little short of 1).
    """
    height, width = image.shape
    size = templates.shape[-1]
    if height < size or width < size:
        raise ValueError(f"image {image.shape} is smaller than the {size} px templates")
    basis, coefficients = _basis(templates)
    coefficients = coefficients[_distinct(coefficients)]
    maps = _basis_correlations(np.asarray(image, dtype=np.float32), basis).reshape(len(basis), height, width)
    centre = size // 2
    valid = (slice(centre, centre + height - size + 1), slice(centre, centre + width - size + 1))
    maps = maps[:, valid[0], valid[1]].reshape(len(basis), -1)
    # Sum of squared deviations from the window mean, by summed-area tables of image and image^2.
    image64 = torch.from_numpy(np.asarray(image, dtype=np.float64))
    window_sum, window_square_sum = (
        torch.nn.functional.avg_pool2d(values[None, None], size, stride=1)[0, 0] * size**2
        for values in (image64, image64**2)
    )
    deviation = (window_square_sum - window_sum**2 / size**2).clamp_min(0).sqrt().reshape(-1)
    best = torch.cat([(coefficients @ maps[:, start : start + _PIXELS]).amax(dim=0)
                      for start in range(0, maps.shape[1], _PIXELS)])
    correlation = best.double() / deviation.clamp_min(torch.finfo(torch.float32).tiny)
    return correlation.reshape(height - size + 1, width - size + 1).float().numpy()


def _coarse_matching_problem(
    image: np.ndarray, pixel_size_a: float, diameter_a: float, reference_volume: np.ndarray, ctf: CtfParams | None,
    angular_step_deg: float,
) -> tuple[np.ndarray, torch.Tensor, int]:
    """The binned, background-flattened and standardised image, its templates and the binning factor."""
    check_arguments(image, pixel_size_a, diameter_a)
    if reference_volume.ndim != 3 or len(set(reference_volume.shape)) != 1:
        raise ValueError(f"reference_volume must be a cube, got shape {reference_volume.shape}")
    diameter_px = diameter_a / pixel_size_a
    factor = binning_factor(diameter_px, TEMPLATE_TARGET_DIAMETER_PX)
    coarse = robust_standardise(flatten_background(bin_image(image, factor), diameter_px / factor))
    box_px = 2 * math.ceil(TEMPLATE_BOX_DIAMETERS * diameter_px / factor / 2)
    templates = make_templates(
        bin_volume(reference_volume, factor), pixel_size_a * factor, orientation_grid(angular_step_deg), ctf, box_px
    )
    return coarse, templates, factor


def reference_correlation(
    image: np.ndarray,
    pixel_size_a: float,
    diameter_a: float,
    reference_volume: np.ndarray,
    ctf: CtfParams | None,
    *,
    angular_step_deg: float = DEFAULT_ANGULAR_STEP_DEG,
) -> np.ndarray:
    """How much each region of ``image`` looks like a projection of the reference.

    :func:`local_normalised_correlation` of the image, prepared as :func:`pick_template`
    prepares it (binned, background flattened), with the same templates; float32 values
    in [-1, 1] on the binned grid, windows inside the image only. On a micrograph
    without particles, a denoiser that paints the reference into noise raises it.
    """
    coarse, templates, _ = _coarse_matching_problem(image, pixel_size_a, diameter_a, reference_volume, ctf,
                                                    angular_step_deg)
    return local_normalised_correlation(coarse, templates)


def pick_template(
    image: np.ndarray,
    pixel_size_a: float,
    diameter_a: float,
    reference_volume: np.ndarray,
    ctf: CtfParams | None,
    *,
    angular_step_deg: float = DEFAULT_ANGULAR_STEP_DEG,
    max_picks: int | None = None,
    threshold: float | None = None,
) -> ParticleCoordinates:
    """Pick particles of ``diameter_a`` Angstrom by matching projections of a reference.

    Parameters
    ----------
    image:
        (H, W) micrograph, particles darker than the background (as recorded).
    pixel_size_a:
        Angstrom per pixel of ``image`` and of ``reference_volume`` (> 0).
    diameter_a:
        Particle diameter, Angstrom (> 0): sets the binning, the suppression radius and
        the border left out, as in :func:`~cryoscore.pick.blob.pick_blobs`.
    reference_volume:
        (D, D, D) potential or density, any positive-contrast units, particle centre at
        voxel D//2 (e.g. :func:`cryoscore.simulate.volume.load_specimen`'s ``volume_v``).
    ctf:
        The micrograph's CTF, or None for a phase-flipped micrograph (see :func:`make_templates`).
    angular_step_deg:
        Step of the orientation grid, degrees (:func:`orientation_grid`).
    max_picks, threshold:
        As for :func:`~cryoscore.pick.blob.pick_blobs`; scores are robust noise standard
        deviations of the maximum-over-orientations correlation map.

    Returns
    -------
    ParticleCoordinates in pixels of ``image`` with ``figure_of_merit``, best first.
    """
    coarse, templates, factor = _coarse_matching_problem(image, pixel_size_a, diameter_a, reference_volume, ctf,
                                                         angular_step_deg)
    scores = robust_standardise(correlation_map(coarse, templates))
    return find_peaks(scores, factor, image.shape, diameter_a / pixel_size_a / 2, threshold=threshold,
                      max_picks=max_picks)
