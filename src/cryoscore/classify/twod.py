"""Reference-free 2D classification of particle images by expectation maximisation.

Particles (N, B, B), normalised to unit background noise with protein positive, are first
CTF-corrected by phase flipping (each Fourier component multiplied by the sign of its
particle's CTF) when the CTFs are known, and masked to a soft disc of the particle's radius.
The class averages start as the averages of a random partition of the particles, each turned
by a random angle (round blobs: nothing is imposed but the particle's size). Every iteration
(maximum likelihood under white Gaussian noise, as in RELION's 2D classification):

1. **expectation**: for every particle, class, in-plane angle (``angles`` of them) and shift
   up to ``max_shift_px`` (all shifts at once by FFT cross-correlation with the rotated
   averages, low-passed to ``alignment_resolution_a``), the log-likelihood
   ``<particle, average> - |average|^2 / 2`` plus the class's log prior, normalised into a
   posterior probability over all hypotheses;
2. **maximisation**: each class average is the posterior-weighted sum of the particles brought
   into register under every hypothesis (shifted back, turned back), re-centred on its
   centre of mass; the class priors are the classes' shares of the weight.

Hard assignment (k-means: each particle counted once at its best hypothesis) was tried first;
on the real EMPIAR-10146 particles, whose single images are far below the noise, it aligned
noise to noise and its averages showed nothing of the particle, while the unaligned average
shows the apoferritin shell. Weighting every hypothesis by its probability does not: where
the data cannot tell the angle, the average is averaged over angles.

The result carries each particle's most probable class, angle and shift with its
probability, the class averages, and per class a **gold-standard resolution**, as RELION's 3D
refinement measures one: the particles are split into two halves (alternate particles), each
half is classified on its own for ``half_iterations`` more iterations starting from the final
averages low-passed to :data:`HALF_SET_START_A` (so the halves' classes correspond and share
nothing finer), and the class's resolution is where the Fourier ring correlation of its two
half averages falls below 0.143. Agreement finer than the start resolution comes from the
data alone, or from the mask: a junk class's smooth average cut by the disc mask's edge
correlates at every frequency, so the FRC beyond the start resolution is corrected by the FRC of
the halves with their phases randomised there (RELION's correction,
:func:`~cryoscore.reconstruct.fsc.phase_randomised_fsc`). (The first version weighted both
halves by the same final averages in one expectation step; every class, junk included, then
reached Nyquist on real apoferritin.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch_fourier_shift import fourier_shift_image_2d

from cryoscore.fourier import radial_frequency
from cryoscore.reconstruct.ctf import ctf_stack
from cryoscore.reconstruct.fsc import HALF_MAP_THRESHOLD, phase_randomised_fsc
from cryoscore.reconstruct.grid import centred_rfft2, soft_sphere_mask
from cryoscore.simulate.ctf import CtfParams

HALF_SET_START_A = 30.0
"""The halves of the gold-standard resolution start from the class averages low-passed to this (A)."""


@dataclass(frozen=True)
class Classification2DSettings:
    """``classes``: K; ``iterations``; ``angles``: in-plane rotations tried (360 / angles
    degrees apart); ``max_shift_over_diameter``: largest shift searched; ``alignment_resolution_a``:
    the averages are low-passed to this for alignment; ``half_iterations``: iterations of each
    half on its own for the gold-standard resolution; ``batch``: particles aligned at once
    (memory: batch x classes x angles x B^2 floats); ``seed``: the initial partition."""

    classes: int = 10
    iterations: int = 12
    half_iterations: int = 4
    angles: int = 36
    max_shift_over_diameter: float = 0.1
    alignment_resolution_a: float = 10.0
    batch: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if (min(self.classes, self.iterations, self.half_iterations, self.angles, self.batch) < 1
                or self.seed < 0):
            raise ValueError(f"classes, iterations, angles and batch must be >= 1 and the seed >= 0; got {self}")
        if not 0 <= self.max_shift_over_diameter < 0.5 or not self.alignment_resolution_a > 0:
            raise ValueError("the shift range must be in [0, 0.5) diameters and the alignment resolution > 0 A")


@dataclass(frozen=True, eq=False)
class Classification2D:
    """``averages`` float32 (K, B, B); per particle (N,), its most probable hypothesis: ``classes``
    (0-based), ``angles_deg`` (the class average's in-plane rotation onto the particle),
    ``shifts_yx_px`` (N, 2) (the particle's centre offset), ``scores`` (that hypothesis's
    posterior probability); per class:
    ``counts`` (K,) and ``resolution_a`` (K,), the gold-standard FRC 0.143 of the averages of
    two independently refined halves (inf where a half holds no weight in the class or the
    FRC never reaches 0.143); ``pixel_size_a`` of the boxes."""

    averages: np.ndarray
    classes: np.ndarray
    angles_deg: np.ndarray
    shifts_yx_px: np.ndarray
    scores: np.ndarray
    counts: np.ndarray
    resolution_a: np.ndarray
    pixel_size_a: float


def apply_transfer(images: torch.Tensor, transfer: torch.Tensor) -> torch.Tensor:
    """Images (N, B, B) centred at pixel (B//2, B//2) multiplied in Fourier space by ``transfer``
    on the unshifted rfft grid ((N or 1, B, B//2+1), e.g. from ``ctf_stack``); still centred."""
    box = images.shape[-1]
    return torch.fft.fftshift(torch.fft.irfft2(centred_rfft2(images) * transfer, s=(box, box)), dim=(-2, -1))


def phase_flip(particles: torch.Tensor, ctfs: Sequence[CtfParams], pixel_size_a: float) -> torch.Tensor:
    """Particles (N, B, B) with every Fourier component multiplied by the sign of its CTF."""
    return apply_transfer(particles, torch.sign(ctf_stack(ctfs, particles.shape[-1], pixel_size_a)))


def particle_mask(box: int, radius_px: float) -> torch.Tensor:
    """The soft disc (B, B) that classification and matching look through: 1.1 particle radii
    (at most 2 px inside the box edge), an edge of 0.1 radius (at least 1 px)."""
    return soft_sphere_mask(box, 2, min(radius_px * 1.1, box / 2 - 2), max(0.1 * radius_px, 1.0))


def shift_window(box: int, max_shift_px: float) -> torch.Tensor:
    """Bool (B, B) on the unshifted (wrapped) grid of an FFT cross-correlation: the shifts of at
    most ``max_shift_px`` pixels."""
    axis = torch.arange(box) - box // 2
    return torch.fft.ifftshift((axis[:, None] ** 2 + axis[None, :] ** 2) <= max_shift_px**2, dim=(-2, -1))


def rotate_images(images: torch.Tensor, angles_deg: torch.Tensor) -> torch.Tensor:
    """Each image (n, B, B) rotated by its angle (n,) about pixel (B//2, B//2), bilinear, zeros outside."""
    box = images.shape[-1]
    theta = torch.deg2rad(angles_deg.to(torch.float32))
    cos, sin = torch.cos(theta), torch.sin(theta)
    # affine_grid works in [-1, 1] coordinates about the array centre; the box centre is B//2,
    # half a pixel off the array centre for even B: shift there, rotate, shift back.
    offset = (box // 2 - (box - 1) / 2) * 2 / box
    matrix = torch.zeros(len(images), 2, 3)
    matrix[:, 0, 0], matrix[:, 0, 1], matrix[:, 1, 0], matrix[:, 1, 1] = cos, -sin, sin, cos
    matrix[:, 0, 2] = offset - (cos * offset - sin * offset)
    matrix[:, 1, 2] = offset - (sin * offset + cos * offset)
    grid = F.affine_grid(matrix, [len(images), 1, box, box], align_corners=False)
    return F.grid_sample(images[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]


def gaussian_lowpass(images: torch.Tensor, pixel_size_a: float, resolution_a: float) -> torch.Tensor:
    box = images.shape[-1]
    k = radial_frequency((box, box), pixel_size_a, backend="torch")
    return torch.fft.irfft2(torch.fft.rfft2(images) * torch.exp(-(k * resolution_a) ** 2 * 2), s=(box, box))


def _recentre(average: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``average`` shifted so the centre of mass of its positive density inside ``mask`` is at B//2."""
    box = average.shape[-1]
    weight = (average * mask).clamp_min(0)
    if weight.sum() <= 0:
        return average
    axis = torch.arange(box, dtype=torch.float32) - box // 2
    centre = torch.stack([(weight.sum(1) * axis).sum(), (weight.sum(0) * axis).sum()]) / weight.sum()
    return fourier_shift_image_2d(average[None], -centre[None])[0]


def _expectation(particles: torch.Tensor, references: torch.Tensor, log_priors: torch.Tensor, angles: torch.Tensor,
                 shift_mask: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
    """One expectation step against ``references`` (K, B, B), and the sums of the maximisation step.

    Returns the class sums (K, B, B) of every particle brought into register under every
    hypothesis (angle, shift) weighted by its posterior probability, the class weights (K,),
    and per particle the most probable hypothesis: (class, angle index, shift (row, col),
    its probability). Particles are in units of their background noise (variance 1).
    """
    n_classes, box = references.shape[0], references.shape[-1]
    n_angles = len(angles)
    rotated = rotate_images(references.repeat_interleave(n_angles, dim=0), angles.repeat(n_classes))
    conjugate = torch.conj(centred_rfft2(rotated))
    half_norms = 0.5 * rotated.flatten(1).pow(2).sum(dim=1)
    template_priors = log_priors.repeat_interleave(n_angles) - math.log(n_angles)
    sums = torch.zeros(n_classes * n_angles, box, box // 2 + 1, dtype=torch.complex64)
    best_parts = []
    for start in range(0, len(particles), batch):
        spectra = centred_rfft2(particles[start:start + batch])
        # Both centred at the origin: the correlation at s scores "particle = template moved by s".
        correlation = torch.fft.irfft2(spectra[:, None] * conjugate[None], s=(box, box))
        log_weights = correlation - half_norms[None, :, None, None] + template_priors[None, :, None, None]
        log_weights = torch.where(shift_mask, log_weights, torch.tensor(-math.inf))
        log_weights = log_weights - torch.logsumexp(log_weights.flatten(1), dim=1)[:, None, None, None]
        weights = torch.exp(log_weights)
        # sum_s w(s) p(x + s) is the correlation of the particle with its weights over shifts.
        sums += (spectra[:, None] * torch.conj(torch.fft.rfft2(weights))).sum(dim=0)
        best, flat = log_weights.flatten(1).max(dim=1)
        template, pixel = flat // (box * box), flat % (box * box)
        row, col = pixel // box, pixel % box
        shifts = torch.stack([(row + box // 2) % box - box // 2, (col + box // 2) % box - box // 2], dim=1)
        best_parts.append((template // n_angles, template % n_angles, shifts.to(torch.float32), torch.exp(best),
                           weights.sum(dim=(-2, -1))))
    classes, angle_index, shifts, probability, template_weights = (torch.cat(parts) for parts in zip(*best_parts))
    in_template_frame = torch.fft.fftshift(torch.fft.irfft2(sums, s=(box, box)), dim=(-2, -1))
    turned_back = rotate_images(in_template_frame, -angles.repeat(n_classes))
    class_sums = turned_back.reshape(n_classes, n_angles, box, box).sum(dim=1)
    class_weights = template_weights.sum(dim=0).reshape(n_classes, n_angles).sum(dim=1)
    return class_sums, class_weights, (classes, angle_index, shifts, probability)


def _averages(particles: torch.Tensor, classes: torch.Tensor, angles_deg: torch.Tensor, shifts: torch.Tensor,
              n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class sums of the particles brought into register, and the counts (K,)."""
    aligned = rotate_images(fourier_shift_image_2d(particles, -shifts), -angles_deg)
    sums = torch.zeros(n_classes, *particles.shape[1:]).index_add_(0, classes, aligned)
    counts = torch.bincount(classes, minlength=n_classes)
    return sums, counts


@dataclass(frozen=True)
class _Alignment:
    """What every EM iteration of one classification needs besides the particles: the particle
    ``mask`` (B, B), the ``shift_mask`` of allowed shifts (B, B, wrapped) and the ``angles`` tried."""

    mask: torch.Tensor
    shift_mask: torch.Tensor
    angles: torch.Tensor
    pixel_size_a: float
    settings: Classification2DSettings


def _refine(images: torch.Tensor, averages: torch.Tensor, log_priors: torch.Tensor, iterations: int,
            alignment: _Alignment, progress: Callable[[int, np.ndarray], None] | None = None):
    """``iterations`` EM iterations from ``averages`` (K, B, B); returns the last expectation's class
    sums and weights, the most probable hypotheses, and the re-centred averages and log priors."""
    settings, mask = alignment.settings, alignment.mask
    for iteration in range(iterations):
        references = gaussian_lowpass(averages, alignment.pixel_size_a, settings.alignment_resolution_a) * mask
        sums, weights, best = _expectation(images, references, log_priors, alignment.angles, alignment.shift_mask,
                                           settings.batch)
        averages = torch.stack([_recentre(total / max(float(weight), 1e-6), mask) for total, weight in zip(sums, weights)])
        log_priors = torch.log((weights / weights.sum()).clamp_min(1e-6))
        if progress is not None:
            progress(iteration + 1, torch.bincount(best[0], minlength=len(averages)).numpy())
    return sums, weights, best, averages, log_priors


def _gold_standard_resolution(images: torch.Tensor, averages: torch.Tensor, log_priors: torch.Tensor,
                              alignment: _Alignment) -> list[float]:
    """Per class, the FRC 0.143 resolution (A) of the averages of two halves of ``images``
    (alternate particles), each refined on its own from ``averages`` low-passed to
    :data:`HALF_SET_START_A`; the FRC beyond that corrected for the mask by phase randomisation."""
    start = gaussian_lowpass(averages, alignment.pixel_size_a, HALF_SET_START_A)
    halves = [_refine(images[part], start, log_priors, alignment.settings.half_iterations, alignment)[:2]
              for part in (torch.arange(0, len(images), 2), torch.arange(1, len(images), 2))]
    resolution = []
    for index in range(len(averages)):
        weights = [float(half_weights[index]) for _, half_weights in halves]
        if min(weights) < 1:
            resolution.append(math.inf)
            continue
        first, second = (half_sums[index] / weight for (half_sums, _), weight in zip(halves, weights))
        curve = phase_randomised_fsc(first, second, alignment.pixel_size_a, alignment.mask, HALF_SET_START_A)
        resolution.append(curve.resolution_a(HALF_MAP_THRESHOLD))
    return resolution


def classify_2d(particles: torch.Tensor, pixel_size_a: float, diameter_a: float,
                settings: Classification2DSettings = Classification2DSettings(), *,
                ctfs: Sequence[CtfParams] | None = None,
                progress: Callable[[int, np.ndarray], None] | None = None) -> Classification2D:
    """Classify ``particles`` (N, B, B; protein positive) at ``pixel_size_a`` (see the module docstring).

    ``ctfs``: one CtfParams per particle for phase flipping (None: no CTF correction);
    ``progress(iteration, counts)`` is called after each iteration. Raises ValueError for
    fewer particles than classes.
    """
    if len(particles) < settings.classes:
        raise ValueError(f"{len(particles)} particles cannot fill {settings.classes} classes")
    images = particles.to(torch.float32).contiguous()
    if ctfs is not None:
        images = phase_flip(images, ctfs, pixel_size_a)
    box = images.shape[-1]
    radius_px = diameter_a / pixel_size_a / 2
    mask = particle_mask(box, radius_px)
    images = images * mask
    wrapped = shift_window(box, settings.max_shift_over_diameter * 2 * radius_px)
    angles = torch.arange(settings.angles, dtype=torch.float32) * (360.0 / settings.angles)
    alignment = _Alignment(mask, wrapped, angles, pixel_size_a, settings)

    generator = torch.Generator().manual_seed(settings.seed)
    n_classes = settings.classes
    classes = torch.randperm(len(images), generator=generator) % n_classes
    sums, counts = _averages(images, classes, torch.rand(len(images), generator=generator) * 360.0,
                             torch.zeros(len(images), 2), n_classes)
    averages = torch.stack([_recentre(total / max(int(count), 1), mask) for total, count in zip(sums, counts)])
    log_priors = torch.full((n_classes,), -math.log(n_classes))
    sums, weights, best, recentred, log_priors = _refine(images, averages, log_priors, settings.iterations, alignment,
                                                         progress)
    classes, angle_index, shifts, probability = best
    averages = sums / weights.clamp_min(1e-6)[:, None, None]
    resolution = _gold_standard_resolution(images, recentred, log_priors, alignment)
    counts = torch.bincount(classes, minlength=n_classes)
    return Classification2D(averages.numpy().astype(np.float32), classes.numpy(), angles[angle_index].numpy(),
                            shifts.numpy(), probability.numpy(), counts.numpy(), np.array(resolution), pixel_size_a)
