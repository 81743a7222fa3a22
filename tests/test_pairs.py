"""Noise measured from halves, and pairs made from a single micrograph."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from cryoscore.errors import InputError
from cryoscore.io.movie import write_movie
from cryoscore.pairs.crops import dihedral, random_crop_pairs
from cryoscore.pairs.halves import HalfPair, pairs_from_dataset, pairs_from_directories, pairs_from_movies
from cryoscore.pairs.noise import estimate_noise, spectral_noise_sigma
from cryoscore.pairs.normalise import (
    normalisation_for_image,
    normalise_pair,
    relative_noise_map,
    signal_std,
)
from cryoscore.pairs.single import neighbour_subsample_pair, recorrupted_pair
from cryoscore.simulate.dataset import SimulationConfig, render_truth, sample_halves, write_dataset
from cryoscore.simulate.procedural import builtin_specimen


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


def test_recorrupted_pair_has_the_statistics_of_even_odd_halves():
    """A pair made from one full sum behaves like the true halves of that sum: the grid kept,
    its mean the sum itself, noises uncorrelated with twice the sum's variance (as the training
    normalisation measures it), and the signal shared (covariance four times the halves')."""
    config = SimulationConfig(n_micrographs=1, size_px=384, pixel_size_a=2.0, particles_per_micrograph=12,
                              dose_e_per_a2=30.0, seed=5)
    truth = render_truth(config, builtin_specimen("apoferritin", 2.0), 0)
    even, odd = (half.numpy().astype(np.float64) for half in sample_halves(truth))
    full_sum = even + odd
    first, second = recorrupted_pair(full_sum, np.random.default_rng(0))
    assert first.shape == second.shape == full_sum.shape and first.dtype == np.float32
    np.testing.assert_allclose((first + second) / 2, full_sum, rtol=1e-5)
    sum_sigma = math.sqrt(2) * estimate_noise(even, odd).sigma_half  # two halves' noise adds up
    assert estimate_noise(first, second).sigma_half == pytest.approx(math.sqrt(2) * sum_sigma, rel=0.05)
    assert abs(np.corrcoef((first - second).ravel(), (even - odd).ravel())[0, 1]) < 0.02
    # cov(y + z, y - z) = var(y) - var(z): the signal's variance (four times the halves'
    # covariance) plus whatever noise the estimate of the level missed (shared by both, kept).
    shared = np.mean((first - first.mean()) * (second - second.mean()))
    halves_shared = np.mean((even - even.mean()) * (odd - odd.mean()))
    missed_noise = sum_sigma**2 - spectral_noise_sigma(full_sum) ** 2
    assert 0 <= missed_noise < 0.1 * sum_sigma**2
    assert shared - missed_noise == pytest.approx(4 * halves_shared, rel=0.1)



def test_a_weaker_recorruption_moves_the_noise_to_the_target():
    """With ``alpha`` the first image carries ``alpha z`` and the second ``-z / alpha``: for white
    noise of std 1, extra variances alpha^2 and 1 / alpha^2, and no correlation between the two noises."""
    image = np.random.default_rng(1).normal(size=(512, 512))
    first, second = recorrupted_pair(image, np.random.default_rng(2), alpha=0.5)
    first_extra, second_extra = first - image, second - image
    assert np.var(first_extra) == pytest.approx(0.25 * spectral_noise_sigma(image) ** 2, rel=0.02)
    assert np.var(second_extra) == pytest.approx(4.0 * spectral_noise_sigma(image) ** 2, rel=0.02)
    np.testing.assert_allclose(second_extra, -4.0 * first_extra, rtol=1e-4, atol=1e-4)
    assert abs(np.corrcoef(first.ravel(), second.ravel())[0, 1]) < 0.02  # image's noise + alpha z against image's - z / alpha

def test_pairs_from_a_simulated_dataset_and_from_folders(tmp_path):
    config = SimulationConfig(n_micrographs=2, size_px=128, pixel_size_a=4.0, particles_per_micrograph=3, n_frames=4)
    write_dataset(config, tmp_path / "data", progress=False)
    pairs = pairs_from_dataset(tmp_path / "data")
    assert [pair.name for pair in pairs] == ["mic_0000", "mic_0001"]
    assert pairs[0].pixel_size_a == 4.0 and pairs[0].even.shape == (128, 128)
    assert not np.array_equal(pairs[0].even, pairs[0].odd)
    from_folders = pairs_from_directories(tmp_path / "data" / "even", tmp_path / "data" / "odd")
    np.testing.assert_array_equal(from_folders[1].odd, pairs[1].odd)
    (tmp_path / "data" / "odd" / "mic_0001.mrc").unlink()
    with pytest.raises(InputError, match="without a partner half"):
        pairs_from_directories(tmp_path / "data" / "even", tmp_path / "data" / "odd")
    with pytest.raises(InputError, match="not a dataset directory"):
        pairs_from_dataset(tmp_path)


def test_pairs_from_movies_sum_frames_by_parity(tmp_path):
    frames = np.random.default_rng(0).poisson(3.0, size=(6, 32, 48)).astype(np.float32)
    write_movie(tmp_path / "movie.tif", iter(frames), 1.2, n_frames=6)
    (pair,) = pairs_from_movies([tmp_path / "movie.tif"], pixel_size_a=1.2)
    np.testing.assert_array_equal(pair.even, frames[0::2].sum(0))
    np.testing.assert_array_equal(pair.odd, frames[1::2].sum(0))


def test_crops_match_between_halves_with_the_same_augmentation():
    rng = np.random.default_rng(5)
    even = rng.normal(size=(64, 80)).astype(np.float32)
    pair = HalfPair("m", even, even + 10.0, 1.0)  # odd = even + 10: any mismatch would show
    sources, targets = random_crop_pairs([pair], 16, 400, np.random.default_rng(6))
    assert sources.shape == targets.shape == (400, 1, 16, 16)
    difference = targets - sources
    per_crop = difference.reshape(400, -1)
    assert np.all(np.abs(per_crop - per_crop[:, :1]) < 1e-5)  # same region, same transform
    swapped = per_crop[:, 0] < 0
    assert 0.4 < swapped.mean() < 0.6  # the source half is random
    # The 8 symmetries of the square are distinct.
    image = np.arange(16).reshape(4, 4)
    assert len({dihedral(image, t).tobytes() for t in range(8)}) == 8


def test_noise_units_make_half_noise_one_and_full_sums_consistent():
    config = SimulationConfig(size_px=256, pixel_size_a=3.0, particles_per_micrograph=10, dose_e_per_a2=30.0,
                              n_frames=10, seed=4)
    truth = render_truth(config, builtin_specimen("apoferritin", 3.0), 0)
    even, odd = (half.numpy() for half in sample_halves(truth))
    pair = normalise_pair(HalfPair("m", even, odd, 3.0))
    assert estimate_noise(pair.even, pair.odd).sigma_half == pytest.approx(1.0, rel=1e-6)
    # The self-estimate from neighbouring pixels agrees with the even-odd measurement...
    sigma_half = estimate_noise(even, odd).sigma_half
    assert spectral_noise_sigma(even) == pytest.approx(sigma_half, rel=0.05)
    # ...and a full sum, normalised on its own, has the half's signal scale and noise 1/sqrt(2).
    full = even + odd
    normalisation = normalisation_for_image(full, halves_in_image=2)
    assert normalisation.noise_sigma == pytest.approx(1 / math.sqrt(2))
    assert normalisation.scale == pytest.approx(2 * sigma_half, rel=0.05)
    np.testing.assert_allclose(normalisation.invert(normalisation.apply(full)), full, rtol=1e-5)
    assert 0.05 <= signal_std([pair]) < 2


def test_relative_noise_map_follows_the_local_noise_level():
    rng = np.random.default_rng(2)
    image = rng.normal(scale=1.0, size=(256, 256))
    image[:, 128:] *= 2.0  # the right half twice as noisy
    noise_map = relative_noise_map(image, window_px=32)
    assert noise_map.shape == image.shape
    left, right = np.median(noise_map[:, 16:112]), np.median(noise_map[:, 144:240])
    assert right / left == pytest.approx(2.0, rel=0.1)
    assert np.sqrt(np.mean(noise_map**2)) == pytest.approx(1.0, rel=0.05)
