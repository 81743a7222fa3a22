"""The low-pass baseline: its cut-off sits where asked, in Angstrom."""

from __future__ import annotations

import numpy as np
import pytest

from cryoscore.errors import InputError
from cryoscore.filters import lowpass_filter, lowpass_filter_nonperiodic


def _wave(period_a: float, pixel_size_a: float, size: int = 256) -> np.ndarray:
    cols = np.arange(size) * pixel_size_a
    return np.tile(np.cos(2 * np.pi * cols / period_a), (size, 1)) + 5.0


@pytest.mark.parametrize("kind", ["gaussian", "butterworth"])
def test_cutoff_in_angstrom(kind):
    pixel_size, cutoff = 2.0, 20.0
    size = 256
    # Periods that fit the image exactly: 512 A / n.
    for period, low, high in ((512 / 4, 0.97, 1.0), (512 / 25.6, 0.70, 0.72), (512 / 64, 0.0, 0.35)):
        out = lowpass_filter(_wave(period, pixel_size, size), pixel_size, cutoff, kind=kind)
        amplitude = (out.max() - out.min()) / 2
        assert low <= amplitude <= high, (kind, period, amplitude)
        assert out.mean() == pytest.approx(5.0, abs=1e-4)
    # Butterworth is flatter in the pass band and steeper beyond the cut-off than Gaussian.
    far = 512 / 40
    amplitudes = {
        name: np.ptp(lowpass_filter(_wave(far, pixel_size, size), pixel_size, cutoff, kind=name)) / 2
        for name in ("gaussian", "butterworth")
    }
    assert amplitudes["butterworth"] < 0.05 < amplitudes["gaussian"]


def test_lowpass_reduces_white_noise_by_the_passed_bandwidth():
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(512, 512)).astype(np.float32)
    out = lowpass_filter(noise, 1.0, 8.0, kind="butterworth", order=16)
    # Fraction of the 2D frequency square inside |k| < 1/8: pi (1/8)^2.
    assert out.var() == pytest.approx(np.pi / 64, rel=0.1)


def test_bad_cutoff_and_kind_are_input_errors():
    with pytest.raises(InputError, match="Nyquist"):
        lowpass_filter(np.zeros((8, 8)), 2.0, 3.0)
    with pytest.raises(InputError, match="unknown filter"):
        lowpass_filter(np.zeros((8, 8)), 2.0, 30.0, kind="box")


def test_the_nonperiodic_low_pass_keeps_a_gradient_that_does_not_wrap_around():
    rows, cols = np.mgrid[:128, :128]
    gradient = 0.1 * cols.astype(np.float32)  # jumps by 12.7 where the image wraps around
    plain = lowpass_filter(gradient, 2.0, 40.0)
    kept = lowpass_filter_nonperiodic(gradient, 2.0, 40.0)
    assert np.abs(plain - gradient)[:, [0, -1]].min() > 3  # the plain low-pass smears the jump into both borders
    assert np.abs(kept - gradient).max() < 0.05
    noise = np.random.default_rng(0).normal(size=(128, 128)).astype(np.float32)
    assert np.allclose(lowpass_filter_nonperiodic(noise + gradient, 2.0, 40.0) - kept,
                       lowpass_filter_nonperiodic(noise, 2.0, 40.0), atol=1e-4)  # linear
    assert lowpass_filter_nonperiodic(noise, 2.0, 40.0).std() < 0.2 * noise.std()
