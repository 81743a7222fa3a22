"""Tiled inference (cryoscore.infer.tiling): tiled and whole-image inference agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cryoscore.infer.tiling import TilingConfig, apply_tiled, apply_whole
from cryoscore.nn import Denoiser, EDMPreconditioner, NoiseConditionedUNet
from cryoscore.settings import UNetConfig

SMALL = UNetConfig(base_channels=8, depth=2, input_unshuffle=2, noise_embedding_dim=8, max_channels=16)
SHAPE = (301, 517)  # odd, and no multiple of any tile size below


@pytest.fixture(scope="module")
def net() -> NoiseConditionedUNet:
    """SMALL with every parameter ~ N(0, 0.1^2): a new one has zeroed residual branches and outputs 0."""
    net = NoiseConditionedUNet(SMALL).eval()
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(0)
        for parameter in net.parameters():
            torch.nn.init.normal_(parameter, std=0.1)
    return net


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))


def _raw(net):
    return lambda x: net(x, torch.zeros(len(x)))


def _denoiser(net):
    denoiser = Denoiser(net, EDMPreconditioner(sigma_data=0.5))
    return lambda y: denoiser(y, torch.full((len(y),), 0.3))


def _assert_equal_to_float_tolerance(tiled: torch.Tensor, whole: torch.Tensor) -> None:
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-5 * whole.abs().max().item())


@pytest.mark.parametrize("wrap", [_raw, _denoiser])
@pytest.mark.parametrize(
    ("tile_px", "batch_size"),
    [(64, 4), (100, 3), (128, 1), (200, 7), (1000, 2)],  # 100 and 200: not multiples of 8; 1000: one tile
)
def test_tiled_equals_whole_image_inference(net, image, wrap, tile_px, batch_size):
    fn, halo = wrap(net), net.receptive_field_px
    whole = apply_whole(fn, image, multiple=net.required_multiple, halo_px=halo)
    assert whole.std() > 0.1 * image.std()  # the randomised network does something
    config = TilingConfig(tile_px=tile_px, halo_px=halo, batch_size=batch_size)
    tiled = apply_tiled(fn, image, config=config, multiple=net.required_multiple)
    _assert_equal_to_float_tolerance(tiled, whole)


def test_halo_smaller_than_the_receptive_field_gives_seams(net, image):
    fn, halo = _raw(net), net.receptive_field_px // 4
    whole = apply_whole(fn, image, multiple=net.required_multiple, halo_px=halo)
    tiled = apply_tiled(fn, image, config=TilingConfig(tile_px=200, halo_px=halo), multiple=net.required_multiple)
    with pytest.raises(AssertionError):
        _assert_equal_to_float_tolerance(tiled, whole)
    error = (tiled - whole).abs()
    assert error.max() > 100 * 1e-5 * whole.abs().max()
    # the errors sit at the seams (rows and columns 200): the image's corner, which sees the
    # same padding as whole-image inference and no seam within the receptive field, is right
    assert error[: 200 - net.receptive_field_px, : 200 - net.receptive_field_px].max() < 1e-5 * whole.abs().max()


def test_shapes_input_untouched_and_result_is_an_ordinary_tensor(net, image):
    original = image.clone()
    config = TilingConfig(tile_px=128, halo_px=net.receptive_field_px)
    tiled = apply_tiled(_raw(net), image, config=config, multiple=net.required_multiple)
    whole = apply_whole(_raw(net), image, multiple=net.required_multiple, halo_px=net.receptive_field_px)
    assert tiled.shape == whole.shape == image.shape and tiled.dtype == whole.dtype == torch.float32
    assert torch.equal(image, original)
    assert not tiled.is_inference() and not whole.is_inference()


def test_constant_image_gives_the_whole_image_output_periodic_on_the_unshuffle_grid(net):
    image = torch.full((150, 90), 0.7)
    fn, halo, multiple = _raw(net), net.receptive_field_px, net.required_multiple
    whole = apply_whole(fn, image, multiple=multiple, halo_px=halo)
    tiled = apply_tiled(fn, image, config=TilingConfig(tile_px=40, halo_px=halo), multiple=multiple)
    _assert_equal_to_float_tolerance(tiled, whole)
    # every pixel sees a constant neighbourhood, so the output only depends on its position
    # within the pixel-unshuffle block
    f = SMALL.input_unshuffle
    period = whole[:f, :f].repeat(150 // f, 90 // f)
    torch.testing.assert_close(tiled, period, rtol=0, atol=1e-5 * whole.abs().max().item())


def test_identity_puts_every_core_back_in_place(image):
    identity = lambda x: x.clone()  # noqa: E731
    for tile_px, multiple in [(13, 1), (37, 8), (64, 32), (600, 16)]:
        tiled = apply_tiled(identity, image, config=TilingConfig(tile_px=tile_px, halo_px=5), multiple=multiple)
        assert torch.equal(tiled, image)


@pytest.mark.parametrize(("shape", "halo", "multiple"), [((3, 5), 7, 4), ((1, 6), 2, 8), ((40, 33), 9, 16)])
def test_whole_image_padding_is_numpys_reflect_even_beyond_the_image_size(shape, halo, multiple):
    image = torch.arange(shape[0] * shape[1], dtype=torch.float32).reshape(shape)
    seen = []

    def record(x):
        seen.append(x.clone())
        return x

    apply_whole(record, image, multiple=multiple, halo_px=halo)
    (padded,) = seen
    assert padded.shape[-2] % multiple == 0 and padded.shape[-1] % multiple == 0
    extra = (padded.shape[-2] - shape[0] - 2 * halo, padded.shape[-1] - shape[1] - 2 * halo)
    assert 0 <= min(extra) and max(extra) < multiple
    expected = np.pad(image.numpy(), ((halo, halo + extra[0]), (halo, halo + extra[1])), mode="reflect")
    np.testing.assert_array_equal(padded[0, 0].numpy(), expected)


def test_tiles_are_equal_sized_aligned_and_batched(image):
    shapes = []

    def record(x):
        shapes.append(tuple(x.shape))
        return x

    config = TilingConfig(tile_px=100, halo_px=57, batch_size=5)
    apply_tiled(record, image, config=config, multiple=8)
    # 301 x 517 -> 4 x 6 cores; tiles of 100 + 2 * 57 + up to 7 for alignment, rounded up to 8
    assert [s[0] for s in shapes] == [5, 5, 5, 5, 4]
    assert set(s[1:] for s in shapes) == {(1, 224, 224)}


@pytest.mark.parametrize(
    "bad",
    [
        {"tile_px": 0, "halo_px": 8},
        {"tile_px": -64, "halo_px": 8},
        {"halo_px": -1},
        {"halo_px": 8, "batch_size": 0},
        {"halo_px": 8.0},
        {"halo_px": True},
    ],
)
def test_config_is_validated(bad):
    with pytest.raises(ValueError):
        TilingConfig(**bad)


def test_bad_image_multiple_or_fn_is_a_value_error(image):
    config = TilingConfig(tile_px=64, halo_px=8)
    identity = lambda x: x  # noqa: E731
    with pytest.raises(ValueError, match="shape \\(H, W\\)"):
        apply_tiled(identity, image[None], config=config, multiple=8)
    with pytest.raises(ValueError, match="multiple"):
        apply_whole(identity, image, multiple=0, halo_px=8)
    with pytest.raises(ValueError, match="preserve the input shape"):
        apply_tiled(lambda x: x[..., :-1], image, config=config, multiple=8)
