"""Movie frame alignment (motion correction) into the full sum and the even/odd half sums.

Frames are aligned with torch-motion-correction: each frame's displacement is measured by
cross-correlating overlapping patches (``patch_px``) with the mean of the other frames
(band-passed, sub-pixel, smoothed over time, outliers rejected), which gives a deformation
field on the patch grid; the field's mean over frames is removed, so the sums stay
registered to the movie's mean position (where particle coordinates of a simulated movie
are); every frame is resampled along the field and summed: all of them into the full sum,
the even-indexed (0, 2, ...) and the odd-indexed ones into the halves. A gain reference
multiplies every frame first.

:func:`align_movies` writes the dataset layout that ``cryoscore train`` reads
(``micrographs/``, ``even/``, ``odd/``, one ``NAME.mrc`` each) and each movie's per-frame
shifts as a RELION motion STAR file (``motion/NAME.star``).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import starfile
import torch
from torch_motion_correction import (
    DeformationField,
    FourierFilterConfig,
    PatchSamplingConfig,
    correct_motion,
    estimate_motion_cross_correlation_patches,
)

from cryoscore.errors import InputError
from cryoscore.io.atomic import atomic_path
from cryoscore.io.coords import stamp_star_version
from cryoscore.io.movie import open_movie
from cryoscore.io.mrc import read_mrc, write_mrc


@dataclass(frozen=True)
class AlignSettings:
    """``patch_px``: the side of the square patches whose shifts are measured (a movie smaller
    than a patch is one patch; 2 x 2 patches or more give local motion); ``overlap``: of
    neighbouring patches; ``bfactor_a2`` and ``resolution_range_a`` (low, high): the band
    the cross-correlation uses, Angstrom."""

    patch_px: int = 512
    overlap: float = 0.5
    bfactor_a2: float = 500.0
    resolution_range_a: tuple[float, float] = (300.0, 10.0)

    def __post_init__(self) -> None:
        if self.patch_px < 64 or not 0 <= self.overlap < 1 or self.bfactor_a2 < 0:
            raise ValueError(f"patches must be >= 64 px, overlap in [0, 1) and the B-factor >= 0; got {self}")
        low, high = self.resolution_range_a
        if not low > high > 0:
            raise ValueError(f"the resolution range must be low > high > 0 A, got {self.resolution_range_a}")


@dataclass(frozen=True)
class AlignedMovie:
    """The sums of one aligned movie, float32 (H, W), and ``shifts_px`` (n_frames, 2): each
    frame's mean displacement (row, column) in pixels relative to the mean over frames, as
    measured (the alignment moves the frame by minus this)."""

    full_sum: np.ndarray
    even: np.ndarray
    odd: np.ndarray
    shifts_px: np.ndarray


def align_frames(frames: np.ndarray, pixel_size_a: float, settings: AlignSettings = AlignSettings()) -> AlignedMovie:
    """Align a movie ``frames`` (n_frames, H, W) at ``pixel_size_a`` and sum it (see the module docstring)."""
    if frames.ndim != 3 or frames.shape[0] < 2:
        raise ValueError(f"need a stack of at least 2 frames, got shape {frames.shape}")
    movie = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))
    patch = (min(settings.patch_px, frames.shape[1]), min(settings.patch_px, frames.shape[2]))
    with warnings.catch_warnings():  # one patch: the library's outlier test takes a std over one value
        warnings.filterwarnings("ignore", message=r"std\(\): degrees of freedom")
        field, _ = estimate_motion_cross_correlation_patches(
            movie, pixel_spacing=pixel_size_a,
            patch_sampling=PatchSamplingConfig(patch_shape=patch, overlap=settings.overlap),
            fourier_filter=FourierFilterConfig(b_factor=settings.bfactor_a2, frequency_range=settings.resolution_range_a))
    centred = DeformationField(field.data - field.data.mean(dim=1, keepdim=True), grid_type=field.grid_type)
    aligned = correct_motion(movie, centred, pixel_spacing=pixel_size_a).numpy().astype(np.float64)
    even, odd = aligned[0::2].sum(axis=0), aligned[1::2].sum(axis=0)
    shifts_px = centred.data.mean(dim=(-2, -1)).T.numpy().astype(np.float64) / pixel_size_a
    return AlignedMovie((even + odd).astype(np.float32), even.astype(np.float32), odd.astype(np.float32), shifts_px)


def write_motion_star(path: str | os.PathLike, shifts_px: np.ndarray, movie: Path, shape: tuple[int, int],
                      pixel_size_a: float) -> None:
    """Per-frame shifts as RELION's motion correction writes them (atomically): a
    ``data_general`` block (image size, frame count, movie name, pixel size) and
    ``data_global_shift`` with rlnMicrographFrameNumber (from 1) and rlnMicrographShiftX/Y,
    the shift in pixels that brings each frame into register (minus its measured displacement)."""
    general = {"rlnImageSizeX": shape[1], "rlnImageSizeY": shape[0], "rlnImageSizeZ": len(shifts_px),
               "rlnMicrographMovieName": str(movie), "rlnMicrographOriginalPixelSize": pixel_size_a}
    shifts = pd.DataFrame({"rlnMicrographFrameNumber": np.arange(1, len(shifts_px) + 1),
                           "rlnMicrographShiftX": -shifts_px[:, 1], "rlnMicrographShiftY": -shifts_px[:, 0]})
    with atomic_path(Path(path)) as tmp:
        starfile.write({"general": general, "global_shift": shifts}, tmp, float_format="%.4f")
        stamp_star_version(tmp)


def align_movies(paths: Sequence[Path], output_dir: Path, settings: AlignSettings = AlignSettings(), *,
                 pixel_size_a: float | None = None, gain: Path | None = None,
                 report: Callable[[dict], None] | None = None) -> list[dict]:
    """Align each movie of ``paths`` (MRC/MRCS/TIFF; pixel size from its header unless given)
    and write ``output_dir/{micrographs,even,odd}/NAME.mrc`` and ``motion/NAME.star``.

    ``gain``: an MRC gain reference (H, W) that multiplies every frame. Returns one record
    per movie (name, frames, total drift and largest frame shift in pixels), each also
    given to ``report`` as soon as that movie is written. Raises
    InputError naming the file for an unreadable movie, a gain of another shape, or two
    movies with the same name.
    """
    stems = [Path(path).stem for path in paths]
    repeated = sorted({stem for stem in stems if stems.count(stem) > 1})
    if repeated:
        raise InputError(paths[stems.index(repeated[0])], "two movies share this name; their outputs would collide")
    gain_image = None if gain is None else read_mrc(gain)[0]
    records = []
    for path in paths:
        with open_movie(path, pixel_size_a=pixel_size_a) as movie:
            pixel = movie.pixel_size_a
            frames = np.stack([movie.frame(index) for index in range(movie.n_frames)])
        if movie.n_frames < 2:
            raise InputError(path, f"need at least 2 frames to align, found {movie.n_frames}")
        if gain is not None and gain_image is not None:
            if gain_image.shape != frames.shape[1:]:
                raise InputError(gain, f"gain reference is {gain_image.shape[1]} x {gain_image.shape[0]} px, "
                                       f"the frames of {Path(path).name} are {frames.shape[2]} x {frames.shape[1]}")
            frames *= gain_image
        aligned = align_frames(frames, pixel, settings)
        name = Path(path).stem
        for folder, image in (("micrographs", aligned.full_sum), ("even", aligned.even), ("odd", aligned.odd)):
            (output_dir / folder).mkdir(parents=True, exist_ok=True)
            write_mrc(output_dir / folder / f"{name}.mrc", image, pixel)
        (output_dir / "motion").mkdir(parents=True, exist_ok=True)
        write_motion_star(output_dir / "motion" / f"{name}.star", aligned.shifts_px, Path(path), frames.shape[1:],
                          pixel)
        steps = np.linalg.norm(np.diff(aligned.shifts_px, axis=0), axis=1)
        records.append({"name": name, "movie": str(path), "frames": len(frames), "pixel_size_a": pixel,
                        "total_drift_px": float(steps.sum()),
                        "largest_shift_px": float(np.linalg.norm(aligned.shifts_px, axis=1).max())})
        if report is not None:
            report(records[-1])
    return records
