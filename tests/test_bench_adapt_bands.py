"""The --adapt diagnostic's split of a denoiser's squared error into rings of wavelength."""

from __future__ import annotations

import numpy as np
import pytest


def test_ring_errors_add_up_to_the_mean_squared_error(benchmarks_on_path):
    from bench_adapt_bands import band_errors

    from cryoscore.infer.denoise import denoise_image, load_denoiser
    from cryoscore.pairs.noise import spectral_noise_sigma

    rng = np.random.default_rng(0)
    noisy, target = rng.normal(size=(2, 128, 128))
    model = load_denoiser()
    pixel_size_a = 3.0  # the 3 A edge lies beyond this grid's corners (2 x 3 / sqrt(2) = 4.2 A): every ring counted
    rings = band_errors(model, noisy, target, pixel_size_a)
    estimate = denoise_image(model, noisy, pixel_size_a=pixel_size_a, halves_in_image=1)
    expected = np.mean((estimate - target) ** 2) / spectral_noise_sigma(noisy) ** 2
    assert rings.sum() == pytest.approx(expected, rel=1e-4)
    assert rings[-1] > rings[0]  # white error: most of it at the finest wavelengths, where most rings' pixels are
