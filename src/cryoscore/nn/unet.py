"""A small noise-conditioned U-Net, cheap enough for 4k micrographs on a few CPU cores.

The default runs at full resolution (``input_unshuffle`` 1) on micrographs Fourier-cropped to
the model's pixel-size floor (:mod:`cryoscore.pairs.scale`): a 4 x 4 pixel unshuffle, the
earlier default, gives each of the 16 sub-pixel positions its own output weights and printed
a 4-pixel mesh on real micrographs.

Layout (``f`` = ``input_unshuffle``, ``C_l`` = channels at level ``l``)::

    (B,1,H,W) -> PixelUnshuffle(f) -> 3x3 conv (f^2 -> C_0)
      encoder, level l = 0 .. depth-1:  ResBlock x blocks_per_level at C_l, keep skip_l, AvgPool 2x2
      bottleneck, level depth:          ResBlock x blocks_per_level at C_depth
      decoder, level l = depth-1 .. 0:  1x1 conv (C_{l+1} -> C_l), bilinear 2x up, + skip_l,
                                        ResBlock x blocks_per_level at C_l
    -> SiLU -> 3x3 conv (C_0 -> f^2) -> PixelShuffle(f) -> (B,1,H,W)

``C_l = min(base_channels * 2**l, max_channels)``. The 1x1 conv commutes with bilinear
up-sampling, so it runs at the coarse level (4x cheaper than after the up-sampling); the
ResBlocks that follow smooth the up-sampled features. There is no transposed convolution
(no checkerboards) and no normalisation layer: GroupNorm statistics span the whole image,
which would make every output pixel depend on every input pixel and break tiled inference
and the finite :attr:`NoiseConditionedUNet.receptive_field_px`. Residual branches and the
output convolution start at zero, so an untrained network outputs 0.

The noise level enters through a sinusoidal embedding of ``c_noise`` (fixed, geometrically
spaced frequencies), a 2-layer MLP, and a per-ResBlock FiLM (``h * (1 + scale) + shift``)
after the block's first convolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from cryoscore.settings import UNetConfig

# Angular frequencies of the noise embedding span [1, _MAX_ANGULAR_FREQUENCY] rad per unit of
# c_noise. c_noise = log(sigma)/4 lies in about [-1.7, 1.2] for sigma in [1e-3, 1e2]: the lowest
# frequency is monotonic over that range, the highest resolves sigma ratios of about 1.1.
_MAX_ANGULAR_FREQUENCY = 64.0


@dataclass(frozen=True)
class _Footprint:
    """Input pixels (along one axis) that can influence one pixel of a feature map.

    Pixel ``q`` of a feature map whose pixels are ``stride`` input pixels apart depends
    only on input pixels ``stride*q + lo`` ... ``stride*q + hi``. Every layer maps the
    footprint of its input to that of its output; the U-Net chains them in forward order.
    """

    stride: int
    lo: int
    hi: int

    def conv(self, kernel: int) -> _Footprint:
        """Stride-1 convolution with 'same' zero padding (odd ``kernel``)."""
        reach = kernel // 2 * self.stride
        return _Footprint(self.stride, self.lo - reach, self.hi + reach)

    def downsample(self, factor: int) -> _Footprint:
        """Non-overlapping ``factor`` x ``factor`` pooling or pixel-unshuffling."""
        return _Footprint(self.stride * factor, self.lo, self.hi + self.stride * (factor - 1))

    def upsample_bilinear2(self) -> _Footprint:
        """2x bilinear up-sampling (align_corners=False): fine pixel 2m reads coarse m-1, m; 2m+1 reads m, m+1."""
        fine = self.stride // 2
        return _Footprint(fine, self.lo - 2 * fine, self.hi + fine)

    def pixel_shuffle(self, factor: int) -> _Footprint:
        """Pixel-shuffling by ``factor``: fine pixel p reads coarse pixel p // factor."""
        fine = self.stride // factor
        return _Footprint(fine, self.lo - fine * (factor - 1), self.hi)

    def union(self, other: _Footprint) -> _Footprint:
        """Footprint of a sum or concatenation of two maps with the same stride."""
        assert self.stride == other.stride
        return _Footprint(self.stride, min(self.lo, other.lo), max(self.hi, other.hi))


def _zero(conv: nn.Conv2d) -> nn.Conv2d:
    """``conv`` with its weights and bias set to zero (a layer that starts by adding nothing)."""
    nn.init.zeros_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


class NoiseEmbedding(nn.Module):
    """c_noise (B,) -> sinusoidal features -> 2-layer MLP -> (B, dim), SiLU-activated."""

    frequencies: torch.Tensor  # (dim // 2,) angular frequencies, a non-persistent buffer

    def __init__(self, dim: int):
        super().__init__()
        half = dim // 2
        frequencies = _MAX_ANGULAR_FREQUENCY ** (torch.arange(half, dtype=torch.float64) / max(half - 1, 1))
        self.register_buffer("frequencies", frequencies.float(), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim), nn.SiLU())

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        phase = c_noise[:, None] * self.frequencies
        return self.mlp(torch.cat([torch.cos(phase), torch.sin(phase)], dim=1))


class ResBlock(nn.Module):
    """Pre-activation residual block: x -> skip(x) + conv(SiLU(FiLM(conv(SiLU(x)), emb))).

    ``skip`` is the identity, or a 1x1 convolution when the channel count changes. The
    second convolution starts at zero, so a new block is the (projected) identity.
    """

    def __init__(self, in_channels: int, out_channels: int, embedding_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.film = nn.Linear(embedding_dim, 2 * out_channels)
        self.conv2 = _zero(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """x: (B, in_channels, h, w); embedding: (B, embedding_dim) -> (B, out_channels, h, w)."""
        scale, shift = self.film(embedding)[:, :, None, None].chunk(2, dim=1)
        h = torch.addcmul(shift, self.conv1(F.silu(x)), 1 + scale)
        # In place: a convolution's backward pass needs its input, not its output.
        return self.conv2(F.silu(h)).add_(self.skip(x))

    @staticmethod
    def footprint(fp: _Footprint) -> _Footprint:
        """Output footprint from the input's (the skip path's lies inside the convolutions')."""
        return fp.conv(3).conv(3)


class UpMerge(nn.Module):
    """Coarse (B, C_{l+1}, h/2, w/2) and skip (B, C_l, h, w) -> up(1x1 conv(coarse)) + skip."""

    def __init__(self, coarse_channels: int, fine_channels: int):
        super().__init__()
        self.project = nn.Conv2d(coarse_channels, fine_channels, 1)

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(self.project(coarse), scale_factor=2, mode="bilinear", align_corners=False)
        return up + skip

    @staticmethod
    def footprint(coarse: _Footprint, skip: _Footprint) -> _Footprint:
        """Output footprint from those of the coarse input and the skip (a 1x1 conv adds nothing)."""
        return coarse.upsample_bilinear2().union(skip)


class NoiseConditionedUNet(nn.Module):
    """F(x, c_noise): the raw network inside the EDM preconditioning (see module docstring).

    ``forward(x, c_noise)`` takes x: (B, 1, H, W) float32 (roughly unit variance) with H and
    W multiples of :attr:`required_multiple`, and c_noise: (B,) float32; it returns
    (B, 1, H, W).
    """

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = config
        f, emb = config.input_unshuffle, config.noise_embedding_dim
        ch = [config.channels(level) for level in range(config.depth + 1)]
        self.embedding = NoiseEmbedding(emb)
        self.stem = nn.Conv2d(f * f, ch[0], 3, padding=1)
        self.encoder = nn.ModuleList(
            self._blocks(ch[max(level - 1, 0)], ch[level], emb) for level in range(config.depth)
        )
        self.bottleneck = self._blocks(ch[max(config.depth - 1, 0)], ch[config.depth], emb)
        self.merges = nn.ModuleList(UpMerge(ch[level + 1], ch[level]) for level in range(config.depth))
        self.decoder = nn.ModuleList(self._blocks(ch[level], ch[level], emb) for level in range(config.depth))
        self.head = _zero(nn.Conv2d(ch[0], f * f, 3, padding=1))

    def _blocks(self, in_channels: int, out_channels: int, embedding_dim: int) -> nn.ModuleList:
        channels = [in_channels] + [out_channels] * self.config.blocks_per_level
        return nn.ModuleList(ResBlock(a, b, embedding_dim) for a, b in zip(channels[:-1], channels[1:]))

    @property
    def required_multiple(self) -> int:
        """Input height and width must be multiples of this many pixels."""
        return self.config.required_multiple

    @property
    def receptive_field_bounds_px(self) -> tuple[int, int]:
        """``(lo, hi)``: output pixel p depends only on input pixels p + lo ... p + hi, per axis.

        Exact bounds over all alignments of p on the down-sampling grid (lo <= 0 <= hi),
        derived by chaining each layer's :class:`_Footprint` in forward order.
        """
        fp = _Footprint(1, 0, 0).downsample(self.config.input_unshuffle).conv(3)
        skips = []
        for blocks in self.encoder:
            fp = self._blocks_footprint(blocks, fp)
            skips.append(fp)
            fp = fp.downsample(2)
        fp = self._blocks_footprint(self.bottleneck, fp)
        for blocks, skip in zip(self.decoder[::-1], skips[::-1]):
            fp = self._blocks_footprint(blocks, UpMerge.footprint(fp, skip))
        fp = fp.conv(3).pixel_shuffle(self.config.input_unshuffle)
        return fp.lo, fp.hi

    @property
    def receptive_field_px(self) -> int:
        """Receptive-field radius in input pixels, per axis: output pixel (r, c) depends only
        on input pixels (r', c') with |r' - r| and |c' - c| at most this value. A tile halo
        of this many pixels makes tiled inference exact."""
        lo, hi = self.receptive_field_bounds_px
        return max(-lo, hi)

    @staticmethod
    def _blocks_footprint(blocks: nn.Module, fp: _Footprint) -> _Footprint:
        """Footprint after a level's residual blocks (a ModuleList of :class:`ResBlock`)."""
        for _ in blocks.children():
            fp = ResBlock.footprint(fp)
        return fp

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        """x: (B, 1, H, W), c_noise: (B,) -> (B, 1, H, W)."""
        self._check_input(x, c_noise)
        embedding = self.embedding(c_noise)
        h = self.stem(F.pixel_unshuffle(x, self.config.input_unshuffle))
        skips = []
        for blocks in self.encoder:
            h = self._run_blocks(blocks, h, embedding)
            skips.append(h)
            h = F.avg_pool2d(h, 2)
        h = self._run_blocks(self.bottleneck, h, embedding)
        for merge, blocks, skip in zip(self.merges[::-1], self.decoder[::-1], skips[::-1]):
            h = self._run_blocks(blocks, merge(h, skip), embedding)
        return F.pixel_shuffle(self.head(F.silu(h)), self.config.input_unshuffle)

    @staticmethod
    def _run_blocks(blocks: nn.Module, h: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """A level's residual blocks (a ModuleList of :class:`ResBlock`) applied in order."""
        for block in blocks.children():
            h = block(h, embedding)
        return h

    def _check_input(self, x: torch.Tensor, c_noise: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected input of shape (B, 1, H, W), got {tuple(x.shape)}")
        if c_noise.shape != (x.shape[0],):
            raise ValueError(f"expected c_noise of shape ({x.shape[0]},), got {tuple(c_noise.shape)}")
        m = self.required_multiple
        height, width = x.shape[-2:]
        if height % m or width % m:
            raise ValueError(
                f"input height and width must be multiples of {m} pixels, got {height}x{width}; pad the input"
            )
