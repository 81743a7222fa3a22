"""Tiled inference: apply a fully-convolutional network to a micrograph of any size in bounded memory.

Whole-image inference mirror-pads the image (H, W) by ``halo_px`` on every side, plus up to
``multiple - 1`` more pixels at the bottom and the right so that both sides are multiples of
``multiple``, runs the network once and crops the (H, W) centre back out (:func:`apply_whole`).
A 4k x 4k micrograph needs gigabytes of activations that way, so :func:`apply_tiled` cuts the
image into *cores* of ``tile_px`` x ``tile_px`` pixels (smaller at the bottom and right edges)
that partition it, runs the network on each core plus a context *halo*, a few tiles per
batch, and keeps only the core of each result.

Why tiles need no blending weights: if ``halo_px`` >= the network's receptive-field radius
(:attr:`cryoscore.nn.unet.NoiseConditionedUNet.receptive_field_px`), every output pixel of a
core depends only on input pixels inside its tile, and these are the very pixels that the
whole padded image holds there. Two conditions make the tile's computation of that pixel
*identical* to the whole image's, not merely close:

* every tile starts on the whole padded image's ``multiple`` grid, so pixel-unshuffling and
  pooling group the same pixels as whole-image inference does (hence the context on the top
  and left is ``halo_px`` plus up to ``multiple - 1`` pixels, and tiles are a little larger
  than ``tile_px + 2 halo_px``);
* the pixels outside the micrograph are filled by the same mirror padding in both paths.

The layers' own zero padding at a tile's border then only affects feature-map pixels whose
footprint crosses that border, which no core pixel reads. Since the cores partition the image
and each core pixel is computed exactly, tiled and whole-image inference agree to float
round-off (different array sizes may select different convolution kernels), with no seams;
overlap blending would only average equal values. With a smaller halo the core edges see
truncated context and seams appear: blending would hide them, not remove them.

Mirror padding: the image is extended by even reflection about its edge pixels (without
repeating them), periodically with period ``2 (n - 1)`` for an axis of ``n`` pixels, so any
amount of padding is defined. This equals ``torch.nn.functional.pad(mode="reflect")`` where
that applies (padding < n) and ``numpy.pad(mode="reflect")`` always; an axis of one pixel is
replicated. Tiles are gathered straight from the image with these indices, so no padded copy
of the micrograph is ever made.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Callable

import torch

Network = Callable[[torch.Tensor], torch.Tensor]
"""A pure function mapping a batch (B, 1, h, w) to (B, 1, h, w), h and w multiples of ``multiple``."""


@dataclass(frozen=True, kw_only=True)
class TilingConfig:
    """How :func:`apply_tiled` cuts a micrograph into tiles.

    Attributes
    ----------
    tile_px:
        Side of a tile's core in pixels: the part of the network's output that is kept. The
        cores partition the image; the last row and column of cores are clipped to it.
    halo_px:
        Context in pixels added on every side of a core. Tiled inference equals whole-image
        inference when this is at least the network's receptive-field radius
        (:attr:`cryoscore.nn.unet.NoiseConditionedUNet.receptive_field_px`).
    batch_size:
        Tiles passed to the network per call; peak memory grows linearly with it.
    """

    tile_px: int = 1024
    halo_px: int
    batch_size: int = 4

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{field.name} must be an integer, got {value!r}")
        if self.tile_px < 1:
            raise ValueError(f"tile_px must be >= 1, got {self.tile_px}")
        if self.halo_px < 0:
            raise ValueError(f"halo_px must be >= 0, got {self.halo_px}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class _Core:
    """One tile along one axis, in image pixels: the tile starts at ``origin`` (negative or past
    the image where mirror-padded) and its output is kept for ``start`` ... ``stop - 1``."""

    start: int
    stop: int
    origin: int

    @property
    def in_image(self) -> slice:
        """The kept pixels, as image indices."""
        return slice(self.start, self.stop)

    @property
    def in_tile(self) -> slice:
        """The kept pixels, as tile indices."""
        return slice(self.start - self.origin, self.stop - self.origin)


@dataclass(frozen=True)
class _AxisTiles:
    """Tiles along one axis of the image, all ``size`` pixels long, whose cores partition it."""

    size: int
    cores: tuple[_Core, ...]


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _plan_axis(length: int, core_px: int, halo_px: int, multiple: int) -> _AxisTiles:
    """Cut an axis of ``length`` pixels into cores of ``core_px`` and tiles aligned like :func:`apply_whole`.

    Whole-image inference puts pixel 0 at padded position ``halo_px``; a tile must start at a
    padded position that is a multiple of ``multiple``, at least ``halo_px`` before its core.
    """
    cores = tuple(
        _Core(start, min(start + core_px, length), start - start % multiple - halo_px)
        for start in range(0, length, core_px)
    )
    size = _round_up(max(core.stop + halo_px - core.origin for core in cores), multiple)
    return _AxisTiles(size, cores)


def _mirror_indices(length: int, origin: int, size: int, device: torch.device) -> torch.Tensor:
    """Image indices (size,) int64 of positions ``origin`` ... ``origin + size - 1`` of an axis of
    ``length`` pixels, mirror-extended beyond it (see the module docstring)."""
    positions = torch.arange(origin, origin + size, device=device)
    if length == 1:
        return torch.zeros_like(positions)
    period = 2 * (length - 1)
    folded = torch.remainder(positions, period)
    return torch.where(folded < length, folded, period - folded)


def _gather(image: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """image (H, W), row indices (h,), column indices (w,) -> (1, 1, h, w)."""
    return image[rows[:, None], cols[None, :]][None, None]


def _run(fn: Network, batch: torch.Tensor) -> torch.Tensor:
    """fn(batch) under inference mode, with its shape checked; batch (B, 1, h, w) -> (B, 1, h, w)."""
    with torch.inference_mode():
        result = fn(batch)
    if result.shape != batch.shape:
        raise ValueError(f"fn must preserve the input shape {tuple(batch.shape)}, returned {tuple(result.shape)}")
    return result


def _check(image: torch.Tensor, multiple: int) -> None:
    if image.ndim != 2 or not image.is_floating_point():
        raise ValueError(f"expected a floating-point image of shape (H, W), got {image.dtype} {tuple(image.shape)}")
    if not isinstance(multiple, int) or isinstance(multiple, bool) or multiple < 1:
        raise ValueError(f"multiple must be a positive integer, got {multiple!r}")


def apply_whole(fn: Network, image: torch.Tensor, *, multiple: int, halo_px: int) -> torch.Tensor:
    """Whole-image inference: mirror-pad, run ``fn`` once, crop; the reference for :func:`apply_tiled`.

    Parameters
    ----------
    fn:
        Pure function of its input (B, 1, h, w) -> (B, 1, h, w), h and w multiples of
        ``multiple``; run under :func:`torch.inference_mode`.
    image:
        (H, W) float micrograph; not modified.
    multiple:
        ``fn``'s input sides must be multiples of this many pixels.
    halo_px:
        Mirror padding in pixels on every side (the bottom and right get up to
        ``multiple - 1`` more to reach a multiple).

    Returns
    -------
    (H, W) tensor: ``fn`` of the padded image, cropped back to the image.
    """
    _check(image, multiple)
    if halo_px < 0:
        raise ValueError(f"halo_px must be >= 0, got {halo_px}")
    height, width = image.shape
    rows = _mirror_indices(height, -halo_px, _round_up(height + 2 * halo_px, multiple), image.device)
    cols = _mirror_indices(width, -halo_px, _round_up(width + 2 * halo_px, multiple), image.device)
    result = _run(fn, _gather(image, rows, cols))
    return result[0, 0, halo_px : halo_px + height, halo_px : halo_px + width].clone()


def apply_tiled(fn: Network, image: torch.Tensor, *, config: TilingConfig, multiple: int) -> torch.Tensor:
    """Tiled inference, equal to :func:`apply_whole` with the same halo when ``config.halo_px``
    is at least ``fn``'s receptive-field radius (see the module docstring).

    Parameters
    ----------
    fn:
        Pure function of its input (B, 1, h, w) -> (B, 1, h, w), h and w multiples of
        ``multiple``, and per-sample (sample b of the output depends on sample b of the input
        only); run under :func:`torch.inference_mode`. For a denoiser at noise level
        ``sigma``: ``lambda y: denoiser(y, torch.full((len(y),), sigma))``.
    image:
        (H, W) float micrograph; not modified.
    config:
        Core size, halo and tiles per batch.
    multiple:
        ``fn``'s input sides must be multiples of this many pixels
        (:attr:`cryoscore.nn.unet.NoiseConditionedUNet.required_multiple`).

    Returns
    -------
    (H, W) tensor of ``image``'s dtype and device.

    ``fn`` gets batches (B <= ``batch_size``, 1, h, w) of equal-sized tiles: each side is
    ``tile_px + 2 halo_px`` (``H`` or ``W`` instead of ``tile_px`` where the image is smaller),
    plus up to ``multiple - 1`` for grid alignment when ``tile_px`` is not a multiple of
    ``multiple``, rounded up to a multiple. Memory: the output is allocated once, and besides
    it only one batch of tiles, ``fn``'s activations for it and its result are alive at a
    time, whatever the size of the micrograph.
    """
    _check(image, multiple)
    height, width = image.shape
    row_tiles = _plan_axis(height, config.tile_px, config.halo_px, multiple)
    col_tiles = _plan_axis(width, config.tile_px, config.halo_px, multiple)
    tiles = list(itertools.product(row_tiles.cores, col_tiles.cores))
    output = image.new_empty((height, width))
    for first in range(0, len(tiles), config.batch_size):
        chunk = tiles[first : first + config.batch_size]
        batch = torch.cat(
            [
                _gather(
                    image,
                    _mirror_indices(height, row.origin, row_tiles.size, image.device),
                    _mirror_indices(width, col.origin, col_tiles.size, image.device),
                )
                for row, col in chunk
            ]
        )
        result = _run(fn, batch)
        for tile, (row, col) in zip(result[:, 0], chunk):
            output[row.in_image, col.in_image] = tile[row.in_tile, col.in_tile]
    return output
