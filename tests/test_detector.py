"""The simulated counting detector: its MTF, double counting and the noise correlation it makes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cryoscore.simulate.detector import COUNTING, IDEAL, DetectorParams, apply_mtf, expected_counts, sample_counts


def _neighbour_covariances(counts: np.ndarray) -> tuple[float, float, float]:
    """Variance, covariance with the right-hand neighbour and with the diagonal one (periodic)."""
    centred = counts - counts.mean()
    return (float((centred * centred).mean()), float((centred * np.roll(centred, 1, axis=1)).mean()),
            float((centred * np.roll(np.roll(centred, 1, axis=0), 1, axis=1)).mean()))


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.3])
def test_double_counting_correlates_edge_neighbours_as_documented(fraction):
    electrons = 5.0
    detector = DetectorParams(double_count_fraction=fraction)
    counts = sample_counts(torch.full((512, 512), electrons), detector, torch.Generator().manual_seed(1)).numpy()
    variance, edge, diagonal = _neighbour_covariances(counts)
    assert counts.mean() == pytest.approx(electrons * (1 + fraction), rel=0.01)
    assert variance == pytest.approx(electrons * (1 + fraction), rel=0.02)
    assert edge == pytest.approx(electrons * fraction / 2, abs=0.04)  # standard error about 0.011
    assert diagonal == pytest.approx(0.0, abs=0.04)
    assert np.array_equal(counts, np.round(counts))  # counts stay integers


def test_the_expected_counts_are_the_mean_of_the_sampled_ones():
    electrons = torch.zeros(16, 16)
    electrons[4:12, 6:10] = 3.0
    electrons += 1.0
    generator = torch.Generator().manual_seed(0)
    mean = sum(sample_counts(electrons, COUNTING, generator) for _ in range(4000)) / 4000
    expected = expected_counts(electrons, COUNTING)
    np.testing.assert_allclose(mean.numpy(), expected.numpy(), atol=0.08)
    assert float(expected.sum()) == pytest.approx(float(electrons.sum()) * (1 + COUNTING.double_count_fraction), rel=1e-5)


@pytest.mark.parametrize("frequency", [0.125, 0.25, 0.5])
def test_the_mtf_attenuates_a_cosine_by_the_aperture_and_localisation_blur(frequency):
    columns = torch.arange(64, dtype=torch.float32)
    image = (10 + torch.cos(2 * math.pi * frequency * columns)).expand(32, 64).clone()
    passed = apply_mtf(image, COUNTING).numpy()
    expected = np.sinc(frequency) * math.exp(-2 * math.pi**2 * COUNTING.localisation_px**2 * frequency**2)
    np.testing.assert_allclose(passed - 10, expected * (image.numpy() - 10), atol=1e-5)
    assert np.sinc(0.5) * math.exp(-2 * math.pi**2 * 0.04 * 0.25) == pytest.approx(0.52, abs=0.01)  # at Nyquist


def test_the_ideal_detector_is_plain_poisson_counting():
    electrons = torch.rand(32, 32) * 4
    assert apply_mtf(electrons, IDEAL) is electrons and expected_counts(electrons, IDEAL) is electrons
    ideal = sample_counts(electrons, IDEAL, torch.Generator().manual_seed(3))
    np.testing.assert_array_equal(ideal.numpy(), torch.poisson(electrons, generator=torch.Generator().manual_seed(3)).numpy())


@pytest.mark.parametrize("kwargs", [{"localisation_px": -0.1}, {"double_count_fraction": 1.5},
                                    {"localisation_px": float("nan")}])
def test_bad_detector_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match="detector"):
        DetectorParams(**kwargs)


def test_a_dataset_from_a_counting_camera_has_its_noise_correlation_and_truth(tmp_path):
    from cryoscore.io.mrc import read_mrc
    from cryoscore.simulate.dataset import SimulationConfig, write_dataset

    config = SimulationConfig(specimen="small", n_micrographs=1, size_px=256, pixel_size_a=2.0,
                              particles_per_micrograph=10, dose_e_per_a2=40.0, n_frames=4, detector=COUNTING, seed=2)
    write_dataset(config, tmp_path, progress=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["config"]["detector"] == {"pixel_aperture": True, "localisation_px": 0.2,
                                              "double_count_fraction": 0.1}
    micrograph, clean, background = (read_mrc(tmp_path / kind / "mic_0000.mrc")[0] for kind in
                                     ("micrographs", "clean", "background"))
    noise = micrograph - clean - background  # the truth is the expected recorded image
    variance, edge, diagonal = _neighbour_covariances(noise)
    assert abs(noise.mean()) < 0.05 * math.sqrt(variance)
    expected = (clean + background).mean()  # counts per pixel, (1 + p) per electron
    assert variance == pytest.approx(expected, rel=0.05)
    assert edge / variance == pytest.approx(0.1 / 2 / 1.1, abs=0.015) and abs(diagonal / variance) < 0.015
