"""Particle boxes cut from a raw micrograph, normalised as RELION does.

A box of ``box_px`` pixels is cut about the nearest pixel to each centre; the sub-pixel
remainder is removed by a Fourier shift, so the particle centre lands on pixel
(box//2, box//2). Boxes that reach past the micrograph edge are kept when the centre lies
on the micrograph: the missing pixels are filled with the mean of the box's pixels on the
micrograph (the local mean). Each box is then normalised on its background, the pixels
outside a circle of ``background_radius_px``: a plane fitted to them is subtracted (the
local ice gradient) and the box is divided by their standard deviation. The contrast is
inverted so that protein, dark in the micrograph, is positive.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch_fourier_rescale import fourier_rescale_2d
from torch_fourier_shift import fourier_shift_image_2d

from cryoscore.errors import InputError
from cryoscore.io.coords import ParticleCoordinates, picks_for_micrographs
from cryoscore.io.ctf_star import micrograph_ctfs
from cryoscore.io.mrc import open_mrc_stack, read_mrc
from cryoscore.reconstruct.ctf import particle_ctfs
from cryoscore.simulate.ctf import CtfParams

#: Background radius as a fraction of the box edge when none is given (RELION: 75 % of
#: half the box).
DEFAULT_BACKGROUND_RADIUS_OVER_BOX = 0.375
#: Floor on the background standard deviation (in the micrograph's units) so that blank,
#: noise-free boxes are not divided by zero.
_MIN_BACKGROUND_STD = 1e-6


def extraction_box_px(diameter_px: float, box_over_diameter: float = 1.5) -> int:
    """Even box edge in pixels, at least ``box_over_diameter`` times the particle diameter."""
    if not (diameter_px > 0 and box_over_diameter >= 1):
        raise InputError(
            "diameter", f"need a positive diameter and box/diameter >= 1, got {diameter_px} px and {box_over_diameter}"
        )
    return 2 * math.ceil(box_over_diameter * diameter_px / 2)


def _background_planes(boxes: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """Least-squares planes ``a + b*y + c*x`` through each box's background pixels.

    ``boxes`` float64 (N, B*B), ``background`` bool (B, B); returns float64 (N, B*B).
    """
    box_px = background.shape[-1]
    axis = torch.arange(box_px, dtype=torch.float64) - box_px // 2
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    design = torch.stack([torch.ones_like(yy), yy, xx], dim=-1).reshape(-1, 3)
    selected = background.reshape(-1)
    coefficients = boxes[:, selected] @ torch.linalg.pinv(design[selected]).T  # (N, 3)
    return coefficients @ design.T


def normalise_particles(boxes: torch.Tensor, background_radius_px: float) -> torch.Tensor:
    """Boxes (N, B, B) minus their background plane, over the background std, contrast inverted.

    The background is the pixels farther than ``background_radius_px`` from the box centre.
    Returns float32 (N, B, B) with protein positive and background noise of unit std.
    """
    box_px = boxes.shape[-1]
    axis = torch.arange(box_px, dtype=torch.float32) - box_px // 2
    background = (axis[:, None] ** 2 + axis[None, :] ** 2) > background_radius_px**2
    if int(background.sum()) < 3:
        raise InputError(
            "background radius", f"{background_radius_px:.1f} px leaves no background in a {box_px} px box"
        )
    flat = boxes.reshape(len(boxes), -1).to(torch.float64)
    residual = flat - _background_planes(flat, background)
    std = residual[:, background.reshape(-1)].std(dim=1, keepdim=True).clamp_min(_MIN_BACKGROUND_STD)
    return (-residual / std).reshape(boxes.shape).to(torch.float32)


def extract_particles(
    micrograph: np.ndarray,
    centres_xy_px: np.ndarray,
    box_px: int,
    *,
    background_radius_px: float | None = None,
) -> tuple[torch.Tensor, np.ndarray]:
    """Cut, centre and normalise particle boxes from a raw micrograph (see the module notes).

    Parameters
    ----------
    micrograph:
        (H, W) raw micrograph (any units, e.g. electron counts), indexed [row, column].
    centres_xy_px:
        (N, 2) particle centres as (x = column, y = row) in pixels, first pixel's centre at 0
        (RELION rlnCoordinateX/Y).
    box_px:
        Even box edge in pixels, at most the micrograph's shorter side.
    background_radius_px:
        Radius outside which pixels are background, pixels; default 0.375 * box_px.

    Returns
    -------
    (particles, kept):
        float32 tensor (n_kept, box, box) of normalised particles with protein positive, and
        a bool (N,) array marking the centres that were kept (those on the micrograph).
    """
    micrograph = np.asarray(micrograph, dtype=np.float32)
    if micrograph.ndim != 2:
        raise InputError("micrograph", f"expected a 2D image, got shape {micrograph.shape}")
    if box_px < 4 or box_px % 2:
        raise InputError("box", f"the box must be an even number of pixels >= 4, got {box_px}")
    height, width = micrograph.shape
    if box_px > min(height, width):
        raise InputError("box", f"a {box_px} px box is larger than the {width}x{height} px micrograph")
    centres = np.asarray(centres_xy_px, dtype=np.float64).reshape(-1, 2)
    nearest_col, nearest_row = np.round(centres[:, 0]).astype(np.int64), np.round(centres[:, 1]).astype(np.int64)
    kept = (nearest_col >= 0) & (nearest_col < width) & (nearest_row >= 0) & (nearest_row < height)
    if not kept.any():
        return torch.zeros((0, box_px, box_px)), kept

    half = box_px // 2
    padded = np.pad(micrograph, half, constant_values=np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (box_px, box_px))
    boxes = windows[nearest_row[kept], nearest_col[kept]].copy()  # box pixel (half, half) = nearest pixel
    local_mean = np.nanmean(boxes, axis=(1, 2), keepdims=True)
    boxes = np.where(np.isnan(boxes), local_mean, boxes)

    radius = DEFAULT_BACKGROUND_RADIUS_OVER_BOX * box_px if background_radius_px is None else background_radius_px
    particles = normalise_particles(torch.from_numpy(boxes), radius)
    remainder_yx = np.stack([centres[kept, 1] - nearest_row[kept], centres[kept, 0] - nearest_col[kept]], axis=1)
    return fourier_shift_image_2d(particles, torch.from_numpy(-remainder_yx).to(torch.float32)), kept


def downsample_particles(particles: torch.Tensor, box_px: int) -> torch.Tensor:
    """Fourier-crop particles (N, B, B) to (N, box_px, box_px); the pixel size grows by B / box_px.

    Returns the input unchanged when ``box_px`` is not smaller than B.
    """
    if box_px >= particles.shape[-1]:
        return particles
    if len(particles) == 0:
        return torch.zeros((0, box_px, box_px), dtype=particles.dtype)
    return fourier_rescale_2d(particles, target_shape=(box_px, box_px))[0]


@dataclass(frozen=True, eq=False)
class ParticleStack:
    """Particles boxed from several micrographs.

    ``images``: float32 tensor (N, box, box), normalised, protein positive; ``ctfs``: each particle's
    CtfParams (None where the micrographs' CTFs are unknown); ``pixel_size_a``: of the boxes
    (the micrographs' times the extraction box over ``box``); ``micrograph_index`` and
    ``pick_index``: (N,) where each particle came from; ``n_picks``: all picks, on the
    micrographs or not.
    """

    images: torch.Tensor
    ctfs: list[CtfParams] | None
    pixel_size_a: float
    micrograph_index: np.ndarray
    pick_index: np.ndarray
    n_picks: int


def extract_picked_particles(
    micrographs: Sequence[np.ndarray | str | os.PathLike],
    picks: Sequence[ParticleCoordinates],
    ctfs: Sequence[CtfParams] | None,
    pixel_size_a: float,
    diameter_a: float,
    box_px: int,
    box_over_diameter: float = 1.5,
) -> ParticleStack:
    """Box every pick of every micrograph (arrays or MRC paths, read one at a time) at
    ``box_over_diameter`` times the diameter, normalised outside the particle (no nearer the
    centre than RELION's default), Fourier-cropped to ``box_px`` when larger. Per-particle
    defocus of the picks is used where they carry it (:func:`~cryoscore.reconstruct.ctf.particle_ctfs`).
    """
    extraction_box = extraction_box_px(diameter_a / pixel_size_a, box_over_diameter)
    box = min(box_px, extraction_box)
    background_radius_px = max(diameter_a / pixel_size_a / 2, DEFAULT_BACKGROUND_RADIUS_OVER_BOX * extraction_box)
    stacks, micrograph_index, pick_index = [], [], []
    particle_params: list[CtfParams] = []
    for index, (micrograph, coords) in enumerate(zip(micrographs, picks)):
        image = micrograph if isinstance(micrograph, np.ndarray) else read_mrc(micrograph)[0]
        centres = np.stack([coords.x_px, coords.y_px], axis=1)
        particles, kept = extract_particles(image, centres, extraction_box, background_radius_px=background_radius_px)
        stacks.append(downsample_particles(particles, box))
        if ctfs is not None:
            particle_params.extend(params for params, keep in zip(particle_ctfs(coords, ctfs[index]), kept) if keep)
        micrograph_index.append(np.full(int(kept.sum()), index))
        pick_index.append(np.nonzero(kept)[0])
    images = torch.cat(stacks) if stacks else torch.zeros((0, box, box))
    return ParticleStack(images, particle_params if ctfs is not None else None,
                         pixel_size_a * extraction_box / box,
                         np.concatenate(micrograph_index) if micrograph_index else np.zeros(0, dtype=int),
                         np.concatenate(pick_index) if pick_index else np.zeros(0, dtype=int),
                         sum(len(coords) for coords in picks))


@dataclass(frozen=True)
class PickedMicrographs:
    """Micrograph files with their picks (one set per file, in the same order), CTFs (None:
    unknown) and pixel size (Angstrom)."""

    paths: list[Path]
    picks: list[ParticleCoordinates]
    ctfs: list[CtfParams] | None
    pixel_size_a: float


def without_particle_defocus(picks: Sequence[ParticleCoordinates]) -> list[ParticleCoordinates]:
    """The picks without the per-particle defocus they may carry, so that a micrograph STAR
    file's CTFs apply to every particle."""
    return [dataclasses.replace(coordinates, defocus_u_a=None, defocus_v_a=None, defocus_angle_deg=None)
            for coordinates in picks]


def read_picked_micrographs(
    paths: Sequence[str | os.PathLike],
    picks_dir: str | os.PathLike,
    *,
    ctf_star: str | os.PathLike | None = None,
    pixel_size_a: float | None = None,
    threshold: float | None = None,
) -> PickedMicrographs:
    """What boxing real micrographs needs, read from files: the picks ``picks_dir/NAME.star`` (or
    .box/.csv) of each micrograph ``NAME.mrc``, those scoring at least ``threshold`` when given;
    the pixel size ``pixel_size_a`` or the first micrograph's MRC header; the CTFs of ``ctf_star``
    (a micrograph STAR file, matched by name), which then replace any per-particle defocus the
    picks carry, or None without it. InputError names a missing micrograph or pick file.
    """
    files = [Path(path) for path in paths]
    if not files:
        raise InputError("micrographs", "none given")
    for file in files:
        if not file.is_file():
            raise InputError(file, "micrograph not found")
    picks = picks_for_micrographs(files, picks_dir, threshold)
    with open_mrc_stack(files[0], pixel_size_a=pixel_size_a) as first:  # the header only
        pixel = first.pixel_size_a
    ctfs = None
    if ctf_star is not None:
        ctfs = micrograph_ctfs(ctf_star, [file.stem for file in files])
        picks = without_particle_defocus(picks)
    return PickedMicrographs(files, list(picks), ctfs, pixel)
