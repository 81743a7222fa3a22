"""Noise measured from halves, and pairs made from a single micrograph."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from cryoscore.pairs.noise import estimate_noise
from cryoscore.pairs.single import neighbour_subsample_pair
from cryoscore.simulate.dataset import SimulationConfig, render_truth, sample_halves
from cryoscore.simulate.volume import builtin_specimen


def test_noise_level_of_simulated_halves_matches_the_poisson_variance():
    config = SimulationConfig(size_px=256, pixel_size_a=3.0, particles_per_micrograph=10, dose_e_per_a2=30.0,
                              n_frames=10, seed=2)
    truth = render_truth(config, builtin_specimen("apoferritin", 3.0), 0)
    even, odd = (half.numpy() for half in sample_halves(truth))
    estimate = estimate_noise(even, odd, tile=64)
    expected_variance = float(((truth.clean + truth.background) / 2).mean())  # Poisson: variance = mean
    assert estimate.sigma_half**2 == pytest.approx(expected_variance, rel=0.03)
    # Shot noise is white: every frequency shell holds the same power (DC removed per tile).
    frequencies, power = estimate.radial_profile()
    assert frequencies[1] == pytest.approx(1 / 64)
    np.testing.assert_allclose(power[1:], expected_variance, rtol=0.15)
    assert estimate.power_spectrum.mean() == pytest.approx(expected_variance, rel=0.05)


def test_coloured_noise_spectrum_follows_the_filter():
    rng = np.random.default_rng(0)
    signal = ndimage.gaussian_filter(rng.normal(size=(512, 512)), 8) * 50
    kernel_sigma = 1.0
    halves = [signal + ndimage.gaussian_filter(rng.normal(size=(512, 512)), kernel_sigma, mode="wrap")
              for _ in range(2)]
    estimate = estimate_noise(*halves, tile=64)
    frequencies, power = estimate.radial_profile()
    # Unit white noise through a Gaussian filter: power |H(k)|^2 = exp(-(2 pi sigma k)^2).
    expected = np.exp(-((2 * math.pi * kernel_sigma * frequencies) ** 2))
    np.testing.assert_allclose(power[2:20], expected[2:20], rtol=0.2)
    assert power[25] < 0.05 * power[2]


def test_halves_of_different_shapes_are_refused():
    with pytest.raises(ValueError, match="one shape"):
        estimate_noise(np.zeros((8, 8)), np.zeros((8, 9)))


def test_neighbour_subsampling_takes_two_different_pixels_of_each_cell():
    image = np.arange(8 * 10, dtype=np.float32).reshape(8, 10)
    first, second = neighbour_subsample_pair(image, np.random.default_rng(1))
    assert first.shape == second.shape == (4, 5)
    for row in range(4):
        for col in range(5):
            cell = set(image[2 * row : 2 * row + 2, 2 * col : 2 * col + 2].ravel())
            assert first[row, col] in cell and second[row, col] in cell
            assert first[row, col] != second[row, col]


def test_neighbour_subsampled_noise_is_independent_and_signal_shared():
    rng = np.random.default_rng(3)
    signal = 50 + 400 * ndimage.gaussian_filter(rng.normal(size=(512, 512)), 6)
    counts = rng.poisson(np.clip(signal, 0, None)).astype(np.float32)
    first, second = neighbour_subsample_pair(counts, np.random.default_rng(4))
    cell_mean = signal.reshape(256, 2, 256, 2).mean(axis=(1, 3))
    noise_first, noise_second = first - cell_mean, second - cell_mean
    n = first.size
    # Up to the signal's variation inside a cell, the two noises are independent...
    assert abs(np.corrcoef(noise_first.ravel(), noise_second.ravel())[0, 1]) < 0.02 + 4 / math.sqrt(n)
    # ...while the two images share the signal.
    assert np.corrcoef(first.ravel(), second.ravel())[0, 1] > 0.5
