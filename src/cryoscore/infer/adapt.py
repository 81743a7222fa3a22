"""Adapt a trained denoiser to the user's own micrographs before denoising them (``denoise --adapt``).

The model is fine-tuned, from its own weights, on Noise2Noise pairs made from the very
micrographs to be denoised: neighbour sub-sampled pairs of each micrograph
(:mod:`cryoscore.pairs.single`; no frames needed), cropped to the model's pixel-size floor
like everything it sees. A few hundred steps on 2 CPU cores take a few minutes and teach
the model this dataset's particles, ice and noise, which the simulated corpus it was
trained on can only approximate.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from cryoscore.infer.denoise import TrainedDenoiser
from cryoscore.pairs.single import pairs_from_single_micrographs
from cryoscore.train import TrainConfig, TrainResult, state_path, train_model

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdaptSettings:
    """How long and how fast to fine-tune: ``steps`` Adam steps of ``batch_size`` crops of
    ``crop_px`` (at the model's working scale) at ``learning_rate``, seeded by ``seed``."""

    steps: int = 300
    batch_size: int = 8
    crop_px: int = 128
    learning_rate: float = 2e-4
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.steps, self.batch_size, self.crop_px) < 1 or not self.learning_rate > 0 or self.seed < 0:
            raise ValueError("--adapt steps, batch size, crop and learning rate must be positive")


def adapt_denoiser(
    denoiser: TrainedDenoiser,
    micrographs: Sequence[str | os.PathLike],
    model_path: str | os.PathLike,
    settings: AdaptSettings = AdaptSettings(),
    *,
    pixel_size_a: float | None = None,
    progress: bool = True,
) -> TrainResult:
    """Fine-tune ``denoiser`` on single-image pairs of ``micrographs`` and write it to ``model_path``.

    ``n2n`` models are fine-tuned as n2n, every other model with the ``score`` objective (a
    guided model keeps what guidance taught it; its reference is not needed). The crop is
    reduced to fit the smallest working-scale pair. The written model records its origin.
    """
    pairs = pairs_from_single_micrographs(micrographs, pixel_size_a=pixel_size_a, seed=settings.seed)
    floor = denoiser.metadata.get("min_pixel_size_a")
    multiple = denoiser.model.net.required_multiple
    smallest = min(min(pair.even.shape) * min(1.0, pair.pixel_size_a / (floor or pair.pixel_size_a)) for pair in pairs)
    crop_px = max(min(settings.crop_px, int(smallest) // multiple * multiple), multiple)
    config = TrainConfig(
        method="n2n" if denoiser.metadata["method"] == "n2n" else "score",
        steps=settings.steps, batch_size=settings.batch_size, crop_px=crop_px, learning_rate=settings.learning_rate,
        seed=settings.seed, checkpoint_every=settings.steps, unet=denoiser.model.net.config, min_pixel_size_a=floor,
    )
    logger.info("adapting %s to %d micrographs, %d steps", denoiser.source, len(pairs), settings.steps)
    low, high = denoiser.pixel_size_range_a
    adapted_sizes = [pair.pixel_size_a if floor is None else max(pair.pixel_size_a, floor) for pair in pairs]
    result = train_model(pairs, config, Path(model_path), progress=progress, initial=denoiser.model,
                         extra={"initial_model": denoiser.source, "adapted_to": [str(path) for path in micrographs],
                                "single_image_pairs": True,
                                "pixel_size_range_a": [min(low, *adapted_sizes), max(high, *adapted_sizes)]})
    state_path(Path(model_path)).unlink(missing_ok=True)  # nothing to resume
    return result
