"""Denoising with a trained model: error against the truth, tiling, the CLI contract."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest
import torch

from cryoscore.cli import main
from cryoscore.errors import InputError
from cryoscore.infer.denoise import TrainedDenoiser, denoise_image, load_denoiser, sample_image
from cryoscore.infer.sampler import SamplerConfig
from cryoscore.io.layout import DatasetLayout
from cryoscore.io.mrc import read_mrc
from cryoscore.nn.checkpoint import load_model
from cryoscore.pairs.halves import pairs_from_dataset
from cryoscore.settings import TrainConfig, UNetConfig
from cryoscore.simulate.dataset import SimulationConfig, write_dataset
from cryoscore.train import train_model


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small simulated dataset and n2n and score models trained on it for a few seconds."""
    root = tmp_path_factory.mktemp("denoise")
    layout = DatasetLayout(root / "data")
    write_dataset(SimulationConfig(n_micrographs=3, size_px=384, pixel_size_a=3.0, particles_per_micrograph=25,
                                   dose_e_per_a2=30.0, n_frames=8, seed=3), layout.root, progress=False)
    pairs = pairs_from_dataset(layout.root)
    models = {}
    for method in ("n2n", "score"):
        config = TrainConfig(method=method, steps=120, batch_size=4, crop_px=64,
                             unet=UNetConfig(base_channels=16, depth=2, input_unshuffle=2))
        models[method] = root / f"{method}.pt"
        train_model(pairs, config, models[method], progress=False)
    return layout, models


@pytest.mark.parametrize("method", ["n2n", "score"])
def test_a_trained_model_lowers_the_error_against_the_clean_image(trained, method):
    layout, models = trained
    name = layout.micrograph_names()[0]
    full = read_mrc(layout.micrograph(name))[0]
    truth = read_mrc(layout.clean(name))[0] + read_mrc(layout.background(name))[0]
    denoised = denoise_image(load_denoiser(models[method]), full, tile_px=128)
    raw_error, denoised_error = np.mean((full - truth) ** 2), np.mean((denoised - truth) ** 2)
    assert denoised_error < 0.2 * raw_error, (raw_error, denoised_error)
    even = read_mrc(layout.even(name))[0]
    denoised_half = denoise_image(load_denoiser(models[method]), even, halves_in_image=1)
    assert np.mean((denoised_half - truth / 2) ** 2) < 0.2 * np.mean((even - truth / 2) ** 2)


def test_tiled_denoising_equals_whole_image_denoising(trained):
    layout, models = trained
    image = read_mrc(layout.micrograph(layout.micrograph_names()[1]))[0][:301, :357]
    denoiser = load_denoiser(models["score"])
    whole = denoise_image(denoiser, image, tile_px=4096)
    tiled = denoise_image(denoiser, image, tile_px=96, batch_size=3)
    np.testing.assert_allclose(tiled, whole, atol=1e-4 * np.abs(whole).max())


def test_inference_runs_channels_last_and_matches_the_default_layout(trained):
    """load_denoiser keeps the weights NHWC (the fast oneDNN kernels); the output is that of
    the network as saved (NCHW) to float round-off."""
    layout, models = trained
    denoiser = load_denoiser(models["score"])
    assert denoiser.model.net.stem.weight.is_contiguous(memory_format=torch.channels_last)
    saved, _ = load_model(models["score"])
    batch, sigma = torch.randn(2, 1, 128, 96, generator=torch.Generator().manual_seed(0)), torch.tensor([1.0, 3.0])
    with torch.inference_mode():
        fast = denoiser.model(batch.contiguous(memory_format=torch.channels_last), sigma)
        reference = saved(batch, sigma)
    assert not saved.net.stem.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5 * reference.abs().max().item())


def test_bf16_mixed_precision_stays_close_to_fp32(trained):
    """The GPU default (bf16 autocast), exercised on the CPU: 8 mantissa bits change the
    output at the per-mille level, not the denoising."""
    layout, models = trained
    name = layout.micrograph_names()[0]
    image = read_mrc(layout.micrograph(name))[0]
    truth = read_mrc(layout.clean(name))[0] + read_mrc(layout.background(name))[0]
    full = denoise_image(load_denoiser(models["score"]), image)
    mixed = denoise_image(load_denoiser(models["score"], precision="bf16"), image, tile_px=128, batch_size=4)
    assert mixed.dtype == np.float32 and not np.array_equal(mixed, full)
    assert np.sqrt(np.mean((mixed - full) ** 2)) < 0.02 * full.std()
    assert np.mean((mixed - truth) ** 2) < 0.2 * np.mean((image - truth) ** 2)
    with pytest.raises(InputError, match="--precision"):
        load_denoiser(models["score"], precision="int8")


def test_a_model_with_another_normalisation_is_refused(trained):
    _, models = trained
    denoiser = load_denoiser(models["n2n"])
    with pytest.raises(InputError, match="normalised"):
        TrainedDenoiser(denoiser.model, {**denoiser.metadata, "normalisation": "other"}, "m.pt")


def test_cli_denoise_keeps_names_and_pixel_size(trained, tmp_path, capsys):
    layout, models = trained
    inputs = [str(layout.micrograph(name)) for name in layout.micrograph_names()]
    assert main(["denoise", *inputs, "-o", str(tmp_path / "out"), "--model", str(models["score"]), "--float16"]) == 0
    for name in layout.micrograph_names():
        with mrcfile.open(tmp_path / "out" / f"{name}.mrc") as written:
            assert written.header.mode == 12 and written.data.shape == (384, 384)
            assert written.voxel_size.x == pytest.approx(3.0)
    assert main(["denoise", inputs[0], "-o", str(tmp_path / "lp"), "--lowpass", "20"]) == 0
    lowpassed = read_mrc(tmp_path / "lp" / "mic_0000.mrc")[0]
    truth = read_mrc(layout.clean("mic_0000"))[0] + read_mrc(layout.background("mic_0000"))[0]
    raw = read_mrc(inputs[0])[0]
    assert np.mean((lowpassed - truth) ** 2) < 0.5 * np.mean((raw - truth) ** 2)
    assert main(["denoise", inputs[0], "-o", str(tmp_path / "both"), "--lowpass", "20",
                 "--model", str(models["score"])]) == 2
    assert "not both" in capsys.readouterr().err


def test_sampler_writes_a_mean_and_a_std_map_and_is_reproducible(trained, tmp_path):
    layout, models = trained
    source = str(layout.micrograph("mic_0000"))
    for run in ("a", "b"):
        assert main(["denoise", source, "-o", str(tmp_path / run), "--model", str(models["score"]),
                     "--uncertainty", "3", "--steps", "2", "--tile", "256"]) == 0
    mean, std = read_mrc(tmp_path / "a" / "mic_0000.mrc")[0], read_mrc(tmp_path / "a" / "mic_0000_std.mrc")[0]
    np.testing.assert_array_equal(mean, read_mrc(tmp_path / "b" / "mic_0000.mrc")[0])
    truth = read_mrc(layout.clean("mic_0000"))[0] + read_mrc(layout.background("mic_0000"))[0]
    raw = read_mrc(source)[0]
    assert np.mean((mean - truth) ** 2) < 0.2 * np.mean((raw - truth) ** 2)
    assert np.all(std >= 0) and np.median(std) > 0
    assert np.median(std) < raw.std()  # the samples agree far better than the input agrees with the truth


def test_the_uncertainty_map_is_larger_where_the_input_is_noisier(trained):
    layout, models = trained
    denoiser = load_denoiser(models["score"])
    full = read_mrc(layout.micrograph("mic_0001"))[0].astype(np.float64)
    extra = np.random.default_rng(0).normal(scale=np.sqrt(full.mean()), size=full.shape)  # +50% noise variance
    extra[:, : full.shape[1] // 2] = 0  # only on the right half
    sampler = SamplerConfig(name="sde", steps=2, samples=6, seed=1)
    _, std = sample_image(denoiser, (full + extra).astype(np.float32), sampler)
    left, right = np.median(std[:, 32:160]), np.median(std[:, 224:352])
    assert right > 1.1 * left, (left, right)


def test_a_single_level_n2n_model_cannot_sample(trained, tmp_path, capsys):
    layout, models = trained
    assert main(["denoise", str(layout.micrograph("mic_0000")), "-o", str(tmp_path / "o"),
                 "--model", str(models["n2n"]), "--uncertainty", "2"]) == 2
    assert "cannot sample" in capsys.readouterr().err
