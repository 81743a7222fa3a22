"""The background-power diagnostic: white noise reads 1 in every band; ice-like variation only in the longest."""

from __future__ import annotations

import numpy as np
import pytest

from cryoscore.simulate.background import BackgroundParams, _power_law_field


def test_white_noise_reads_one_and_ice_raises_only_the_longest_band(benchmarks_on_path):
    from bench_background_power import band_powers

    rng = np.random.default_rng(0)
    pixel_a = 2.0
    noise = rng.normal(size=(1024, 1024))
    longest, *others = band_powers(noise, pixel_a).values()
    assert longest == pytest.approx(1.0, abs=0.4)  # about 70 coefficients: a standard error of 0.12
    assert all(value == pytest.approx(1.0, abs=0.15) for value in others), others
    params = BackgroundParams()
    ice = _power_law_field(rng, noise.shape, params.spectral_exponent, params.shortest_wavelength_a / pixel_a).numpy()
    with_ice = band_powers(noise + 0.3 * ice / ice.std(), pixel_a)
    longest, *others = with_ice.values()
    assert longest > 20, with_ice
    assert all(value == pytest.approx(1.0, abs=0.15) for value in others), with_ice
