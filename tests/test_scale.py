"""Fourier resampling, the single-image noise estimate, and models working at their own pixel size."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from scipy import ndimage

from cryoscore.filters import bilinear_resample, fourier_resample, periodic_smooth_decomposition
from cryoscore.infer.denoise import denoise_image, load_denoiser
from cryoscore.io.mrc import read_mrc
from cryoscore.pairs.halves import HalfPair
from cryoscore.pairs.noise import spectral_noise_sigma
from cryoscore.pairs.scale import rescale_pair, working_shape
from cryoscore.settings import TrainConfig, UNetConfig
from cryoscore.train import train_model


def test_fourier_resample_keeps_white_noise_white_and_scales_its_variance():
    noise = np.random.default_rng(0).normal(size=(600, 620)).astype(np.float32)
    small = fourier_resample(noise, (300, 310))
    assert small.var() == pytest.approx(0.25, rel=0.03)
    spectrum = np.abs(np.fft.rfft2(small)) ** 2
    rows = np.abs(np.fft.fftfreq(300))[:, None]
    assert spectrum[rows[:, 0] > 0.3].mean() == pytest.approx(spectrum[rows[:, 0] < 0.2].mean(), rel=0.05)


def test_fourier_resample_keeps_what_lies_below_nyquist_and_aligns_first_pixels():
    rows, cols = np.mgrid[:480, :500]
    wave = np.sin(2 * np.pi * (rows / 37.0 + cols / 23.0)).astype(np.float32)
    half = fourier_resample(wave, (240, 250))
    r2, c2 = np.mgrid[:240, :250] * 2
    assert np.abs(half - np.sin(2 * np.pi * (r2 / 37.0 + c2 / 23.0)))[16:-16, 16:-16].max() < 0.01
    assert np.abs(fourier_resample(half, (480, 500)) - wave)[32:-32, 32:-32].max() < 0.01


def test_fourier_resample_keeps_constants_and_positions():
    assert np.allclose(fourier_resample(np.full((60, 50), 3.0), (24, 20)), 3.0, atol=1e-5)
    # A smooth blob at original pixel (30, 20) lands at working pixel (30, 20) * 24 / 60.
    rows, cols = np.mgrid[:60, :50]
    blob = np.exp(-((rows - 30) ** 2 + (cols - 20) ** 2) / (2 * 4.0**2))
    small = fourier_resample(blob, (24, 20))
    assert np.unravel_index(np.argmax(small), small.shape) == (12, 8)
    assert small.sum() * (60 * 50) / (24 * 20) == pytest.approx(blob.sum(), rel=1e-3)


def test_fourier_resample_of_a_gradient_does_not_ring_at_the_edges():
    rows, cols = np.mgrid[:400, :300].astype(np.float32)
    ramp = 0.05 * rows + 0.02 * cols
    half = fourier_resample(ramp, (200, 150))
    r2, c2 = np.mgrid[:200, :150] * 2
    assert np.abs(half - (0.05 * r2 + 0.02 * c2)).max() < 0.02  # the ramp spans 26
    periodic, smooth = periodic_smooth_decomposition(ramp)
    np.testing.assert_allclose(periodic + smooth, ramp, atol=1e-4)


@pytest.mark.parametrize("shape", [(200, 150), (480, 500), (401, 97)])
def test_the_smooth_part_is_resampled_as_bilinear_interpolation_with_nearest_edges(shape):
    surface = np.random.default_rng(3).normal(size=(240, 250)).astype(np.float32)
    rows, cols = (np.arange(new) * (old / new) for old, new in zip(surface.shape, shape))
    expected = ndimage.map_coordinates(surface, np.meshgrid(rows, cols, indexing="ij"), order=1, mode="nearest")
    result = bilinear_resample(surface, shape)
    assert result.shape == shape and result.dtype == np.float32
    np.testing.assert_allclose(result, expected, atol=1e-5)


def test_spectral_noise_sigma_ignores_strong_signal_below_its_band():
    rng = np.random.default_rng(1)
    noise = rng.normal(scale=2.0, size=(512, 512))
    rows, cols = np.mgrid[:512, :512]
    # CTF-like rings of 5x the noise power at 0.1-0.25 cycles/px, and a slow gradient
    radius = np.hypot(rows - 256, cols - 256)
    signal = 6.0 * np.sin(2 * np.pi * 0.18 * radius) * np.exp(-radius / 300) + 0.05 * rows
    assert spectral_noise_sigma(noise + signal) == pytest.approx(2.0, rel=0.05)
    first_differences = np.diff(noise + signal, axis=1).std() / np.sqrt(2)
    assert first_differences > 1.15 * 2.0  # what a neighbour-difference estimate would have said


def test_working_shape_crops_only_finer_than_the_floor():
    assert working_shape((1200, 1240), 1.5, 3.0).shape == (600, 620)
    scale = working_shape((1000, 1000), 1.85, 3.0)
    assert scale.shape == (617, 617) and scale.pixel_size_a == pytest.approx(3.0, rel=0.002)
    assert working_shape((500, 500), 4.0, 3.0).shape == (500, 500)
    assert working_shape((500, 500), 1.0, None).shape == (500, 500)


def _pair(rng: np.random.Generator, size: int, pixel_size_a: float) -> HalfPair:
    signal = np.repeat(np.repeat(rng.normal(size=(size // 16, size // 16)), 16, 0), 16, 1) * 3
    return HalfPair(f"p{pixel_size_a}", (signal + rng.normal(size=signal.shape)).astype(np.float32),
                    (signal + rng.normal(size=signal.shape)).astype(np.float32), pixel_size_a)


def test_a_model_with_a_floor_trains_on_mixed_pixel_sizes_and_works_at_its_floor(tmp_path, caplog):
    rng = np.random.default_rng(2)
    pairs = [_pair(rng, 256, 1.5), _pair(rng, 192, 2.0), _pair(rng, 128, 4.0)]
    assert rescale_pair(pairs[0], 3.0).even.shape == (128, 128) and rescale_pair(pairs[2], 3.0) is pairs[2]
    unet = UNetConfig(base_channels=8, depth=2, max_channels=16)
    with pytest.raises(Exception, match="different pixel sizes"):
        train_model(pairs, TrainConfig(steps=2, batch_size=2, crop_px=64, unet=unet), tmp_path / "no.pt", progress=False)
    config = TrainConfig(steps=20, batch_size=2, crop_px=64, unet=unet, min_pixel_size_a=3.0)
    train_model(pairs, config, tmp_path / "m.pt", progress=False)
    denoiser = load_denoiser(tmp_path / "m.pt")
    assert denoiser.metadata["pixel_size_range_a"] == [3.0, 4.0] and denoiser.metadata["min_pixel_size_a"] == 3.0

    image = rng.normal(size=(300, 330)).astype(np.float32) + 100
    with caplog.at_level(logging.WARNING):
        out = denoise_image(denoiser, image, pixel_size_a=1.0)
    assert out.shape == image.shape and not caplog.records
    interior = (out - out.mean())[22:278, 37:293] * np.outer(np.hanning(256), np.hanning(256))
    spectrum = np.abs(np.fft.rfft2(interior)) ** 2
    # the working grid's spectrum is a square: its Nyquist bounds each axis (cycles/px at 1 A/px)
    frequency = np.maximum(np.abs(np.fft.fftfreq(256))[:, None], np.fft.rfftfreq(256)[None, :])
    above_floor_nyquist = frequency > 1 / 6 + 0.02
    assert spectrum[above_floor_nyquist].sum() < 1e-3 * spectrum.sum()

    with caplog.at_level(logging.WARNING):
        denoise_image(denoiser, image, pixel_size_a=9.0)
    assert "outside the pixel sizes" in caplog.text and "3-4 A/px" in caplog.text


def test_denoise_adapt_fine_tunes_the_model_on_the_inputs_and_reuses_it(tmp_path, capsys):
    from cryoscore.cli import main
    from cryoscore.io.mrc import write_mrc

    rng = np.random.default_rng(3)
    inputs = tmp_path / "mics"
    for index in range(2):
        pair = _pair(rng, 256, 1.5)
        write_mrc(inputs / f"m{index}.mrc", pair.even + pair.odd, 1.5)
    out = tmp_path / "out"
    assert main(["denoise", str(inputs), "-o", str(out), "--adapt", "4"]) == 0
    adapted = load_denoiser(out / "adapted.pt")
    assert adapted.metadata["initial_model"] == "the default model" and adapted.metadata["single_image_pairs"]
    assert adapted.metadata["min_pixel_size_a"] == load_denoiser().metadata["min_pixel_size_a"]
    check = adapted.metadata["adaptation"]
    assert check["held_out_fraction"] == 0.2 and check["kept"] == (check["adapted_loss"] < check["initial_loss"])
    default_weights, adapted_weights = load_denoiser().model.state_dict(), adapted.model.state_dict()
    changed = any(not np.allclose(default_weights[key], adapted_weights[key]) for key in default_weights)
    assert changed == check["kept"]
    assert sorted(path.name for path in out.glob("m*.mrc")) == ["m0.mrc", "m1.mrc"]
    assert "adapted the default model to 2 micrographs" in capsys.readouterr().err

    modified = (out / "adapted.pt").stat().st_mtime_ns
    assert main(["denoise", str(inputs), "-o", str(out), "--adapt", "4"]) == 0
    assert (out / "adapted.pt").stat().st_mtime_ns == modified
    assert "using the adapted model" in capsys.readouterr().err
    assert main(["denoise", str(inputs), "-o", str(tmp_path / "x"), "--adapt", "4", "--lowpass", "20"]) == 2


def test_an_adaptation_that_does_not_lower_the_held_out_loss_is_not_kept(tmp_path, caplog):
    """A learning rate far too high wrecks the weights; the held-out check sees it and the
    written model is the initial one, recording both losses."""
    from cryoscore.infer.adapt import AdaptSettings, adapt_denoiser
    from cryoscore.io.mrc import write_mrc

    rng = np.random.default_rng(4)
    paths = []
    for index in range(2):
        pair = _pair(rng, 256, 3.0)
        paths.append(tmp_path / f"m{index}.mrc")
        write_mrc(paths[-1], pair.even + pair.odd, 3.0)
    default = load_denoiser()
    with caplog.at_level(logging.WARNING):
        result = adapt_denoiser(default, paths, tmp_path / "adapted.pt",
                                AdaptSettings(steps=3, batch_size=2, crop_px=64, learning_rate=0.5), progress=False)
    assert not result.kept and result.adapted_loss > result.initial_loss
    assert "did not lower the held-out loss" in caplog.text
    written = load_denoiser(tmp_path / "adapted.pt")
    assert written.metadata["adaptation"]["kept"] is False
    for key, tensor in default.model.state_dict().items():
        assert torch.equal(tensor, written.model.state_dict()[key])


def _grid_peak_ratio(image: np.ndarray, period_px: float) -> float:
    """Largest power at the frequency of a ``period_px`` grid (along rows, columns or a
    diagonal) over the median power around it (13 x 13 frequency window without its centre),
    in a Hann-windowed 1024 px crop 64 px in from the edges."""
    crop = image[64:1088, 64:1088].astype(np.float64)
    power = np.abs(np.fft.fft2((crop - crop.mean()) * np.outer(np.hanning(1024), np.hanning(1024)))) ** 2
    index = round(1024 / period_px) % 1024
    ratios = []
    for row, col in [(0, index), (index, 0), (index, index), (index, -index)]:
        window = np.roll(power, (6 - row, 6 - col), axis=(0, 1))[:13, :13].copy()
        peak = window[5:8, 5:8].max()
        window[4:9, 4:9] = np.nan
        ratios.append(peak / np.nanmedian(window))
    return max(ratios)


def test_default_model_prints_no_grid_on_a_real_micrograph(apoferritin_dir):
    """The old default model's 4 x 4 pixel unshuffle printed a 4-pixel mesh: its output had
    2 x 10^4 times the neighbouring power at a period of 4 px (and 760 times at 2 px) on this
    micrograph, where the raw image has 5-8 (chance peaks of a 3 x 3 maximum). No grid of the
    micrograph (4 and 8 px) or of the model's working grid (its pooling periods, 4-16 working
    px) may show a peak now. Periods at or beyond the working grid's Nyquist limit are not
    checked: the output holds nothing there but window leakage."""
    path = sorted((apoferritin_dir / "micrographs").glob("*.mrc"))[0]
    image, pixel_size_a = read_mrc(path)
    denoised = denoise_image(load_denoiser(), image, pixel_size_a=pixel_size_a)
    working_px = load_denoiser().metadata["min_pixel_size_a"] / pixel_size_a
    periods = [period for period in [2.0, 4.0, 8.0] + [working_px * period for period in (2, 4, 8, 16)]
               if period > 2.2 * working_px]
    assert len(periods) >= 4
    for period in periods:
        ratio = _grid_peak_ratio(denoised, period)
        assert ratio < 20, f"a peak at a period of {period:.2f} px: {ratio:.0f} x its neighbourhood"
    assert max(_grid_peak_ratio(image, period) for period in (2.0, 4.0, 8.0)) < 20  # the test's own scale
