"""Pixel-level judges: PSNR, SSIM, the particle-free mask and the background power."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cryoscore.metrics.pixel import (
    PixelMetrics,
    correlation,
    low_frequency_power,
    particle_free_mask,
    pixel_metrics,
    psnr,
    ssim,
)


def _checkerboard(shape: tuple[int, int], amplitude: float) -> np.ndarray:
    """+amplitude / -amplitude alternating pixels: zero mean on an even grid, every pixel's square amplitude^2."""
    rows, cols = np.indices(shape)
    return amplitude * (1 - 2 * ((rows + cols) % 2)).astype(np.float64)


def _ramp(shape: tuple[int, int]) -> np.ndarray:
    """Columns going linearly from 0 to 1: a range (PSNR peak) of exactly 1."""
    return np.tile(np.linspace(0.0, 1.0, shape[1]), (shape[0], 1))


def test_psnr_of_identical_images_is_infinite():
    clean = _ramp((32, 32))
    assert psnr(clean, clean) == math.inf
    assert psnr(clean + 17.0, clean) > 200.0  # equal up to rounding once mean-subtracted


def test_psnr_known_value_and_six_db_per_doubled_error():
    clean = _ramp((64, 64))
    # Error 0.1 on every pixel, zero mean: MSE 0.01 with a peak of 1 -> 20 dB.
    assert psnr(clean + _checkerboard(clean.shape, 0.1), clean) == pytest.approx(20.0, abs=1e-9)
    doubled = psnr(clean + _checkerboard(clean.shape, 0.2), clean)
    assert 20.0 - doubled == pytest.approx(20 * math.log10(2), abs=1e-9)  # 6.02 dB


def test_constant_offset_changes_neither_psnr_nor_ssim():
    rng = np.random.default_rng(0)
    clean = rng.normal(size=(96, 96)).cumsum(axis=0)
    estimate = clean + rng.normal(scale=2.0, size=clean.shape)
    assert psnr(estimate + 1000.0, clean) == pytest.approx(psnr(estimate, clean), abs=1e-9)
    assert psnr(estimate, clean - 250.0) == pytest.approx(psnr(estimate, clean), abs=1e-9)
    assert ssim(estimate + 1000.0, clean) == pytest.approx(ssim(estimate, clean), abs=1e-9)
    assert ssim(estimate, clean - 250.0) == pytest.approx(ssim(estimate, clean), abs=1e-9)


def test_ssim_is_one_for_identical_images_and_near_zero_for_unrelated_noise():
    rng = np.random.default_rng(1)
    clean = rng.normal(size=(256, 256))
    assert ssim(clean, clean) == pytest.approx(1.0, abs=1e-12)
    assert abs(ssim(rng.normal(size=clean.shape), clean)) < 0.05
    # A noisier estimate is less similar.
    mild = clean + rng.normal(scale=0.3, size=clean.shape)
    strong = clean + rng.normal(scale=1.0, size=clean.shape)
    assert ssim(strong, clean) < ssim(mild, clean) < 1.0


def test_particle_free_mask_excludes_one_diameter_around_each_centre():
    mask = particle_free_mask((50, 60), np.array([[20.5, 30.0]]), diameter_px=10.0)
    assert mask.shape == (50, 60) and mask.dtype == bool
    assert not mask[20, 30]  # at the centre
    assert not mask[30, 30]  # 9.5 px away
    assert not mask[25, 38]  # sqrt(4.5^2 + 8^2) = 9.18 px away
    assert mask[31, 30]  # 10.5 px away
    assert mask[20, 40]  # sqrt(0.5^2 + 10^2) = 10.01 px away
    assert mask[0, 0] and mask[49, 59]


def test_particle_free_mask_matches_brute_force_with_centres_off_the_image():
    rng = np.random.default_rng(2)
    shape, diameter = (40, 70), 7.3
    centres = np.vstack([rng.uniform(-10, 80, size=(12, 2)), [[-9.0, 35.0], [45.0, 75.0]]])
    rows, cols = np.indices(shape)
    distances = np.hypot(rows[..., None] - centres[:, 0], cols[..., None] - centres[:, 1])
    expected = np.all(distances > diameter, axis=-1)
    np.testing.assert_array_equal(particle_free_mask(shape, centres, diameter), expected)


def test_particle_free_mask_without_particles_is_all_true():
    assert particle_free_mask((8, 9), np.empty((0, 2)), diameter_px=5.0).all()


def test_low_frequency_power_keeps_a_gradient_and_drops_white_noise():
    shape, pixel_size, cutoff = (256, 256), 1.0, 20.0  # a 20 px wavelength
    everywhere = np.ones(shape, dtype=bool)
    gradient = 100.0 * _ramp(shape)
    assert low_frequency_power(gradient, pixel_size, everywhere, cutoff) > 0.5 * gradient.var()
    noise = np.random.default_rng(3).normal(scale=10.0, size=shape)
    # A Gaussian at 1/20 px^-1 passes about pi (1/20)^2 / ln 2 = 1.1 % of white noise's power.
    assert low_frequency_power(noise, pixel_size, everywhere, cutoff) < 0.05 * noise.var()


def test_low_frequency_power_ignores_masked_out_pixels():
    shape, pixel_size, cutoff = (256, 256), 1.0, 20.0
    rows, cols = np.indices(shape)
    blob = 1000.0 * np.exp(-((rows - 64.0) ** 2 + (cols - 64.0) ** 2) / (2 * 5.0**2))
    mask = particle_free_mask(shape, np.array([[64.0, 64.0]]), diameter_px=60.0)
    # Away from the blob the mean-subtracted image is the constant -mean, which a low-pass keeps.
    assert low_frequency_power(blob, pixel_size, mask, cutoff) == pytest.approx(blob.mean() ** 2, rel=1e-3)
    assert low_frequency_power(blob, pixel_size, ~mask, cutoff) > 100 * blob.mean() ** 2


def test_low_frequency_power_refuses_a_mismatched_or_empty_mask():
    image = np.zeros((16, 16))
    with pytest.raises(ValueError, match="shape"):
        low_frequency_power(image, 1.0, np.ones((16, 8), dtype=bool), 10.0)
    with pytest.raises(ValueError, match="no pixels"):
        low_frequency_power(image, 1.0, np.zeros((16, 16), dtype=bool), 10.0)


def test_pixel_metrics_sees_background_left_by_a_denoiser():
    rng = np.random.default_rng(4)
    shape, diameter, pixel_size = (128, 128), 12.0, 1.5
    centres = np.array([[32.0, 32.0], [96.0, 90.0]])
    clean = np.zeros(shape)
    rows, cols = np.indices(shape)
    for row, col in centres:
        clean += np.exp(-((rows - row) ** 2 + (cols - col) ** 2) / (2 * 3.0**2))
    noise = rng.normal(scale=0.05, size=shape)
    denoised = clean + noise
    with_background = denoised + 0.5 * _ramp(shape)
    good = pixel_metrics(denoised, clean, centres, diameter, pixel_size)
    poor = pixel_metrics(with_background, clean, centres, diameter, pixel_size)
    assert isinstance(good, PixelMetrics)
    assert good.psnr_db == pytest.approx(psnr(denoised, clean))
    assert good.ssim == pytest.approx(ssim(denoised, clean))
    assert poor.background_power > 100 * good.background_power
    assert poor.psnr_db < good.psnr_db and poor.ssim < good.ssim
    assert poor.correlation < good.correlation < 1.0


def test_correlation_ignores_scale_and_offset_and_gives_zero_to_an_empty_output():
    rng = np.random.default_rng(6)
    clean = rng.normal(size=(64, 64))
    assert correlation(3.0 * clean + 7.0, clean) == pytest.approx(1.0)
    assert correlation(-clean, clean) == pytest.approx(-1.0)
    assert correlation(np.zeros_like(clean), clean) == 0.0
    noisy = clean + rng.normal(size=clean.shape)  # equal signal and noise power: r = 1/sqrt(2)
    assert correlation(noisy, clean) == pytest.approx(1 / math.sqrt(2), abs=0.03)


def test_pixel_metrics_refuses_mismatched_shapes_and_a_micrograph_full_of_particles():
    clean = np.random.default_rng(5).normal(size=(32, 32))
    with pytest.raises(ValueError, match="shape"):
        pixel_metrics(clean[:, :31], clean, np.empty((0, 2)), 5.0, 1.0)
    with pytest.raises(ValueError, match="shape"):
        psnr(clean[:31], clean)
    with pytest.raises(ValueError, match="no pixel"):
        pixel_metrics(clean, clean, np.array([[16.0, 16.0]]), 30.0, 1.0)
