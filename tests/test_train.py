"""Training: the loss falls, runs are reproducible, resume continues exactly, config recorded."""

from __future__ import annotations

import json

import pytest
import torch

from cryoscore.errors import InputError
from cryoscore.nn.checkpoint import load_model
from cryoscore.pairs.halves import pairs_from_dataset
from cryoscore.pairs.normalise import NORMALISATION
from cryoscore.settings import GuidanceConfig, SettingError, TrainConfig, UNetConfig
from cryoscore.simulate.dataset import SimulationConfig, write_dataset
from cryoscore.train import TrainingDiverged, state_path, train_model

TINY_NET = UNetConfig(base_channels=16, depth=2, input_unshuffle=2)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    config = SimulationConfig(n_micrographs=3, size_px=256, pixel_size_a=3.0, particles_per_micrograph=12,
                              dose_e_per_a2=30.0, n_frames=8, seed=1)
    write_dataset(config, root, progress=False)
    return pairs_from_dataset(root)


def _config(**changes) -> TrainConfig:
    return TrainConfig(**{"steps": 40, "batch_size": 4, "crop_px": 64, "unet": TINY_NET, "checkpoint_every": 20,
                          **changes})


def _weights(path) -> dict[str, torch.Tensor]:
    return load_model(path)[0].state_dict()


@pytest.mark.parametrize("method", ["n2n", "score"])
def test_a_few_steps_lower_the_loss_and_record_the_config(tmp_path, pairs, method):
    result = train_model(pairs, _config(method=method, steps=60), tmp_path / "model.pt", progress=False,
                         extra={"command_line": ["cryoscore", "train"]})
    first, last = sum(result.losses[:10]) / 10, sum(result.losses[-10:]) / 10
    assert len(result.losses) == 60 and last < 0.97 * first
    recorded = json.loads((tmp_path / "model.json").read_text())["extra"]
    assert recorded["method"] == method and recorded["normalisation"] == NORMALISATION
    assert recorded["train_config"]["steps"] == 60 and recorded["training_pixel_size_a"] == 3.0
    assert recorded["command_line"] == ["cryoscore", "train"] and 0.05 <= recorded["sigma_data"] < 10


def test_same_seed_same_model_other_seed_other_model(tmp_path, pairs):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        train_model(pairs, _config(seed=seed, steps=10), tmp_path / f"{name}.pt", progress=False)
    a, b, c = (_weights(tmp_path / f"{name}.pt") for name in "abc")
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not all(torch.equal(a[key], c[key]) for key in a)


@pytest.mark.parametrize("half_life", [0.0, 8.0])
def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, pairs, half_life):
    whole = train_model(pairs, _config(steps=40, ema_half_life_steps=half_life), tmp_path / "whole.pt", progress=False)
    train_model(pairs, _config(steps=20, ema_half_life_steps=half_life), tmp_path / "parts.pt", progress=False)
    resumed = train_model(pairs, _config(steps=40, ema_half_life_steps=half_life), tmp_path / "parts.pt", resume=True,
                          progress=False)
    assert resumed.losses == pytest.approx(whole.losses, rel=1e-5)
    whole_weights, resumed_weights = _weights(tmp_path / "whole.pt"), _weights(tmp_path / "parts.pt")
    for key in whole_weights:
        torch.testing.assert_close(resumed_weights[key], whole_weights[key], rtol=1e-5, atol=1e-6)


def test_the_weight_average_halves_a_step_change_in_one_half_life():
    from cryoscore.train import WeightAverage

    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    average = WeightAverage(model, half_life_steps=20)
    for _ in range(2000):  # long past the warm-up: the average sits on the constant weights
        average.update(model)
    assert float(average.model.weight) == 0.0 and average.model.weight.requires_grad is False
    torch.nn.init.ones_(model.weight)
    for _ in range(20):
        average.update(model)
    assert float(average.model.weight) == pytest.approx(0.5, abs=1e-3)
    early = WeightAverage(torch.nn.Linear(1, 1, bias=False), half_life_steps=1000)
    early.model.weight.data.zero_()
    early.update(model)  # the first updates weigh the newest weights by 1 - (1 + n) / (10 + n)
    assert float(early.model.weight) == pytest.approx(0.9)


def test_gradient_clipping_bounds_what_a_step_can_change(tmp_path, pairs):
    """Adam divides by the gradient's running scale, so only a limit far below the gradients'
    norm shows in the weights: then the steps are lost in Adam's epsilon and nothing moves."""
    from cryoscore.train import _new_denoiser

    start = _new_denoiser(_config(), 1.0).state_dict()
    moved = {}
    for name, limit in (("free", None), ("clipped", 1e-12)):
        train_model(pairs, _config(steps=5, max_grad_norm=limit), tmp_path / f"{name}.pt", progress=False)
        weights = _weights(tmp_path / f"{name}.pt")
        moved[name] = max(float((weights[key] - start[key]).abs().max()) for key in start if "net." in key)
    assert moved["free"] > 1e-3 and moved["clipped"] < 1e-5
    with pytest.raises(ValueError, match="max_grad_norm: must be > 0"):
        _config(max_grad_norm=0.0)


def test_with_a_weight_average_the_saved_model_is_the_average(tmp_path, pairs):
    train_model(pairs, _config(steps=20, ema_half_life_steps=5.0), tmp_path / "m.pt", progress=False)
    state = torch.load(state_path(tmp_path / "m.pt"), weights_only=True)
    saved = _weights(tmp_path / "m.pt")
    assert all(torch.equal(saved[key], state["average"][key]) for key in saved)
    assert not all(torch.equal(saved[key], state["model"][key]) for key in saved)
    assert state["average_updates"] == 20


def test_resume_refuses_other_settings_and_crops_that_do_not_fit(tmp_path, pairs):
    train_model(pairs, _config(steps=5), tmp_path / "m.pt", progress=False)
    assert state_path(tmp_path / "m.pt").exists()
    with pytest.raises(InputError, match="other settings"):
        train_model(pairs, _config(steps=10, learning_rate=1e-3), tmp_path / "m.pt", resume=True, progress=False)
    with pytest.raises(InputError, match="--crop"):
        train_model(pairs, _config(crop_px=512), tmp_path / "big.pt", progress=False)


def test_guided_with_lambda_zero_is_exactly_score(tmp_path, pairs):
    train_model(pairs, _config(method="score", steps=8), tmp_path / "score.pt", progress=False)
    unguided = GuidanceConfig(reference="apoferritin", strength=0.0)
    train_model(pairs, _config(method="guided", guidance=unguided, steps=8), tmp_path / "guided.pt", progress=False)
    score, guided = _weights(tmp_path / "score.pt"), _weights(tmp_path / "guided.pt")
    assert all(torch.equal(score[key], guided[key]) for key in score)


def test_guided_training_lowers_the_loss_and_records_the_guidance(tmp_path, pairs):
    guidance = GuidanceConfig(reference="apoferritin", strength=1.0, resolution_a=25.0)
    result = train_model(pairs, _config(method="guided", guidance=guidance, steps=60), tmp_path / "g.pt",
                         progress=False)
    first, last = sum(result.losses[:10]) / 10, sum(result.losses[-10:]) / 10
    assert last < 0.97 * first
    recorded = json.loads((tmp_path / "g.json").read_text())["extra"]
    assert recorded["method"] == "guided" and recorded["guidance"]["strength"] == 1.0
    assert recorded["guidance"]["reference_name"] == "apoferritin" and recorded["guidance"]["fitted_amplitude"] > 0


def test_guidance_and_method_must_agree_and_errors_name_the_setting():
    with pytest.raises(SettingError, match=r"^TrainConfig\.guidance: the guided method needs a reference"):
        TrainConfig(method="guided")
    with pytest.raises(SettingError, match=r"^TrainConfig\.guidance:"):
        TrainConfig(method="score", guidance=GuidanceConfig(reference="apoferritin"))
    with pytest.raises(SettingError, match=r"^GuidanceConfig\.strength: must be >= 0") as error:
        GuidanceConfig(reference="apoferritin", strength=-1)
    assert error.value.field == "strength" and isinstance(error.value, ValueError)


def test_a_diverging_run_stops_with_a_clear_error_and_writes_no_model(tmp_path, pairs):
    with pytest.raises(TrainingDiverged, match="training diverged.*learning rate below 1e\\+06"):
        train_model(pairs, _config(steps=20, learning_rate=1e6), tmp_path / "model.pt", progress=False)
    assert not (tmp_path / "model.pt").exists()
