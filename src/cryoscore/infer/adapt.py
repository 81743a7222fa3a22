"""Adapt a trained denoiser to the user's own micrographs before denoising them (``denoise --adapt``).

The model is fine-tuned, from its own weights, on Noise2Noise pairs made from the very
micrographs to be denoised: recorrupted pairs of each micrograph
(:func:`cryoscore.pairs.single.recorrupted_pair`; no frames needed, the micrograph's own
grid), cropped to the model's pixel-size floor like everything it sees. A few hundred steps
on 2 CPU cores take a few minutes and teach the model this dataset's particles, ice and
noise, which the simulated corpus it was trained on can only approximate.

The adapted model is checked before it is used: the last ``validation_fraction`` of every
micrograph's rows is held out of fine-tuning, and on a fresh recorrupted pair of that strip
both models denoise one image and are scored against the other (the Noise2Noise loss, whose
difference between two models is the difference of their mean squared errors against the
clean image, since the target's noise is independent of the input's). Only a model that
lowers the held-out loss is kept; otherwise the initial model is written back unchanged.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from cryoscore.filters import fourier_resample
from cryoscore.infer.denoise import TrainedDenoiser, denoise_image, load_denoiser
from cryoscore.io.mrc import read_mrc
from cryoscore.nn.checkpoint import save_model
from cryoscore.pairs.halves import HalfPair
from cryoscore.pairs.noise import spectral_noise_sigma
from cryoscore.pairs.single import recorrupted_pair
from cryoscore.settings import TrainConfig
from cryoscore.train import TrainingDiverged, state_path, train_model

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdaptSettings:
    """How long and how fast to fine-tune: ``steps`` Adam steps of ``batch_size`` crops of
    ``crop_px`` (at the model's working scale) at ``learning_rate``, seeded by ``seed``; the
    last ``validation_fraction`` of each micrograph's rows is held out to judge the result."""

    steps: int = 300
    batch_size: int = 8
    crop_px: int = 128
    learning_rate: float = 2e-4
    validation_fraction: float = 0.2
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.steps, self.batch_size, self.crop_px) < 1 or not self.learning_rate > 0 or self.seed < 0:
            raise ValueError("--adapt steps, batch size, crop and learning rate must be positive")
        if not 0 < self.validation_fraction < 0.5:
            raise ValueError("the held-out fraction of each micrograph must be between 0 and 0.5")


@dataclass(frozen=True)
class AdaptResult:
    """What adaptation did: its wall time (s, checks included) and the held-out Noise2Noise loss (in
    units of the held-out input's noise variance) of the initial and the adapted model (inf if
    fine-tuning diverged). ``kept`` says whether the adapted weights were written (only when
    they lower that loss)."""

    seconds: float
    initial_loss: float
    adapted_loss: float

    @property
    def kept(self) -> bool:
        return self.adapted_loss < self.initial_loss


@dataclass(frozen=True)
class Micrograph:
    """One image to adapt to: ``image`` (H, W) in any units at ``pixel_size_a``; ``source``, where it came from."""

    name: str
    image: np.ndarray
    pixel_size_a: float
    source: str


def split_held_out(image: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """``image`` (H, W) cut into its first rows (fine-tuning) and its last ``fraction`` (held out)."""
    held_rows = max(round(image.shape[0] * fraction), 1)
    return image[:-held_rows], image[-held_rows:]


def held_out_loss(denoiser: TrainedDenoiser, pairs: Sequence[HalfPair]) -> float:
    """Mean Noise2Noise loss of ``denoiser`` on held-out ``pairs`` (e.g. recorrupted pairs of held-out strips).

    Each pair's ``even`` is denoised as a half (``halves_in_image=1``) and compared with its
    ``odd`` on the model's working grid, both divided by the input's noise std there. Models
    compared on the same pairs differ by their mean squared errors against the clean image.
    """
    losses = []
    for pair in pairs:
        estimate = denoise_image(denoiser, pair.even, pixel_size_a=pair.pixel_size_a, halves_in_image=1)
        working = denoiser.working_scale(pair.even.shape, pair.pixel_size_a).shape
        estimate, target, source = (fourier_resample(image, working) for image in (estimate, pair.odd, pair.even))
        losses.append(float(np.mean((estimate - target) ** 2)) / spectral_noise_sigma(source) ** 2)
    return float(np.mean(losses))


def adapt_to_images(
    denoiser: TrainedDenoiser,
    micrographs: Sequence[Micrograph],
    model_path: str | os.PathLike,
    settings: AdaptSettings = AdaptSettings(),
    *,
    progress: bool = True,
    device: str = "cpu",
) -> AdaptResult:
    """Fine-tune ``denoiser`` on recorrupted pairs of ``micrographs`` and write it to ``model_path``.

    ``n2n`` models are fine-tuned as n2n, every other model with the ``score`` objective (a
    guided model keeps what guidance taught it; its reference is not needed). The crop is
    reduced to fit the smallest working-scale training region. The written model (the adapted
    one, or the initial one when adaptation did not lower the held-out loss) records its
    origin and both losses. ``device`` is where the fine-tuning runs (:func:`cryoscore.train.train_model`).
    """
    started = time.perf_counter()
    pairs, held_out_pairs = [], []
    for index, micrograph in enumerate(micrographs):
        training_part, held_out = split_held_out(micrograph.image.astype(np.float64), settings.validation_fraction)
        rng = np.random.default_rng([settings.seed, index])
        pairs.append(HalfPair(micrograph.name, *recorrupted_pair(training_part, rng), micrograph.pixel_size_a))
        held_out_pairs.append(HalfPair(micrograph.name, *recorrupted_pair(held_out, rng), micrograph.pixel_size_a))
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
    model_path = Path(model_path)
    initial_loss = held_out_loss(denoiser, held_out_pairs)
    adapted: TrainedDenoiser | None
    try:
        train_model(pairs, config, model_path, progress=progress, initial=denoiser.model, device=device,
                    extra={"initial_model": denoiser.source,
                           "adapted_to": [micrograph.source for micrograph in micrographs], "single_image_pairs": True,
                           "pixel_size_range_a": [min(low, *adapted_sizes), max(high, *adapted_sizes)]})
        adapted = load_denoiser(model_path)
        adapted_loss = held_out_loss(adapted, held_out_pairs)
    except TrainingDiverged as error:
        logger.warning("%s", error)
        adapted, adapted_loss = None, math.inf
    finally:
        state_path(model_path).unlink(missing_ok=True)  # nothing to resume
    result = AdaptResult(time.perf_counter() - started, initial_loss, adapted_loss)
    validation = {"held_out_fraction": settings.validation_fraction, "initial_loss": initial_loss,
                  "adapted_loss": adapted_loss if math.isfinite(adapted_loss) else None, "kept": result.kept}
    if result.kept and adapted is not None:
        save_model(model_path, adapted.model, extra={**adapted.metadata, "adaptation": validation})
    else:
        logger.warning("adaptation did not lower the held-out loss (%.4f against %.4f): keeping %s",
                       result.adapted_loss, result.initial_loss, denoiser.source)
        save_model(model_path, denoiser.model, extra={**denoiser.metadata, "adaptation": validation})
    return result


def read_micrographs(paths: Sequence[str | os.PathLike], pixel_size_a: float | None = None) -> list[Micrograph]:
    """The MRC files ``paths`` as :class:`Micrograph` s named by their stems (``pixel_size_a`` None: each header's)."""
    micrographs = []
    for path in paths:
        image, pixel_size = read_mrc(path, pixel_size_a=pixel_size_a)
        micrographs.append(Micrograph(Path(path).stem, image, pixel_size, str(path)))
    return micrographs


def adapt_denoiser(
    denoiser: TrainedDenoiser,
    micrographs: Sequence[str | os.PathLike],
    model_path: str | os.PathLike,
    settings: AdaptSettings = AdaptSettings(),
    *,
    pixel_size_a: float | None = None,
    progress: bool = True,
    device: str = "cpu",
) -> AdaptResult:
    """Fine-tune ``denoiser`` on the micrograph files ``micrographs`` (see :func:`adapt_to_images`)."""
    started = time.perf_counter()
    images = read_micrographs(micrographs, pixel_size_a)
    result = adapt_to_images(denoiser, images, model_path, settings, progress=progress, device=device)
    return replace(result, seconds=time.perf_counter() - started)
