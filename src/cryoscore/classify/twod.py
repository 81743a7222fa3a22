"""Reference-free 2D classification of particle images: rotation- and shift-invariant k-means.

Particles (N, B, B), normalised with protein positive, are first CTF-corrected by phase
flipping (each Fourier component multiplied by the sign of its particle's CTF) when the
CTFs are known. Then, from K distinct random particles as the first references (an average
of randomly turned particles is a round blob, from which alignment does not recover), every
iteration:

1. **aligns** every particle to every class average at ``angles`` in-plane rotations (the
   averages are rotated, bilinearly) and every shift up to ``max_shift_px`` (cross-correlation
   over all shifts at once by FFT, the averages low-passed to ``alignment_resolution_a`` and
   normalised inside a soft disc of the particle's radius), and assigns it to the best
   class, angle and shift;
2. **averages** each class: its particles shifted back (Fourier shift) and rotated back,
   summed; an emptied class is re-seeded with the worst-fitting half of the largest class;
   each average is re-centred on its centre of mass, so classes do not wander off centre.

The result carries each particle's class, angle, shift and correlation, the class averages,
and per class a resolution from the Fourier ring correlation of the averages of its two
halves (particles alternately assigned, FRC 0.143). Both halves were aligned to the same
average, so even a class of junk gets a finite FRC resolution (noise aligned to a reference
correlates with it): compare classes by it, do not read it as a gold-standard resolution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch_fourier_shell_correlation import fsc

from cryoscore.reconstruct.ctf import ctf_stack
from cryoscore.reconstruct.fsc import HALF_MAP_THRESHOLD, FscCurve
from cryoscore.reconstruct.grid import centred_rfft2, soft_sphere_mask
from cryoscore.simulate.ctf import CtfParams
from cryoscore.simulate.project import fourier_shift


@dataclass(frozen=True)
class Classification2DSettings:
    """``classes``: K; ``iterations``; ``angles``: in-plane rotations tried (360 / angles
    degrees apart); ``max_shift_over_diameter``: largest shift searched; ``alignment_resolution_a``:
    the averages are low-passed to this for alignment; ``batch``: particles aligned at once
    (memory: batch x classes x angles x B^2 floats); ``seed``: the initial partition."""

    classes: int = 10
    iterations: int = 12
    angles: int = 36
    max_shift_over_diameter: float = 0.1
    alignment_resolution_a: float = 10.0
    batch: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if self.classes < 1 or self.iterations < 1 or self.angles < 1 or self.batch < 1 or self.seed < 0:
            raise ValueError(f"classes, iterations, angles and batch must be >= 1 and the seed >= 0; got {self}")
        if not 0 <= self.max_shift_over_diameter < 0.5 or not self.alignment_resolution_a > 0:
            raise ValueError("the shift range must be in [0, 0.5) diameters and the alignment resolution > 0 A")


@dataclass(frozen=True, eq=False)
class Classification2D:
    """``averages`` float32 (K, B, B); per particle (N,): ``classes`` (0-based), ``angles_deg``
    (the particle's in-plane rotation onto its class average), ``shifts_yx_px`` (N, 2) (the
    particle's centre offset), ``scores`` (normalised cross-correlation); per class:
    ``counts`` (K,) and ``resolution_a`` (K,) from the FRC of half-set averages (inf where
    a class has fewer than 2 particles); ``pixel_size_a`` of the boxes."""

    averages: np.ndarray
    classes: np.ndarray
    angles_deg: np.ndarray
    shifts_yx_px: np.ndarray
    scores: np.ndarray
    counts: np.ndarray
    resolution_a: np.ndarray
    pixel_size_a: float


def phase_flip(particles: torch.Tensor, ctfs: Sequence[CtfParams], pixel_size_a: float) -> torch.Tensor:
    """Particles (N, B, B) with every Fourier component multiplied by the sign of its CTF."""
    box = particles.shape[-1]
    signs = torch.sign(ctf_stack(ctfs, box, pixel_size_a))
    return torch.fft.fftshift(torch.fft.irfft2(centred_rfft2(particles) * signs, s=(box, box)), dim=(-2, -1))


def _rotate(images: torch.Tensor, angles_deg: torch.Tensor) -> torch.Tensor:
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


def _lowpass(images: torch.Tensor, pixel_size_a: float, resolution_a: float) -> torch.Tensor:
    box = images.shape[-1]
    k = torch.sqrt(torch.fft.fftfreq(box, d=pixel_size_a)[:, None] ** 2 + torch.fft.rfftfreq(box, d=pixel_size_a) ** 2)
    return torch.fft.irfft2(torch.fft.rfft2(images) * torch.exp(-(k * resolution_a) ** 2 * 2), s=(box, box))


def _recentre(average: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``average`` shifted so the centre of mass of its positive density inside ``mask`` is at B//2."""
    box = average.shape[-1]
    weight = (average * mask).clamp_min(0)
    if weight.sum() <= 0:
        return average
    axis = torch.arange(box, dtype=torch.float32) - box // 2
    centre = torch.stack([(weight.sum(1) * axis).sum(), (weight.sum(0) * axis).sum()]) / weight.sum()
    return fourier_shift(average[None], -centre[None])[0]


def _align(particles: torch.Tensor, references: torch.Tensor, angles: torch.Tensor, shift_mask: torch.Tensor,
           batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best (class, angle index, shift (row, col), score) of each particle against the references."""
    n_classes, box = references.shape[0], references.shape[-1]
    rotated = _rotate(references.repeat_interleave(len(angles), dim=0), angles.repeat(n_classes))
    rotated = rotated - rotated.mean(dim=(-2, -1), keepdim=True)
    rotated = rotated / rotated.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]
    conjugate = torch.conj(centred_rfft2(rotated))
    results = []
    for start in range(0, len(particles), batch):
        chunk = particles[start:start + batch]
        norms = chunk.flatten(1).norm(dim=1).clamp_min(1e-12)
        # Both centred at the origin: the correlation peaks at the particle's offset from the box centre.
        correlation = torch.fft.irfft2(centred_rfft2(chunk)[:, None] * conjugate[None], s=(box, box))
        correlation = torch.where(shift_mask, correlation, torch.tensor(-math.inf)) / norms[:, None, None, None]
        best, flat = correlation.flatten(1).max(dim=1)
        template, pixel = flat // (box * box), flat % (box * box)
        row, col = pixel // box, pixel % box
        shifts = torch.stack([(row + box // 2) % box - box // 2, (col + box // 2) % box - box // 2], dim=1)
        results.append((template // len(angles), template % len(angles), shifts.to(torch.float32), best))
    return tuple(torch.cat(parts) for parts in zip(*results))  # type: ignore[return-value]


def _averages(particles: torch.Tensor, classes: torch.Tensor, angles_deg: torch.Tensor, shifts: torch.Tensor,
              n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class sums of the particles brought into register, and the counts (K,)."""
    aligned = _rotate(fourier_shift(particles, -shifts), -angles_deg)
    sums = torch.zeros(n_classes, *particles.shape[1:]).index_add_(0, classes, aligned)
    counts = torch.bincount(classes, minlength=n_classes)
    return sums, counts


def classify_2d(particles: np.ndarray, pixel_size_a: float, diameter_a: float,
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
    images = torch.from_numpy(np.ascontiguousarray(particles, dtype=np.float32))
    if ctfs is not None:
        images = phase_flip(images, ctfs, pixel_size_a)
    box = images.shape[-1]
    radius_px = diameter_a / pixel_size_a / 2
    mask = soft_sphere_mask(box, 2, min(radius_px * 1.1, box / 2 - 2), max(0.1 * radius_px, 1.0))
    images = images * mask
    axis = torch.arange(box) - box // 2
    max_shift = settings.max_shift_over_diameter * 2 * radius_px
    wrapped = torch.fft.ifftshift((axis[:, None] ** 2 + axis[None, :] ** 2) <= max_shift**2, dim=(-2, -1))
    angles = torch.arange(settings.angles, dtype=torch.float32) * (360.0 / settings.angles)

    generator = torch.Generator().manual_seed(settings.seed)
    n_classes = settings.classes
    seeds = torch.randperm(len(images), generator=generator)[:n_classes]
    averages = torch.stack([_recentre(image, mask) for image in images[seeds]])
    for iteration in range(settings.iterations):
        references = _lowpass(averages, pixel_size_a, settings.alignment_resolution_a) * mask
        classes, angle_index, shifts, scores = _align(images, references, angles, wrapped, settings.batch)
        angle_deg = angles[angle_index]
        sums, counts = _averages(images, classes, angle_deg, shifts, n_classes)
        for empty in torch.nonzero(counts == 0).flatten().tolist():  # re-seed from the largest class's worst half
            members = torch.nonzero(classes == int(torch.argmax(counts))).flatten()
            worst = members[torch.argsort(scores[members])[: max(len(members) // 2, 1)]]
            classes[worst] = empty
            sums, counts = _averages(images, classes, angle_deg, shifts, n_classes)
        averages = torch.stack([_recentre(total / max(int(count), 1), mask) for total, count in zip(sums, counts)])
        if progress is not None:
            progress(iteration + 1, counts.numpy())
    averages = sums / counts.clamp_min(1)[:, None, None]
    resolution = []
    for index in range(n_classes):
        members = torch.nonzero(classes == index).flatten()
        if len(members) < 2:
            resolution.append(math.inf)
            continue
        halves = [_averages(images[part], torch.zeros(len(part), dtype=torch.long), angle_deg[part], shifts[part], 1)[0][0]
                  for part in (members[0::2], members[1::2])]
        curve = FscCurve(np.fft.rfftfreq(box, d=pixel_size_a), fsc(halves[0] * mask, halves[1] * mask).double().numpy())
        resolution.append(curve.resolution_a(HALF_MAP_THRESHOLD))
    return Classification2D(averages.numpy().astype(np.float32), classes.numpy(), angle_deg.numpy(),
                            shifts.numpy(), scores.numpy(), counts.numpy(), np.array(resolution), pixel_size_a)
