"""The discrete Fourier transform's sample grids and centred padding, shared by every stage.

Frequencies are in cycles per ``spacing`` unit: cycles per pixel for the default spacing of 1,
cycles per Angstrom when the spacing is a pixel size in Angstrom. Axes are in numpy's order,
(H, W) or (D, H, W), on the unshifted DFT grid; on an ``rfft`` grid the last axis holds only the
non-negative half, ``n // 2 + 1`` samples. Arrays are numpy float64, or torch tensors with
``backend="torch"`` (in ``dtype``, by default torch's default float type).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

Backend = Literal["numpy", "torch"]


def frequency_axes(shape: tuple[int, ...], spacing: float = 1.0, *, rfft: bool = True, backend: Backend = "numpy",
                   dtype: torch.dtype | None = None) -> tuple:
    """The DFT sample frequencies of each axis of an array of ``shape``, shaped to broadcast.

    Axis ``i``'s array has ``shape[i]`` samples along axis ``i`` (``shape[-1] // 2 + 1`` for the
    last axis of an ``rfft`` grid) and length 1 along the others, so ``ky * kx`` or
    ``ky**2 + kx**2`` is the full (H, W) or (H, W // 2 + 1) grid. Cycles per ``spacing`` unit.
    """
    axes = []
    for index, size in enumerate(shape):
        half = rfft and index == len(shape) - 1
        values: np.ndarray | torch.Tensor
        if backend == "torch":
            values = (torch.fft.rfftfreq if half else torch.fft.fftfreq)(size, d=spacing, dtype=dtype)
        else:
            values = (np.fft.rfftfreq if half else np.fft.fftfreq)(size, d=spacing)
        view = [1] * len(shape)
        view[index] = -1
        axes.append(values.reshape(view))
    return tuple(axes)


def radial_frequency(shape: tuple[int, ...], spacing: float = 1.0, *, rfft: bool = True, backend: Backend = "numpy",
                     dtype: torch.dtype | None = None):
    """``|k| = sqrt(k_0^2 + k_1^2 + ...)`` on the DFT grid of an array of ``shape``, cycles per ``spacing`` unit.

    Shape ``shape`` (``shape[-1] // 2 + 1`` on the last axis if ``rfft``); arguments as
    :func:`frequency_axes`.
    """
    axes = frequency_axes(shape, spacing, rfft=rfft, backend=backend, dtype=dtype)
    squared = axes[0] ** 2
    for axis in axes[1:]:
        squared = squared + axis**2
    return torch.sqrt(squared) if backend == "torch" else np.sqrt(squared)


def pad_or_crop_centred(array: np.ndarray, size: int) -> np.ndarray:
    """``array`` zero-padded or cut to ``size`` along every axis, its element ``n // 2`` landing on ``size // 2``.

    The DFT centre convention of the reconstruction and simulation grids: an axis of length
    ``n`` gains ``size // 2 - n // 2`` zeros before it when padded, or keeps
    ``[n // 2 - size // 2, n // 2 - size // 2 + size)`` when cut. A new array of the same dtype.
    """
    padding, window = [], []
    for length in array.shape:
        if size >= length:
            before = size // 2 - length // 2
            padding.append((before, size - length - before))
            window.append(slice(None))
        else:
            start = length // 2 - size // 2
            padding.append((0, 0))
            window.append(slice(start, start + size))
    cut = array[tuple(window)]
    return np.pad(cut, padding)
