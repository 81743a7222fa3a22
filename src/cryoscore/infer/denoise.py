"""Denoise micrographs with a trained model: one-step Tweedie estimate, tiled.

The image is put in noise units (``pairs.normalise``) with the number of halves it holds
(2 for a full sum), the network returns ``E[signal | image]`` for the noise level the
image has, and the result is mapped back to the input's units.

The model may live on a GPU (``load_denoiser(..., device="cuda")``); the image, the
sampler's state and the tiling stay on the CPU and only each batch of tiles visits the
model's device, so CPU results do not depend on this plumbing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import torch

from cryoscore.errors import InputError
from cryoscore.infer.sampler import DenoiseFunction, SamplerConfig, sample_mean_and_std
from cryoscore.infer.tiling import TilingConfig, apply_tiled
from cryoscore.nn.checkpoint import load_model
from cryoscore.nn.precondition import Denoiser
from cryoscore.objectives import HALF_NOISE_SIGMA
from cryoscore.pairs.normalise import normalisation_for_image, relative_noise_map
from cryoscore.train import NORMALISATION

DEFAULT_MODEL = resources.files("cryoscore") / "models" / "default.pt"
"""The model shipped inside the package (``scripts/train_default_model.sh`` made it)."""


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

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        return next(self.model.parameters()).device

    def check_can_sample(self) -> None:
        """InputError unless the model knows a range of noise levels (``score`` or ``guided``)."""
        if self.metadata["method"] == "n2n":
            raise InputError(self.source, "an n2n model knows a single noise level and cannot sample; "
                             "use --sampler tweedie or a score or guided model")


def resolve_device(name: str | None) -> str:
    """``"cpu"`` or ``"cuda"``: ``name``, or without one CUDA when it is available; InputError for
    CUDA on a machine without it."""
    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda"):
        raise InputError("--device", f"must be cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device", f"CUDA is not available to this torch ({torch.__version__}); use --device cpu")
    return name


def load_denoiser(path: str | os.PathLike | None = None, device: str = "cpu") -> TrainedDenoiser:
    """Load a model file written by ``cryoscore train`` onto ``device`` ("cpu" or "cuda");
    without a path, the shipped default model."""
    if path is None:
        with resources.as_file(DEFAULT_MODEL) as default_path:
            model, metadata = load_model(default_path)
        return TrainedDenoiser(model.to(device), metadata, "the default model")
    model, metadata = load_model(path)
    return TrainedDenoiser(model.to(device), metadata, str(path))


def _tiled_denoise_function(denoiser: TrainedDenoiser, tile_px: int, batch_size: int) -> DenoiseFunction:
    """``D(x, sigma)`` on a whole image (H, W) in noise units, evaluated tile by tile.

    Each batch of tiles (B, 1, h, w) goes to the model's device and its result comes back to
    the image's device.
    """
    net, device = denoiser.model.net, denoiser.device
    config = TilingConfig(tile_px=tile_px, halo_px=net.receptive_field_px, batch_size=batch_size)

    def denoise(image: torch.Tensor, sigma: float) -> torch.Tensor:
        level = torch.tensor([sigma], dtype=torch.float32, device=device)

        def network(batch: torch.Tensor) -> torch.Tensor:
            return denoiser.model(batch.to(device), level.expand(len(batch))).to(batch.device)

        return apply_tiled(network, image, config=config, multiple=net.required_multiple)

    return denoise


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
    denoise = _tiled_denoise_function(denoiser, tile_px, batch_size)
    estimate = denoise(torch.from_numpy(normalisation.apply(image)), denoiser.network_sigma(normalisation.noise_sigma))
    return normalisation.invert(estimate.numpy())


def sample_image(
    denoiser: TrainedDenoiser,
    image: np.ndarray,
    sampler: SamplerConfig,
    *,
    halves_in_image: int = 2,
    tile_px: int = 1024,
    batch_size: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and per-pixel standard deviation of ``image`` (H, W) over stochastic samples, input units.

    ``sampler.samples`` draws of the reverse-diffusion sampler (``infer.sampler``); the
    standard deviation map is zero for a single draw. Needs a model trained over a range
    of noise levels (``score`` or ``guided``).
    """
    denoiser.check_can_sample()
    normalisation = normalisation_for_image(image, halves_in_image)
    mean, std = sample_mean_and_std(
        _tiled_denoise_function(denoiser, tile_px, batch_size),
        torch.from_numpy(normalisation.apply(image)),
        normalisation.noise_sigma,
        HALF_NOISE_SIGMA,
        torch.from_numpy(relative_noise_map(image)),
        sampler,
    )
    return normalisation.invert(mean.numpy()), (std.numpy() * normalisation.scale).astype(np.float32)
