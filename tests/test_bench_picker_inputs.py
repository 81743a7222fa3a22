"""The picker-input diagnostic: a high-pass removes a background and keeps particles; the blend is standardised."""

from __future__ import annotations

import numpy as np
import pytest


def test_highpass_removes_a_background_ramp_and_keeps_a_particle(benchmarks_on_path):
    from bench_picker_inputs import picker_inputs

    pixel_a, diameter_a = 3.0, 60.0  # a particle of 20 px
    rows, columns = np.mgrid[:128, :128]
    particle = -np.exp(-((rows - 64) ** 2 + (columns - 64) ** 2) / (2 * 5.0**2))
    ramp = 0.05 * columns  # a background 6 times the particle's depth across the image
    inputs = picker_inputs(["raw", "raw-highpass"], [ramp + particle], pixel_a, diameter_a)
    (raw,), (highpassed,) = inputs["raw"], inputs["raw-highpass"]
    assert raw is not highpassed and np.array_equal(raw, ramp + particle)
    inner = (slice(32, 96), slice(32, 96))  # away from the edges, where the blur sees the image's end
    assert np.ptp((highpassed - particle)[inner]) < 0.2 * np.ptp(particle)  # the ramp is gone
    assert highpassed[64, 64] == pytest.approx(particle[64, 64], abs=0.35)  # the particle is kept


def test_blend_is_the_mean_of_the_standardised_default_output_and_low_pass(benchmarks_on_path):
    from bench_picker_inputs import picker_inputs

    image = np.random.default_rng(0).normal(100.0, 10.0, size=(96, 96))
    inputs = picker_inputs(["default", "lowpass", "blend"], [image], 3.0, 60.0)
    (denoised,), (smoothed,), (blend,) = inputs["default"], inputs["lowpass"], inputs["blend"]
    expected = 0.5 * (denoised - denoised.mean()) / denoised.std() + 0.5 * (smoothed - smoothed.mean()) / smoothed.std()
    np.testing.assert_allclose(blend, expected, rtol=1e-6, atol=1e-6)
    assert abs(blend.mean()) < 1e-4 and blend.std() <= 1.0 + 1e-4  # float32 outputs
