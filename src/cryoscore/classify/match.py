"""Do 2D class averages look like the particle? Each class average against projections of a
density of the specimen (``cryoscore classify2d --template``, and the bench's class judge).

The density must be independent of anything a denoiser was guided by (another map or model of
the specimen), or the judge would favour the guided denoiser. The projections go through the
transfer the averages went through: the modulus of the particles' CTFs when they were
phase-flipped, and otherwise the CTF itself at each defocus of :data:`DEFOCUS_SEARCH_UM` (the
best counts): on the real EMPIAR-10146 particles, averaged without CTF correction, the
low-frequency loss makes the shell a ring with a dark centre, which matched bare projections
only 0.16-0.19. Class averages and projections are low-passed to ``resolution_a``, masked to
the particle's disc and normalised to zero mean and unit norm inside it. A class's *template match* is the largest
Pearson correlation over the projections (``directions`` of them, spread evenly over the whole
sphere, so mirror views are included), the in-plane angles and shifts up to a tenth of the
diameter. A class is *particle-like* when its match reaches :data:`PARTICLE_LIKE_MATCH`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from cryoscore.classify.twod import (
    Classification2D,
    apply_transfer,
    gaussian_lowpass,
    particle_mask,
    rotate_images,
    shift_window,
)
from cryoscore.reconstruct.ctf import ctf_stack
from cryoscore.reconstruct.grid import resample_volume
from cryoscore.simulate.ctf import CtfParams
from cryoscore.simulate.project import project_potential
from cryoscore.simulate.volume import load_specimen

PARTICLE_LIKE_MATCH = 0.5
"""A class average whose template match reaches this is counted as the particle. Measured
against a featureless shell of apoferritin's diameters: noisy views of apoferritin through a
2.2 um CTF match 0.80-0.90 (tests/test_classify_match.py), views of a 60 A particle -0.21-0.0,
white noise 0.12-0.33; on the real EMPIAR-10146 set, uncorrected class averages of the
annotated particles 0.63-0.65 and of background boxes (a diameter from any particle) -0.32 to
-0.27. A blob can still match the end-on view of an elongated template: shape at this
resolution cannot tell them apart."""

MATCH_RESOLUTION_A = 25.0
"""Default low-pass of the comparison, Angstrom."""

DEFOCUS_SEARCH_UM = tuple(float(value) for value in np.arange(0.5, 3.51, 0.25))
"""Defoci tried for averages that were not CTF-corrected, micrometres (300 kV, Cs 2.7 mm)."""


def transfer_hypotheses(ctfs: Sequence[CtfParams] | None) -> tuple[list[CtfParams], bool]:
    """The CTFs to try on the projections and whether to take their modulus: with the particles'
    ``ctfs`` (phase-flipped averages), one isotropic CTF per distinct mean defocus (to 0.25
    um), modulus; without, :data:`DEFOCUS_SEARCH_UM`, signed."""
    if ctfs is None:
        return [CtfParams(defocus, defocus) for defocus in DEFOCUS_SEARCH_UM], False
    distinct = {(round((ctf.defocus_u_um + ctf.defocus_v_um) * 2) / 4, ctf.voltage_kv, ctf.cs_mm, ctf.amplitude_contrast)
                for ctf in ctfs}
    return [CtfParams(max(defocus, 0.05), max(defocus, 0.05), voltage_kv=voltage, cs_mm=cs, amplitude_contrast=amplitude)
            for defocus, voltage, cs, amplitude in sorted(distinct)], True


def _transferred(images: torch.Tensor, ctf: CtfParams, pixel_size_a: float, modulus: bool) -> torch.Tensor:
    """Images (n, B, B) centred at B//2 multiplied by ``ctf`` (or its modulus) in Fourier space."""
    transfer = ctf_stack([ctf], images.shape[-1], pixel_size_a)
    return apply_transfer(images, transfer.abs() if modulus else transfer)


def projection_directions(n: int) -> np.ndarray:
    """``n`` viewing directions spread evenly over the sphere (Fibonacci lattice), as RELION
    Euler angles (n, 3) in degrees (rot = azimuth, tilt = polar angle, psi = 0)."""
    index = np.arange(n) + 0.5
    tilt = np.degrees(np.arccos(1 - 2 * index / n))
    rot = np.degrees(np.pi * (1 + 5**0.5) * index) % 360.0
    return np.stack([rot, tilt, np.zeros(n)], axis=1)


def template_projections(template: str, box_px: int, pixel_size_a: float, directions: int = 100) -> torch.Tensor:
    """Projections (directions, B, B) of the density ``template`` (a specimen as
    :func:`~cryoscore.simulate.volume.load_specimen` takes it) on the class averages' grid
    (``box_px`` pixels of ``pixel_size_a`` A), centred at pixel (B//2, B//2)."""
    specimen = load_specimen(template, pixel_size_a)
    volume = resample_volume(specimen.volume_v, specimen.pixel_size_a, box_px, pixel_size_a, source=template)
    return project_potential(volume, projection_directions(directions), pixel_size_a)


def _normalised(images: torch.Tensor, mask: torch.Tensor, pixel_size_a: float, resolution_a: float) -> torch.Tensor:
    """Images (n, B, B) low-passed, masked, zero mean and unit norm inside ``mask``."""
    images = gaussian_lowpass(images, pixel_size_a, resolution_a)
    mean = (images * mask).sum(dim=(-2, -1), keepdim=True) / mask.sum()
    images = (images - mean) * mask
    return images / images.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]


def template_matches(averages: np.ndarray, projections: torch.Tensor, pixel_size_a: float, diameter_a: float,
                     ctfs: Sequence[CtfParams] | None = None, resolution_a: float = MATCH_RESOLUTION_A,
                     angles: int = 36) -> np.ndarray:
    """Each class average's template match (K,), float64 in [-1, 1]: the largest Pearson
    correlation with any of ``projections`` (M, B, B), each through every transfer of
    :func:`transfer_hypotheses` (``ctfs``: the particles' CTFs if they were phase-flipped), at
    ``angles`` in-plane rotations and shifts up to 0.1 diameter (see the module docstring)."""
    averages_t = torch.as_tensor(np.asarray(averages, dtype=np.float32))
    box = averages_t.shape[-1]
    if projections.shape[-1] != box:
        raise ValueError(f"projections of {projections.shape[-1]} px do not match class averages of {box} px")
    radius_px = diameter_a / pixel_size_a / 2
    mask = particle_mask(box, radius_px)
    turns = torch.arange(angles, dtype=torch.float32) * (360.0 / angles)
    rotated = rotate_images(projections.to(torch.float32).repeat_interleave(angles, dim=0), turns.repeat(len(projections)))
    allowed = shift_window(box, 0.1 * diameter_a / pixel_size_a)
    spectra = torch.fft.rfft2(_normalised(averages_t, mask, pixel_size_a, resolution_a))
    usable = torch.isfinite(spectra).all(dim=(-2, -1)) & (spectra.abs().amax(dim=(-2, -1)) > 0)
    matches = torch.full((len(averages_t),), -math.inf, dtype=torch.float64)
    transfers, modulus = transfer_hypotheses(ctfs)
    for ctf in transfers:
        references = torch.conj(torch.fft.rfft2(_normalised(_transferred(rotated, ctf, pixel_size_a, modulus), mask,
                                                            pixel_size_a, resolution_a)))
        for index in torch.nonzero(usable)[:, 0].tolist():
            correlation = torch.fft.irfft2(spectra[index][None] * references, s=(box, box))
            matches[index] = max(float(matches[index]), float(correlation[:, allowed].max()))
    return matches.numpy()


def judge_classes(result: Classification2D, template: str, projections: torch.Tensor, diameter_a: float,
                  ctfs: Sequence[CtfParams] | None = None, resolution_a: float = MATCH_RESOLUTION_A) -> dict[str, Any]:
    """How much of a classification looks like the particle, JSON-ready: the density
    ``template`` (its ``projections`` on the averages' grid, :func:`template_projections`;
    ``ctfs``: the particles' CTFs if they were phase-flipped, :func:`template_matches`); per class its ``template_match`` and whether it is ``particle_like``;
    ``particle_like_fraction``, the share of the particles (by most probable class) in
    particle-like classes; and ``particle_like_resolution_a``, the particle-weighted mean
    gold-standard resolution of the particle-like classes that have one (None if none has)."""
    matches = template_matches(result.averages, projections, result.pixel_size_a, diameter_a, ctfs, resolution_a)
    particle_like = matches >= PARTICLE_LIKE_MATCH
    counts = np.asarray(result.counts, dtype=np.float64)
    resolved = particle_like & np.isfinite(result.resolution_a) & (counts > 0)
    return {
        "template": template,
        "match_resolution_a": resolution_a,
        "ctf": "phase-flipped" if ctfs is not None else "defocus searched",
        "template_match": [round(float(value), 4) for value in matches],
        "particle_like": [bool(value) for value in particle_like],
        "particle_like_fraction": float(counts[particle_like].sum() / max(counts.sum(), 1.0)),
        "particle_like_resolution_a": (float(np.average(result.resolution_a[resolved], weights=counts[resolved]))
                                       if resolved.any() else None),
    }
