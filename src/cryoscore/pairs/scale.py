"""The pixel size a model works at: micrographs finer than a model's floor are Fourier-cropped to it.

A model trained with a pixel-size floor (``TrainConfig.min_pixel_size_a``) sees every
training micrograph finer than the floor Fourier-cropped to it, and at inference every
micrograph finer than the floor is cropped the same way, denoised, and Fourier-padded back
to its own grid. So one model serves data from 0.5 A/px to the floor alike: particles have
the size in pixels the model learned, the noise stays white (Fourier cropping keeps it so),
and the network runs on fewer pixels. What the model returns above the floor's Nyquist
frequency (``1 / (2 * floor)``) is zero: a denoiser for picking and for the eye, whose
posterior mean at those frequencies is close to zero at cryo-EM doses anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryoscore.filters import fourier_resample
from cryoscore.pairs.halves import HalfPair


@dataclass(frozen=True)
class WorkingScale:
    """How an image of ``shape`` (H, W) at ``pixel_size_a`` is resampled for a model.

    ``shape`` is the working grid (h, w) and ``pixel_size_a`` its pixel size (the input's
    times H / h); equal to the input's when no resampling is needed.
    """

    shape: tuple[int, int]
    pixel_size_a: float


def working_shape(shape: tuple[int, int], pixel_size_a: float, min_pixel_size_a: float | None) -> WorkingScale:
    """The grid a ``shape`` image at ``pixel_size_a`` is worked on, given a model's floor (None = none)."""
    if min_pixel_size_a is None or pixel_size_a >= min_pixel_size_a:
        return WorkingScale((int(shape[0]), int(shape[1])), pixel_size_a)
    factor = pixel_size_a / min_pixel_size_a
    working = (max(round(shape[0] * factor), 2), max(round(shape[1] * factor), 2))
    return WorkingScale(working, pixel_size_a * shape[0] / working[0])


def rescale_pair(pair: HalfPair, min_pixel_size_a: float | None) -> HalfPair:
    """``pair`` Fourier-cropped to the floor ``min_pixel_size_a`` if it is finer; else unchanged."""
    scale = working_shape(pair.even.shape, pair.pixel_size_a, min_pixel_size_a)
    if scale.shape == tuple(pair.even.shape):
        return pair
    return HalfPair(pair.name, fourier_resample(pair.even, scale.shape), fourier_resample(pair.odd, scale.shape),
                    scale.pixel_size_a)
