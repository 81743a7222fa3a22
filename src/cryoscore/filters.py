"""Fourier filters in Angstrom; the low-pass is also the conventional, non-learned denoiser every method is compared with."""

from __future__ import annotations

import numpy as np

from cryoscore.errors import InputError

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
    ky = np.fft.fftfreq(shape[0], d=pixel_size_a)[:, None]
    kx = np.fft.rfftfreq(shape[1], d=pixel_size_a)[None, :]
    relative = np.sqrt(ky**2 + kx**2) * cutoff_a  # k / kc
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
