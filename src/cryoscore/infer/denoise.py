"""Denoise micrographs with a trained model: one-step Tweedie estimate, tiled.

The image is put in noise units (``pairs.normalise``) with the number of halves it holds
(2 for a full sum), the network returns ``E[signal | image]`` for the noise level the
image has, and the result is mapped back to the input's units.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cryoscore.errors import InputError
from cryoscore.infer.tiling import TilingConfig, apply_tiled
from cryoscore.nn.checkpoint import load_model
from cryoscore.nn.precondition import Denoiser
from cryoscore.objectives import HALF_NOISE_SIGMA
from cryoscore.pairs.normalise import normalisation_for_image
from cryoscore.train import NORMALISATION


@dataclass(frozen=True)
class TrainedDenoiser:
    """A loaded model with the metadata training recorded (method, normalisation, ...)."""

    model: Denoiser
    metadata: dict[str, Any]
    source: str

    def __post_init__(self) -> None:
        if self.metadata.get("normalisation") != NORMALISATION:
            raise InputError(self.source, f"model expects data normalised as {self.metadata.get('normalisation')!r}, "
                             f"this cryoscore uses {NORMALISATION!r}")

    def network_sigma(self, image_sigma: float) -> float:
        """The noise level to tell the network, within the levels it was trained on.

        n2n models only know the halves' level. Score models know the halves' level and
        above; a full sum (0.707 in noise units) is below anything halves can show them, and
        telling them so measured worse than telling them 1 (an MSE of 54 against 21 on a
        simulated test), so the level is clamped to the trained range.
        """
        if self.metadata["method"] == "n2n":
            return HALF_NOISE_SIGMA
        return max(image_sigma, HALF_NOISE_SIGMA)


def load_denoiser(path: str | os.PathLike) -> TrainedDenoiser:
    """Load a model file written by ``cryoscore train``."""
    model, metadata = load_model(path)
    return TrainedDenoiser(model, metadata, str(path))


def denoise_image(
    denoiser: TrainedDenoiser,
    image: np.ndarray,
    *,
    halves_in_image: int = 2,
    tile_px: int = 1024,
    batch_size: int = 1,
) -> np.ndarray:
    """The one-step Tweedie estimate of ``image`` (H, W), float32 in the input's units.

    ``halves_in_image`` is 2 for a full frame sum, 1 for an even or odd half sum. Tiles of
    ``tile_px`` with a halo of the network's receptive field keep memory bounded and give
    the same result as whole-image inference.
    """
    normalisation = normalisation_for_image(image, halves_in_image)
    net = denoiser.model.net
    sigma = torch.tensor([denoiser.network_sigma(normalisation.noise_sigma)])
    config = TilingConfig(tile_px=tile_px, halo_px=net.receptive_field_px, batch_size=batch_size)
    denoised = apply_tiled(
        lambda batch: denoiser.model(batch, sigma.expand(len(batch))),
        torch.from_numpy(normalisation.apply(image)),
        config=config,
        multiple=net.required_multiple,
    )
    return normalisation.invert(denoised.numpy())
