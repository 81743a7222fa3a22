"""The single-image-pair diagnostics' own estimators: Poisson gain and offset, the blind noise spectrum, Anscombe."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage


def _scaled_poisson(rng: np.random.Generator, gain: float, offset: float) -> tuple[np.ndarray, np.ndarray]:
    """Counts of about 20 per pixel under dark blobs and a slow ramp, scaled as a camera's rescaled
    output; returns the image and the expected counts."""
    rows, cols = np.mgrid[:512, :512]
    blobs = np.zeros((512, 512))
    blobs[rng.integers(0, 512, 40), rng.integers(0, 512, 40)] = 1.0
    expected = 20.0 * (1 + 0.1 * rows / 512) - 300.0 * ndimage.gaussian_filter(blobs, 6.0)
    return gain * rng.poisson(expected) + offset, expected


def test_poisson_gain_and_offset_are_read_from_the_noise(benchmarks_on_path):
    """A camera's linear rescaling of Poisson counts is recovered from the noise's variance and
    third cumulant, with particles and a ramp in the image, and Anscombe's transform then gives
    noise of unit variance and half the skew (at 20 counts it leaves -0.09, as on the real
    micrographs); Gaussian noise has no third cumulant to read."""
    from bench_single_image_pairs import anscombe, high_passed_z, inverse_anscombe, poisson_gain_offset

    rng = np.random.default_rng(0)
    image, expected = _scaled_poisson(rng, gain=1500.0, offset=-4000.0)
    gain, offset, counts = poisson_gain_offset(image)
    assert gain == pytest.approx(1500.0, rel=0.05)
    assert counts == pytest.approx(expected.mean(), rel=0.05)
    assert offset == pytest.approx(-4000.0, abs=0.05 * 1500 * expected.mean())
    raw_skew = np.mean(high_passed_z(image) ** 3)
    transformed = anscombe(image, gain, offset)
    assert raw_skew > 0.15 and abs(np.mean(high_passed_z(transformed) ** 3)) < 0.6 * raw_skew
    noise = transformed - anscombe(gain * expected + offset, gain, offset)
    assert np.std(noise) == pytest.approx(1.0, rel=0.05)
    # the inverse of the transformed mean (what a denoiser estimates) is the expected image, unbiased
    flat = 1500.0 * rng.poisson(20.0, (512, 512)) - 4000.0
    assert inverse_anscombe(anscombe(flat, 1500.0, -4000.0).mean(), 1500.0, -4000.0) == pytest.approx(
        1500.0 * 20 - 4000.0, rel=2e-3)
    assert abs(poisson_gain_offset(rng.normal(0.0, 5.0, (512, 512)))[0]) < 0.2  # no skew, no gain to speak of


def test_the_blind_noise_spectrum_finds_the_colour_under_particles(benchmarks_on_path):
    """Noise whose power falls by half from middle frequencies to Nyquist, under strong blobs that
    cover part of the image: the median over tiles gives the noise's density (within 5 % from
    0.125 cycles/px up), and a recorrupted pair drawn with it shares no noise there, where a white
    one at the finest frequencies' level shares a fifth of it."""
    from bench_single_image_pairs import TILE_PX, blind_noise_spectrum, coloured_noise

    rng = np.random.default_rng(1)
    rings = np.arange(TILE_PX // 2 + 1) / TILE_PX
    truth = 4.0 * (1 - 2 * rings**2)
    noise = coloured_noise((512, 512), truth, rng)
    blobs = np.zeros((512, 512))
    blobs[rng.integers(0, 512, 50), rng.integers(0, 512, 50)] = 1.0
    image = noise + 60.0 * ndimage.gaussian_filter(blobs, 5.0)
    estimate = blind_noise_spectrum(image)
    measured = rings >= 0.125
    np.testing.assert_allclose(estimate[measured], truth[measured], rtol=0.05)

    k = np.hypot(*np.meshgrid(np.fft.fftfreq(512), np.fft.rfftfreq(512), indexing="ij"))
    band = (k >= 0.125) & (k < 0.25)

    def shared_fraction(extra: np.ndarray) -> float:
        """Cross power of the pair ``noise +- extra`` in ``band``, relative to the noise's power there."""
        shared = (np.fft.rfft2(noise + extra) * np.conj(np.fft.rfft2(noise - extra))).real[band].mean()
        return shared / (np.abs(np.fft.rfft2(noise)) ** 2)[band].mean()

    assert abs(shared_fraction(coloured_noise((512, 512), estimate, rng))) < 0.05
    assert shared_fraction(rng.normal(0.0, np.sqrt(truth[-4:].mean()), (512, 512))) > 0.15
