"""Movie frame alignment (motion correction) into the full sum and the even/odd half sums.

The drift of the whole frame is measured first, as a smooth trajectory refined in rounds
(:func:`global_trajectory`): each frame is cross-correlated (band-passed, B-factor weighted,
whole frame under a soft-edged taper, sub-pixel peak from the exact Fourier interpolation of
the correlation) against the sum of all the other frames, and the measured shifts are fitted
with a trajectory model, a constant velocity plus a random walk: a penalised least-squares
smoother whose strength is chosen per movie by restricted maximum likelihood, so a movie
with noisy frames is smoothed more than one whose frames are well measured. From the second
round on the other frames are first shifted into register along the current trajectory (the
reference is no longer blurred by the drift) and a frame's peak is searched only within
``search_px`` of its current position; the rounds stop when the trajectory moves by less
than 0.01 px RMS. Measuring one frame against the mean of the unaligned others (the first
round) shrinks large drifts towards their middle; the rounds remove that bias.

A movie larger than one patch (``patch_px``) then gets local motion on top, with
torch-motion-correction: the globally aligned frames' overlapping patches are
cross-correlated with the mean of the other frames, and each patch's residual shifts,
less their mean over the patches (the whole frame's motion is the trajectory above), are
smoothed in time the same way (one smoothing strength for all patches); the result is a
deformation field on the patch grid. The field's mean over frames is removed, so the sums
stay registered to the movie's mean position (where particle coordinates of a simulated
movie are); every frame is resampled along the field and summed: all of them into the full
sum, the even-indexed (0, 2, ...) and the odd-indexed ones into the halves. A gain reference
multiplies every frame first.

:func:`align_movies` writes the dataset layout that ``cryoscore train`` reads
(``micrographs/``, ``even/``, ``odd/``, one ``NAME.mrc`` each) and each movie's per-frame
shifts as a RELION motion STAR file (``motion/NAME.star``).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import starfile
import torch
from torch_fourier_shift import fourier_shift_image_2d
from torch_motion_correction import (
    DeformationField,
    FourierFilterConfig,
    PatchSamplingConfig,
    XCRefinementConfig,
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
    """``patch_px``: the side of the square patches whose local shifts are measured (a movie
    no larger than a patch gets the whole frame's trajectory only; 2 x 2 patches or more add
    local motion); ``overlap``: of neighbouring patches; ``bfactor_a2`` and
    ``resolution_range_a`` (low, high): the band the cross-correlation uses, Angstrom.

    The whole frame's trajectory: ``max_rounds``, the most measure-and-fit rounds (the first
    against the unaligned frames; the rounds stop earlier once the trajectory moves by less
    than 0.01 px RMS); ``search_px``, pixels: from the second round, how far from its current
    position along the trajectory a frame's correlation peak may be; ``smoothing``: the
    strength (dimensionless, >= 0) of the trajectory model's penalty on changes of velocity
    from frame to frame, relative to the squared misfit of the measured shifts (0: the
    measured shifts as they are; larger: closer to a constant velocity); None (the default)
    chooses it per movie by restricted maximum likelihood."""

    patch_px: int = 512
    overlap: float = 0.5
    bfactor_a2: float = 500.0
    resolution_range_a: tuple[float, float] = (300.0, 10.0)
    max_rounds: int = 10
    search_px: float = 2.0
    smoothing: float | None = None

    def __post_init__(self) -> None:
        if self.patch_px < 64 or not 0 <= self.overlap < 1 or self.bfactor_a2 < 0:
            raise ValueError(f"patches must be >= 64 px, overlap in [0, 1) and the B-factor >= 0; got {self}")
        low, high = self.resolution_range_a
        if not low > high > 0:
            raise ValueError(f"the resolution range must be low > high > 0 A, got {self.resolution_range_a}")
        if self.max_rounds < 1 or not self.search_px > 0 or (self.smoothing is not None and not self.smoothing >= 0):
            raise ValueError(f"need max_rounds >= 1, search_px > 0 and smoothing >= 0 (or None); got {self}")


@dataclass(frozen=True)
class AlignedMovie:
    """The sums of one aligned movie, float32 (H, W), and ``shifts_px`` (n_frames, 2): each
    frame's mean displacement (row, column) in pixels relative to the mean over frames, as
    measured (the alignment moves the frame by minus this). ``rounds``: the trajectory's
    refinement rounds run; ``converged``: whether its last round moved it by less than
    0.01 px RMS; ``smoothing``: the trajectory model's strength used in the last round."""

    full_sum: np.ndarray
    even: np.ndarray
    odd: np.ndarray
    shifts_px: np.ndarray
    rounds: int = 0
    converged: bool = True
    smoothing: float = 0.0


_TOLERANCE_PX = 0.01  # the rounds stop when the trajectory moves by less than this, RMS
_TAPER = 0.05  # the soft edge of the whole-frame cross-correlation, a fraction of each side
_OVERSAMPLING = 1.5  # the Fourier-cropped correlation grid samples the band's limit this many times over Nyquist
_SMOOTHING_GRID = np.geomspace(1e-3, 1e5, 81)


def _velocity_penalty(n_frames: int) -> np.ndarray:
    """Q (n, n) with x^T Q x = sum_t (v_t - mean v)^2, v_t = x_{t+1} - x_t: a random walk's
    steps about a constant velocity (constant and linear paths are not penalised)."""
    steps = np.diff(np.eye(n_frames), axis=0)
    steps -= steps.mean(axis=0)
    return steps.T @ steps


def smooth_trajectory(measured: np.ndarray, smoothing: float | None = None) -> tuple[np.ndarray, float]:
    """Fit shifts measured per frame, ``measured`` (n_frames, k) in pixels (k columns sharing one
    noise level and one trajectory model, e.g. row and column of one or several patches),
    with the trajectory model of :class:`AlignSettings`: ``x = argmin |measured - x|^2 +
    smoothing * x^T Q x`` (Q: :func:`_velocity_penalty`), centred on its mean over frames.
    ``smoothing`` None: the value of a grid (1e-3 to 1e5) that maximises the restricted
    likelihood of the measurements, modelled as white noise of one variance on a random walk
    about a constant velocity. Returns the fit and the smoothing used."""
    centred = measured - measured.mean(axis=0)
    n_frames = len(centred)
    penalty = _velocity_penalty(n_frames)
    values, vectors = np.linalg.eigh(penalty)
    values = np.clip(values, 0.0, None)
    positive = values > 1e-9
    if not positive.any():  # 2 frames: no velocity changes to penalise
        return centred, 0.0
    if smoothing is None:
        projected = (vectors.T @ centred)[positive]  # the null space (constant, linear) is not penalised
        count = projected.size
        best = (np.inf, 0.0)
        for candidate in _SMOOTHING_GRID:
            variance = 1 + 1 / (candidate * values[positive])  # of each projection, in units of the noise's
            noise = float(np.sum(projected**2 / variance[:, None])) / count
            score = count * math.log(max(noise, 1e-30)) + centred.shape[1] * float(np.sum(np.log(variance)))
            if score < best[0]:
                best = (score, float(candidate))
        smoothing = best[1]
    fitted = vectors @ ((vectors.T @ centred) / (1 + smoothing * values)[:, None])
    return fitted - fitted.mean(axis=0), smoothing


def _taper(n: int) -> np.ndarray:
    window = np.ones(n)
    edge = max(1, int(n * _TAPER))
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(edge) + 0.5) / edge)
    window[:edge], window[n - edge:] = ramp, ramp[::-1]
    return window


class _FrameSpectra:
    """Each frame's Fourier transform (mean removed, soft-edged taper), cropped to the
    correlation band, with the band-pass times B-factor filter, and the correlation peak
    search (:meth:`measure`)."""

    def __init__(self, frames: np.ndarray, pixel_size_a: float, settings: AlignSettings) -> None:
        n_frames, self.height, self.width = frames.shape
        band_limit = pixel_size_a / settings.resolution_range_a[1]  # cycles per pixel
        self.crop_h = 2 * min(self.height // 2, math.ceil(self.height * band_limit * _OVERSAMPLING))  # even
        self.crop_w = 2 * min(self.width // 2, math.ceil(self.width * band_limit * _OVERSAMPLING))
        rows = torch.cat([torch.arange(0, self.crop_h // 2), torch.arange(self.height - self.crop_h // 2, self.height)])
        columns = torch.arange(0, self.crop_w // 2 + 1)
        taper = torch.from_numpy(np.outer(_taper(self.height), _taper(self.width)).astype(np.float32))
        self.spectra = torch.empty((n_frames, len(rows), len(columns)), dtype=torch.complex64)
        for index in range(n_frames):
            frame = torch.from_numpy(np.ascontiguousarray(frames[index], dtype=np.float32))
            self.spectra[index] = torch.fft.rfft2((frame - frame.mean()) * taper)[rows][:, columns]
        self.ky = torch.where(rows > self.height // 2, rows - self.height, rows).double()  # cycles per frame height
        self.kx = columns.double()
        frequency2 = (self.ky[:, None] / (self.height * pixel_size_a)) ** 2 + (self.kx[None, :] / (self.width * pixel_size_a)) ** 2
        low, high = settings.resolution_range_a
        band = (frequency2 >= 1 / low**2) & (frequency2 <= 1 / high**2)
        self.filter = (band * torch.exp(-settings.bfactor_a2 * frequency2 / 4)).to(torch.complex64)
        self.column_weight = torch.full((len(columns),), 2.0, dtype=torch.float64)  # the rfft's hidden half
        self.column_weight[0] = 1.0
        if self.crop_w == self.width and self.width % 2 == 0:
            self.column_weight[-1] = 1.0

    def _phases(self, shifts_px: np.ndarray) -> torch.Tensor:
        """exp(2 pi i k . d) (n, crop_h, crop_w // 2 + 1): moves content by minus each shift d (n, 2)."""
        shifts = torch.from_numpy(np.asarray(shifts_px, dtype=np.float64))
        rows = torch.exp(2j * math.pi * self.ky[None, :] * shifts[:, 0:1] / self.height)
        columns = torch.exp(2j * math.pi * self.kx[None, :] * shifts[:, 1:2] / self.width)
        return (rows[:, :, None] * columns[:, None, :]).to(torch.complex64)

    def measure(self, trajectory_px: np.ndarray, search_px: float | None) -> np.ndarray:
        """Each frame's displacement (n_frames, 2) in pixels, measured against the sum of the
        other frames moved into register along ``trajectory_px`` (centred on its mean); with
        ``search_px``, the peak is searched within that distance of the frame's own position
        on the trajectory.

        The other frames sit where the trajectory's errors leave them: at the mean of
        ``true - trajectory`` over them, which (both centred) is the frame's own error over
        n - 1. The peak p is the displacement relative to that, so the displacement itself is
        ((n - 1) p + trajectory) / n: in the first round (trajectory 0) this undoes the
        n / (n - 1) overestimate of measuring against the unaligned others, and with 2 frames
        the rounds would otherwise swing about the truth instead of converging."""
        phases = self._phases(trajectory_px)
        aligned = self.spectra * phases
        total = aligned.sum(dim=0)
        n_frames = len(aligned)
        measured = np.zeros((n_frames, 2))
        for index in range(n_frames):
            cross = self.spectra[index] * torch.conj(total - aligned[index]) * self.filter
            measured[index] = self._peak(cross, trajectory_px[index] if search_px is not None else None, search_px)
        return ((n_frames - 1) * measured + trajectory_px) / n_frames

    def _peak(self, cross: torch.Tensor, centre: np.ndarray | None, radius: float | None) -> np.ndarray:
        """The displacement in pixels at the maximum of the correlation whose spectrum is
        ``cross``: the cropped grid's highest sample (within ``radius`` of ``centre`` if given),
        then twice a 21 x 21 grid of exact Fourier interpolations, 10 times finer each time,
        and a parabola through the best one and its neighbours."""
        correlation = torch.fft.irfft2(cross, s=(self.crop_h, self.crop_w))
        step_y, step_x = self.height / self.crop_h, self.width / self.crop_w  # pixels per cropped sample
        ys = torch.fft.fftfreq(self.crop_h, d=1.0).double() * self.height
        xs = torch.fft.fftfreq(self.crop_w, d=1.0).double() * self.width
        if centre is not None and radius is not None:
            reach = max(radius, 1.5 * max(step_y, step_x))
            outside = (ys[:, None] - centre[0]) ** 2 + (xs[None, :] - centre[1]) ** 2 > reach**2
            correlation = correlation.masked_fill(outside, -torch.inf)
        row, column = divmod(int(torch.argmax(correlation)), self.crop_w)
        best = np.array([float(ys[row]), float(xs[column])])
        spectrum = cross.to(torch.complex128)
        offsets = torch.arange(-10, 11, dtype=torch.float64)
        for _ in range(2):
            step_y, step_x = step_y / 10, step_x / 10
            rows, columns = best[0] + offsets * step_y, best[1] + offsets * step_x
            row_basis = torch.exp(2j * math.pi * rows[:, None] * self.ky[None, :] / self.height)
            column_basis = torch.exp(2j * math.pi * self.kx[:, None] * columns[None, :] / self.width)
            fine = (row_basis @ spectrum @ (column_basis * self.column_weight[:, None])).real.numpy()
            i, j = divmod(int(np.argmax(fine)), fine.shape[1])
            i, j = min(max(i, 1), len(offsets) - 2), min(max(j, 1), len(offsets) - 2)
            best = np.array([float(rows[i]) + step_y * _vertex(fine[i - 1:i + 2, j]),
                             float(columns[j]) + step_x * _vertex(fine[i, j - 1:j + 2])])
        return best


def _vertex(values: np.ndarray) -> float:
    """Offset (in samples, within +-1) of the vertex of the parabola through 3 equally spaced values."""
    curvature = values[0] - 2 * values[1] + values[2]
    return float(np.clip(0.5 * (values[0] - values[2]) / curvature, -1, 1)) if curvature < 0 else 0.0


def global_trajectory(frames: np.ndarray, pixel_size_a: float, settings: AlignSettings = AlignSettings()
                      ) -> tuple[np.ndarray, int, bool, float]:
    """The whole frame's displacement per frame (n_frames, 2), pixels, centred on its mean,
    refined in rounds (see the module docstring). Returns it, the rounds run, whether the
    last round moved it by less than 0.01 px RMS, and the smoothing used last."""
    spectra = _FrameSpectra(frames, pixel_size_a, settings)
    trajectory = np.zeros((len(frames), 2))
    converged, smoothing, rounds = False, 0.0, 0
    for rounds in range(1, settings.max_rounds + 1):
        measured = spectra.measure(trajectory, None if rounds == 1 else settings.search_px)
        fitted, smoothing = smooth_trajectory(measured, settings.smoothing)
        change = float(np.sqrt(np.mean(np.sum((fitted - trajectory) ** 2, axis=1))))
        trajectory = fitted
        if rounds > 1 and change < _TOLERANCE_PX:
            converged = True
            break
    return trajectory, rounds, converged, smoothing


def _local_residuals(movie: torch.Tensor, trajectory_px: np.ndarray, pixel_size_a: float, patch: tuple[int, int],
                     settings: AlignSettings) -> torch.Tensor:
    """Patch shifts (2, n_frames, gh, gw), Angstrom, left after the whole frame's motion
    ``trajectory_px`` (n_frames, 2): their mean over the patches removed, each patch's path
    smoothed in time (one smoothing for all patches, as :func:`smooth_trajectory`)."""
    corrected = fourier_shift_image_2d(movie, shifts=-torch.from_numpy(trajectory_px).float())  # periodic
    with warnings.catch_warnings():  # few patches: the library's outlier test takes a std over few values
        warnings.filterwarnings("ignore", message=r"std\(\): degrees of freedom")
        local, _ = estimate_motion_cross_correlation_patches(
            corrected, pixel_spacing=pixel_size_a,
            patch_sampling=PatchSamplingConfig(patch_shape=patch, overlap=settings.overlap),
            fourier_filter=FourierFilterConfig(b_factor=settings.bfactor_a2, frequency_range=settings.resolution_range_a),
            refinement=XCRefinementConfig(temporal_smoothing=False))
    residual = local.data - local.data.mean(dim=(-2, -1), keepdim=True)  # (2, t, gh, gw)
    _, n_frames, rows, columns = residual.shape
    paths = residual.permute(1, 0, 2, 3).reshape(n_frames, -1).double().numpy() / pixel_size_a
    smoothed, _ = smooth_trajectory(paths, settings.smoothing)
    smoothed -= smoothed.reshape(n_frames, 2, -1).mean(axis=2).repeat(rows * columns, axis=1)
    return torch.from_numpy(smoothed * pixel_size_a).float().reshape(n_frames, 2, rows, columns).permute(1, 0, 2, 3)


def align_frames(frames: np.ndarray, pixel_size_a: float, settings: AlignSettings = AlignSettings()) -> AlignedMovie:
    """Align a movie ``frames`` (n_frames, H, W) at ``pixel_size_a`` and sum it (see the module docstring)."""
    if frames.ndim != 3 or frames.shape[0] < 2:
        raise ValueError(f"need a stack of at least 2 frames, got shape {frames.shape}")
    trajectory, rounds, converged, smoothing = global_trajectory(frames, pixel_size_a, settings)
    movie = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))
    data = torch.from_numpy(trajectory.T * pixel_size_a).float()[:, :, None, None]  # (2, t, 1, 1), Angstrom
    patch = (min(settings.patch_px, frames.shape[1]), min(settings.patch_px, frames.shape[2]))
    if patch != frames.shape[1:]:
        data = data + _local_residuals(movie, trajectory, pixel_size_a, patch, settings)
    field = DeformationField(data - data.mean(dim=1, keepdim=True))
    aligned = correct_motion(movie, field, pixel_spacing=pixel_size_a).numpy().astype(np.float64)
    even, odd = aligned[0::2].sum(axis=0), aligned[1::2].sum(axis=0)
    shifts_px = field.data.mean(dim=(-2, -1)).T.double().numpy() / pixel_size_a
    return AlignedMovie((even + odd).astype(np.float32), even.astype(np.float32), odd.astype(np.float32), shifts_px,
                        rounds, converged, smoothing)


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
    per movie (name, frames, total drift and largest frame shift in pixels, the trajectory's
    refinement rounds and whether they converged), each also
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
                        "largest_shift_px": float(np.linalg.norm(aligned.shifts_px, axis=1).max()),
                        "rounds": aligned.rounds, "converged": aligned.converged})
        if report is not None:
            report(records[-1])
    return records
