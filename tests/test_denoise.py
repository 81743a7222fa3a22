"""Denoising with a trained model: error against the truth, tiling, the CLI contract."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest

from cryoscore.cli import main
from cryoscore.errors import InputError
from cryoscore.infer.denoise import TrainedDenoiser, denoise_image, load_denoiser
from cryoscore.io.layout import DatasetLayout
from cryoscore.io.mrc import read_mrc
from cryoscore.nn.unet import UNetConfig
from cryoscore.pairs.halves import pairs_from_dataset
from cryoscore.simulate.dataset import SimulationConfig, write_dataset
from cryoscore.train import TrainConfig, train_model


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
    assert main(["denoise", inputs[0], "-o", str(tmp_path / "none")]) == 2
    assert "no default model" in capsys.readouterr().err
