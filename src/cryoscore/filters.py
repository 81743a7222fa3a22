"""Fourier filters in Angstrom; the low-pass is also the conventional, non-learned denoiser every method is compared with."""

from __future__ import annotations

import numpy as np
import scipy.fft

from cryoscore.errors import InputError
from cryoscore.fourier import frequency_axes, radial_frequency

LOWPASS_KINDS = ("gaussian", "butterworth")


def lowpass_transfer(
    shape: tuple[int, int], pixel_size_a: float, cutoff_a: float, *, kind: str = "gaussian", order: int = 8
) -> np.ndarray:
    """Filter transfer (H, W//2+1) on the rfft grid; its value at |k| = 1/cutoff_a is 1/sqrt(2).

    ``gaussian``: ``exp(-ln(2)/2 * (k/kc)^2)``, smooth with no ringing. ``butterworth``:
    ``1 / sqrt(1 + (k/kc)^(2 order))``, flat in the pass band with a steep roll-off.
    """
    if kind not in LOWPASS_KINDS:
        raise InputError("--lowpass-kind", f"unknown filter {kind!r}; choose one of {', '.join(LOWPASS_KINDS)}")
    if not cutoff_a >= 2 * pixel_size_a:
        raise InputError(
            "--lowpass", f"cut-off {cutoff_a} A is finer than Nyquist ({2 * pixel_size_a:.3g} A at this pixel size)"
        )
    relative = radial_frequency(shape, pixel_size_a) * cutoff_a  # k / kc
    if kind == "gaussian":
        return np.exp(-np.log(2) / 2 * relative**2)
    return 1 / np.sqrt(1 + relative ** (2 * order))


def lowpass_filter(
    image: np.ndarray, pixel_size_a: float, cutoff_a: float, *, kind: str = "gaussian", order: int = 8
) -> np.ndarray:
    """Low-pass an image (H, W) at ``cutoff_a`` Angstrom; float32, mean preserved (periodic edges)."""
    transfer = lowpass_transfer(image.shape, pixel_size_a, cutoff_a, kind=kind, order=order)
    filtered = np.fft.irfft2(np.fft.rfft2(image.astype(np.float64)) * transfer, s=image.shape)
    return filtered.astype(np.float32)


def bin_image(image: np.ndarray, factor: int) -> np.ndarray:
    """Block-average ``image`` (H, W) over ``factor`` x ``factor`` pixels; float32 (H // factor, W // factor).

    The last ``H % factor`` rows and ``W % factor`` columns are dropped.
    """
    height, width = image.shape[0] // factor, image.shape[1] // factor
    if factor == 1:
        return np.asarray(image, dtype=np.float32)
    blocks = image[: height * factor, : width * factor].reshape(height, factor, width, factor)
    return blocks.mean(axis=(1, 3), dtype=np.float32)


def periodic_smooth_decomposition(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split ``image`` (H, W) into ``periodic + smooth`` (Moisan 2011), both float32 (H, W).

    ``periodic`` has no jump where the image wraps around, so its Fourier transform has no
    cross of edge artefacts; ``smooth`` holds the jumps at the edges and is harmonic inside
    (a slowly varying surface), so any interpolation resamples it without touching the noise.
    """
    u = image.astype(np.float32)
    boundary = np.zeros_like(u)
    boundary[0, :] += u[-1, :] - u[0, :]
    boundary[-1, :] += u[0, :] - u[-1, :]
    boundary[:, 0] += u[:, -1] - u[:, 0]
    boundary[:, -1] += u[:, 0] - u[:, -1]
    cos_rows, cos_cols = (np.cos(2 * np.pi * k) for k in frequency_axes(u.shape))
    denominator = (2 * cos_rows + 2 * cos_cols - 4).astype(np.float32)
    denominator[0, 0] = 1.0
    spectrum = scipy.fft.rfft2(boundary, workers=-1) / denominator
    spectrum[0, 0] = 0.0
    smooth = scipy.fft.irfft2(spectrum, s=u.shape, workers=-1).astype(np.float32)
    return u - smooth, smooth


def lowpass_filter_nonperiodic(image: np.ndarray, pixel_size_a: float, cutoff_a: float) -> np.ndarray:
    """:func:`lowpass_filter` (Gaussian) of an image (H, W) that does not wrap around (an ice gradient, a
    carbon edge): its periodic part low-passed plus its smooth part (:func:`periodic_smooth_decomposition`),
    so the jump at the borders neither rings nor is smeared across them; float32 (H, W)."""
    periodic, smooth = periodic_smooth_decomposition(image)
    return lowpass_filter(periodic, pixel_size_a, cutoff_a) + smooth


def _fourier_resample_periodic(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Crop or zero-pad the spectrum of a periodic image (H, W) to ``shape``; mean kept."""
    (height, width), (new_height, new_width) = image.shape, shape
    spectrum = np.fft.fftshift(scipy.fft.rfft2(image, workers=-1), axes=0)
    out = np.zeros((new_height, new_width // 2 + 1), dtype=spectrum.dtype)
    rows, cols = min(height, new_height), min(width // 2, new_width // 2) + 1
    out[new_height // 2 - rows // 2: new_height // 2 - rows // 2 + rows, :cols] = (
        spectrum[height // 2 - rows // 2: height // 2 - rows // 2 + rows, :cols])
    resampled = scipy.fft.irfft2(np.fft.ifftshift(out, axes=0), s=shape, workers=-1)
    return (resampled * (new_height * new_width) / (height * width)).astype(np.float32)


def fourier_resample(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resample ``image`` (H, W) to ``shape`` (h, w) by Fourier cropping or zero-padding; float32.

    Pixel (i, j) of the result lies at input position (i * H / h, j * W / w): the first
    pixels coincide, as in RELION's and cryoSPARC's Fourier cropping, so coordinates scale
    by the ratio of the shapes. Downsampling keeps white noise white (per-pixel variance
    falls by ``h * w / (H * W)``) and keeps every frequency below the new Nyquist exactly;
    upsampling adds none above the old one. The image is first split into a periodic part,
    resampled in Fourier space, and a smooth edge part, interpolated, so the edges of a
    micrograph with an ice gradient do not ring.
    """
    if image.ndim != 2 or len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"need a 2D image and a 2D target shape, got {image.shape} -> {shape}")
    shape = (int(shape[0]), int(shape[1]))
    if tuple(image.shape) == shape:
        return np.asarray(image, dtype=np.float32)
    periodic, smooth = periodic_smooth_decomposition(image)
    return _fourier_resample_periodic(periodic, shape) + bilinear_resample(smooth, shape)


def bilinear_resample(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Linear interpolation of ``image`` (H, W) at (i * H / h, j * W / w) for the (h, w) of ``shape``; float32.

    One axis at a time (bilinear interpolation on a grid is separable); positions past the last
    pixel take its value, as ``scipy.ndimage.map_coordinates(order=1, mode="nearest")`` gives,
    at a fraction of its cost.
    """
    result = np.asarray(image, dtype=np.float32)
    for axis, (old, new) in enumerate(zip(image.shape, shape)):
        position = np.arange(new) * (old / new)
        below = np.minimum(np.floor(position).astype(np.intp), old - 1)
        above = np.minimum(below + 1, old - 1)
        weight = (position - np.floor(position)).astype(np.float32)
        weight = weight.reshape((-1, 1) if axis == 0 else (1, -1))
        lower, upper = np.take(result, below, axis=axis), np.take(result, above, axis=axis)
        result = lower + weight * (upper - lower)
    return result
