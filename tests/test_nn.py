"""Networks, EDM preconditioning and model files (cryoscore.nn)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from cryoscore.errors import InputError
from cryoscore.nn import (
    Denoiser,
    EDMPreconditioner,
    NoiseConditionedUNet,
    UNetConfig,
    load_model,
    save_model,
    tweedie_score,
)
from cryoscore.nn.checkpoint import FORMAT, FORMAT_VERSION

TINY = UNetConfig(base_channels=4, depth=2, input_unshuffle=2, noise_embedding_dim=8, max_channels=8)


def _randomise(module: nn.Module, seed: int) -> nn.Module:
    """Overwrite every parameter with fan-in-scaled Gaussian noise (new models start with zeroed branches)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            std = 1 / math.sqrt(p[0].numel()) if p.ndim > 1 else 0.1
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * std)
    return module


def _random_net(config: UNetConfig, seed: int = 0, dtype: torch.dtype = torch.float32) -> NoiseConditionedUNet:
    return _randomise(NoiseConditionedUNet(config).to(dtype), seed).eval()


def _randn(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --- U-Net ---------------------------------------------------------------------------


@pytest.mark.parametrize("config", [UNetConfig(), TINY, UNetConfig(base_channels=8, depth=1, input_unshuffle=1)])
@pytest.mark.parametrize("size", [(64, 64), (96, 160)])
def test_output_shape_equals_input_shape(config, size):
    net = _random_net(config)
    x = _randn(2, 1, *size, seed=1)
    with torch.inference_mode():
        out = net(x, torch.tensor([0.0, -1.0]))
    assert out.shape == x.shape
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_size_not_a_multiple_of_required_multiple_is_a_clear_value_error():
    net = NoiseConditionedUNet(UNetConfig())
    assert net.required_multiple == 2**4
    with pytest.raises(ValueError, match=r"multiples of 16 pixels, got 64x40"):
        net(torch.zeros(1, 1, 64, 40), torch.zeros(1))
    with pytest.raises(ValueError, match=r"c_noise of shape \(1,\)"):
        net(torch.zeros(1, 1, 64, 64), torch.zeros(()))


@pytest.mark.parametrize(
    "bad",
    [
        {"input_unshuffle": 3},
        {"depth": -1},
        {"base_channels": 0},
        {"noise_embedding_dim": 7},
        {"max_channels": 16, "base_channels": 32},
        {"depth": 2.0},
    ],
)
def test_config_is_validated(bad):
    with pytest.raises(ValueError):
        UNetConfig(**bad)


def test_default_config_costs_at_most_80_kflop_per_working_pixel():
    """The default network runs at full resolution on micrographs Fourier-cropped to the
    model's 3 A floor: a 4096 x 4096 micrograph at 1.5 A/px is 2048 x 2048 working pixels,
    so 80 kFLOP per working pixel is at most the ~300 GFLOP the old 4x-unshuffled network
    spent on the whole micrograph (the throughput benchmark's budget)."""
    macs = 0

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal macs
        per_output = module.in_features if isinstance(module, nn.Linear) else module.weight[0].numel()
        macs += output.numel() * per_output

    net = NoiseConditionedUNet(UNetConfig())
    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.inference_mode():
        net(torch.zeros(1, 1, 256, 256), torch.zeros(1))
    for hook in hooks:
        hook.remove()
    flop_per_pixel = 2 * macs / 256**2
    assert 40_000 < flop_per_pixel <= 80_000


def test_noise_level_changes_the_output():
    net = _random_net(TINY)
    x = _randn(1, 1, 32, 32, seed=2)
    with torch.inference_mode():
        outputs = [net(x, torch.tensor([c])) for c in (-1.5, 0.0, 1.0)]
    scale = outputs[0].std()
    for a, b in ((0, 1), (1, 2), (0, 2)):
        assert (outputs[a] - outputs[b]).abs().mean() > 0.05 * scale


def _changed_pixels(net: nn.Module, size: int, pixel: tuple[int, int]) -> torch.Tensor:
    """(N, 2) offsets (row, col) from ``pixel`` of the output pixels that change when it is perturbed."""
    x = _randn(1, 1, size, size, seed=3, dtype=torch.float64)
    bumped = x.clone()
    bumped[0, 0, pixel[0], pixel[1]] += 1.0
    c_noise = torch.tensor([0.3], dtype=torch.float64)
    with torch.inference_mode():
        delta = net(bumped, c_noise) - net(x, c_noise)
    return torch.nonzero(delta[0, 0]) - torch.tensor(pixel)


@pytest.mark.parametrize(
    "config",
    [TINY, UNetConfig(base_channels=4, depth=1, input_unshuffle=4, noise_embedding_dim=8, blocks_per_level=2),
     UNetConfig(base_channels=4, depth=3, input_unshuffle=1, noise_embedding_dim=8, max_channels=8)],
)
def test_receptive_field_is_exact_for_every_grid_alignment(config):
    net = _random_net(config, dtype=torch.float64)
    lo, hi = net.receptive_field_bounds_px
    radius, multiple = net.receptive_field_px, net.required_multiple
    assert radius == max(-lo, hi)
    size = multiple * math.ceil((2 * radius + 2 * multiple) / multiple)
    smallest, largest = 0, 0
    for k in range(multiple):  # every alignment of the perturbed pixel on the coarsest grid
        offsets = _changed_pixels(net, size, (size // 2 + k, size // 2 + k))
        assert len(offsets) > 0
        smallest, largest = min(smallest, int(offsets.min())), max(largest, int(offsets.max()))
        # Input x reaches the outputs p with p + lo <= x <= p + hi, i.e. p - x in [-hi, -lo].
        assert -hi <= smallest and largest <= -lo
    assert (smallest, largest) == (-hi, -lo)


def test_default_receptive_field_contains_the_measured_spread():
    net = _random_net(UNetConfig(), dtype=torch.float64)
    radius = net.receptive_field_px
    offsets = _changed_pixels(net, 544, (272, 272))
    spread = int(offsets.abs().max())
    assert radius / 2 <= spread <= radius


def test_translation_equivariance_in_the_interior():
    net = _random_net(UNetConfig())
    shift, radius, size = net.required_multiple, net.receptive_field_px, 640
    x = _randn(1, 1, size, size, seed=4)
    c_noise = torch.tensor([0.0])
    with torch.inference_mode():
        out = net(x, c_noise)
        out_shifted = net(torch.roll(x, (shift, shift), dims=(2, 3)), c_noise)
    inner = slice(radius + shift, size - radius - shift)
    expected = torch.roll(out, (shift, shift), dims=(2, 3))[..., inner, inner]
    assert expected.numel() > 0 and expected.std() > 0.1
    torch.testing.assert_close(out_shifted[..., inner, inner], expected, rtol=1e-4, atol=1e-4)


# --- preconditioning -----------------------------------------------------------------


class _ZeroNet(nn.Module):
    """Stand-in network: records its inputs and outputs zeros."""

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        self.seen = (x.clone(), c_noise.clone())
        return torch.zeros_like(x)


def test_denoiser_with_zero_network_returns_c_skip_times_y():
    pre = EDMPreconditioner(sigma_data=0.7)
    stub = _ZeroNet()
    denoiser = Denoiser(stub, pre)
    y = _randn(3, 1, 8, 8, seed=5)
    sigma = torch.tensor([1e-3, 0.5, 50.0])
    out = denoiser(y, sigma)
    s = sigma[:, None, None, None]
    torch.testing.assert_close(out, pre.c_skip(s) * y)
    torch.testing.assert_close(stub.seen[0], y / torch.sqrt(s**2 + 0.49))
    torch.testing.assert_close(stub.seen[1], torch.log(sigma) / 4)
    with pytest.raises(ValueError, match=r"sigma of shape \(3,\)"):
        denoiser(y, torch.tensor(0.5))


def test_preconditioning_limits_and_identities():
    pre = EDMPreconditioner(sigma_data=0.5)
    sigma = torch.logspace(-3, 2, 51, dtype=torch.float64)
    c_skip, c_out, c_in = pre.c_skip(sigma), pre.c_out(sigma), pre.c_in(sigma)
    assert pre.c_skip(torch.tensor(1e-3)) == pytest.approx(1.0, abs=1e-5)
    assert pre.c_skip(torch.tensor(1e2)) < 1e-4
    assert (c_skip.diff() < 0).all()
    # EDM's defining properties: unit-variance network input and effective target.
    torch.testing.assert_close(c_in**2 * (sigma**2 + 0.25), torch.ones_like(sigma))
    torch.testing.assert_close((1 - c_skip) ** 2 * 0.25 + c_skip**2 * sigma**2, c_out**2)
    torch.testing.assert_close(pre.loss_weight(sigma), 1 / c_out**2)
    torch.testing.assert_close(pre.c_noise(sigma), torch.log(sigma) / 4)


def test_everything_is_finite_from_sigma_1e_minus_3_to_1e2():
    pre = EDMPreconditioner()
    sigma = torch.logspace(-3, 2, 6)
    for scaling in (pre.c_skip, pre.c_out, pre.c_in, pre.c_noise, pre.loss_weight):
        values = scaling(sigma)
        assert values.dtype == torch.float32 and torch.isfinite(values).all()
    denoiser = Denoiser(_random_net(TINY), pre)
    y = _randn(6, 1, 32, 32, seed=6) * torch.sqrt(sigma**2 + 0.25)[:, None, None, None]
    with torch.inference_mode():
        denoised = denoiser(y, sigma)
    assert torch.isfinite(denoised).all()
    assert torch.isfinite(tweedie_score(y, denoised, sigma)).all()


def test_tweedie_score_of_a_gaussian_is_exact():
    # x ~ N(0, s^2), y = x + sigma n: E[x|y] = s^2/(s^2+sigma^2) y and score = -y/(s^2+sigma^2).
    y = _randn(2, 1, 4, 4, seed=7)
    sigma, s2 = torch.tensor([0.3, 2.0]), 1.5
    var = (s2 + sigma**2)[:, None, None, None]
    torch.testing.assert_close(tweedie_score(y, s2 / var * y, sigma), -y / var)


def test_preconditioner_is_validated():
    for bad in (0.0, -1.0, float("inf"), "1"):
        with pytest.raises(ValueError):
            EDMPreconditioner(sigma_data=bad)


# --- training ------------------------------------------------------------------------


def _smooth_images(count: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """(count, 1, size, size) Gaussian-blurred white noise (blur sigma 2.5 px), unit std per image."""
    white = torch.randn(count, 1, size, size, generator=generator)
    ky = torch.fft.fftfreq(size)[:, None]
    kx = torch.fft.rfftfreq(size)[None, :]
    blur = torch.exp(-2 * math.pi**2 * 2.5**2 * (kx**2 + ky**2))
    smooth = torch.fft.irfft2(torch.fft.rfft2(white) * blur, s=(size, size))
    return smooth / smooth.std(dim=(2, 3), keepdim=True)


def test_noise2noise_training_with_edm_weighting_denoises():
    config = UNetConfig(base_channels=16, depth=2, input_unshuffle=2, noise_embedding_dim=16, max_channels=32)
    pre = EDMPreconditioner(sigma_data=1.0)
    with torch.random.fork_rng():  # seeds torch's default initialisation of this model only
        torch.manual_seed(0)
        denoiser = Denoiser(NoiseConditionedUNet(config), pre)
    optimiser = torch.optim.Adam(denoiser.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(8)
    for _ in range(250):
        clean = _smooth_images(16, 32, generator)
        sigma = torch.exp(torch.empty(16).uniform_(math.log(0.3), math.log(3.0), generator=generator))
        s = sigma[:, None, None, None]
        noisy = clean + s * torch.randn(clean.shape, generator=generator)
        target = clean + s * torch.randn(clean.shape, generator=generator)  # independent noisy copy
        loss = (pre.loss_weight(s) * (denoiser(noisy, sigma) - target) ** 2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    test = torch.Generator().manual_seed(9)
    clean = _smooth_images(32, 32, test)
    denoiser.eval()
    for level in (0.5, 1.0, 2.0):
        sigma = torch.full((32,), level)
        noisy = clean + level * torch.randn(clean.shape, generator=test)
        with torch.inference_mode():
            mse = ((denoiser(noisy, sigma) - clean) ** 2).mean().item()
        assert mse < 0.5 * level**2, (level, mse)


# --- model files -----------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path):
    model = Denoiser(_random_net(TINY, seed=10), EDMPreconditioner(sigma_data=0.3))
    path = tmp_path / "models" / "m.pt"
    save_model(path, model, extra={"epochs": 3, "normalisation": {"mean": 0.1, "std": 2.0}, "shape": (1, 2)})
    return model, path


def test_save_load_round_trip_gives_identical_outputs(saved):
    model, path = saved
    loaded, extra = load_model(path)
    assert extra == {"epochs": 3, "normalisation": {"mean": 0.1, "std": 2.0}, "shape": [1, 2]}
    assert loaded.net.config == TINY and loaded.preconditioner == EDMPreconditioner(sigma_data=0.3)
    assert not loaded.training
    y, sigma = _randn(2, 1, 32, 48, seed=11), torch.tensor([0.1, 1.0])
    with torch.inference_mode():
        assert torch.equal(loaded(y, sigma), model(y, sigma))
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["format"] == FORMAT and sidecar["format_version"] == FORMAT_VERSION
    assert sidecar["config"] == {"unet": TINY.to_dict(), "preconditioner": {"sigma_data": 0.3}}
    assert sidecar["extra"]["epochs"] == 3
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.json", "m.pt"]  # no temporary files left


def _rewrite(path, **changes):
    payload = torch.load(path, weights_only=True)
    payload.update(changes)
    torch.save(payload, path)


def test_not_a_torch_file_is_an_input_error(tmp_path):
    for name, content in (("text.pt", b"hello, not a model\n"), ("empty.pt", b""), ("zip.pt", b"PK\x03\x04junk")):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(InputError, match="not a cryoscore model file: torch cannot read it") as info:
            load_model(path)
        assert "\n" not in str(info.value) and str(info.value).startswith(str(path))
    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "missing.pt")


def test_pickled_module_is_refused(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save(NoiseConditionedUNet(TINY), path)
    with pytest.raises(InputError, match="not a cryoscore model file: it holds pickled Python objects") as info:
        load_model(path)
    assert "weights_only" not in str(info.value)  # torch's advice to load it anyway is unsafe


def test_wrong_format_and_future_version_are_input_errors(saved, tmp_path):
    _, path = saved
    _rewrite(path, format_version=FORMAT_VERSION + 1)
    with pytest.raises(InputError, match=r"format_version 2 is newer than this cryoscore reads \(1\)"):
        load_model(path)
    _rewrite(path, format="something-else", format_version=1)
    with pytest.raises(InputError, match="not a cryoscore model"):
        load_model(path)
    other = tmp_path / "weights.pt"
    torch.save(NoiseConditionedUNet(TINY).state_dict(), other)
    with pytest.raises(InputError, match="not a cryoscore model"):
        load_model(other)


def test_state_dict_that_does_not_match_the_config_is_an_input_error(saved):
    _, path = saved
    payload = torch.load(path, weights_only=True)
    _rewrite(path, config={**payload["config"], "unet": {**payload["config"]["unet"], "base_channels": 8}})
    with pytest.raises(InputError, match="weights do not match the model config: .*wrong shape"):
        load_model(path)
    state = dict(payload["state_dict"])
    state.pop("net.head.bias")
    _rewrite(path, config=payload["config"], state_dict=state)
    with pytest.raises(InputError, match=r"1 missing \(e.g. net.head.bias\)"):
        load_model(path)
    _rewrite(path, config={"unet": {"depth": 2, "colour": "blue"}, "preconditioner": {"sigma_data": 1.0}})
    with pytest.raises(InputError, match="invalid model config"):
        load_model(path)


def test_save_requires_pt_suffix(tmp_path):
    with pytest.raises(InputError, match=r"must end in \.pt"):
        save_model(tmp_path / "m.json", Denoiser(NoiseConditionedUNet(TINY), EDMPreconditioner()), extra={})
