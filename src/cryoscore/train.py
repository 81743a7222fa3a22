"""Train a denoiser on Noise2Noise half pairs, with checkpoints, resume and a recorded config.

Every step's randomness (which crops, which added noise) comes from generators seeded by
``(seed, step)``, so a run resumed from a checkpoint continues exactly as the uninterrupted
run would have, and the same seed and data give the same model.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from cryoscore import __version__
from cryoscore.errors import InputError
from cryoscore.io.atomic import atomic_path
from cryoscore.nn.checkpoint import save_model
from cryoscore.nn.precondition import Denoiser, EDMPreconditioner
from cryoscore.nn.unet import NoiseConditionedUNet
from cryoscore.objectives import StepDraws, build_objective
from cryoscore.pairs.crops import random_crop_pairs
from cryoscore.pairs.halves import HalfPair
from cryoscore.pairs.normalise import NORMALISATION, normalise_pair, signal_std
from cryoscore.pairs.scale import rescale_pair
from cryoscore.progress import progress as show_progress
from cryoscore.settings import TrainConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What a run produced: the model file and the loss of every step (this run and resumed ones)."""

    model_path: Path
    losses: list[float]
    seconds: float


class TrainingDiverged(InputError):
    """The loss stopped being finite: the weights are lost (too high a learning rate)."""


def state_path(model_path: Path) -> Path:
    """Where the resumable training state of ``model_path`` lives (``NAME.state.pt``)."""
    return model_path.with_suffix(".state.pt")


def _step_draws(seed: int, step: int) -> StepDraws:
    numpy_rng = np.random.default_rng([seed, step])
    return StepDraws(numpy_rng, torch.Generator().manual_seed(int(numpy_rng.integers(2**62))), step)


class WeightAverage:
    """An exponential moving average of a model's weights, updated after every optimiser step.

    The weight of the newest step is ``1 - decay`` with ``decay = 0.5 ** (1 / half_life_steps)``,
    capped early on at ``(1 + n) / (10 + n)`` after ``n`` updates, so short runs are not held
    at the initial weights. Averaging the last few hundred steps smooths out where the
    optimiser's constant learning rate left the weights on the last step; it did not undo the
    loss spikes of unclipped training in the size sweep (benchmarks/RESULTS.md, section 6),
    which gradient clipping did, so it is off by default.
    """

    def __init__(self, model: Denoiser, half_life_steps: float):
        self.model = copy.deepcopy(model).eval()
        self.model.requires_grad_(False)
        self.decay = 0.5 ** (1.0 / half_life_steps)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: Denoiser) -> None:
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for average, current in zip(self.model.parameters(), model.parameters()):
            average.lerp_(current, 1.0 - decay)
        self.updates += 1


def _new_denoiser(config: TrainConfig, sigma_data: float) -> Denoiser:
    with torch.random.fork_rng():  # the initial weights depend on the seed only
        torch.manual_seed(config.seed)
        return Denoiser(NoiseConditionedUNet(config.unet), EDMPreconditioner(sigma_data=sigma_data))


def _resumable_settings(config: TrainConfig) -> str:
    """The settings a resumed run must share with the run it continues (all but ``steps``)."""
    return json.dumps({**config.to_dict(), "steps": None}, sort_keys=True)


def _save_state(path: Path, step: int, model: Denoiser, optimizer: torch.optim.Optimizer, losses, config,
                average: WeightAverage | None) -> None:
    state = {
        "step": step,
        "config": _resumable_settings(config),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "losses": torch.tensor(losses, dtype=torch.float64),
    }
    if average is not None:
        state["average"] = average.model.state_dict()
        state["average_updates"] = average.updates
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_state(path: Path, config: TrainConfig) -> dict[str, Any]:
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as error:  # noqa: BLE001 - torch.load raises many types on bad files
        raise InputError(path, f"cannot read the training state ({type(error).__name__})") from error
    if not isinstance(state, dict) or state.get("config") != _resumable_settings(config):
        raise InputError(path, "training state was made with other settings; resume with the same options")
    return state


def train_model(
    pairs: Sequence[HalfPair],
    config: TrainConfig,
    model_path: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    extra: dict[str, Any] | None = None,
    initial: Denoiser | None = None,
    device: str = "cpu",
) -> TrainResult:
    """Train on ``pairs`` (raw halves) and write the model to ``model_path`` (``.pt``).

    ``initial`` fine-tunes a trained model instead of starting from random weights: its
    network (``config.unet`` must be its configuration) and its ``sigma_data`` are kept.

    The model's metadata records the resolved config, the data normalisation, the pixel
    size and ``extra`` (e.g. the command line). A state file beside it (:func:`state_path`)
    is written every ``checkpoint_every`` steps; ``resume=True`` continues from it, up to
    ``config.steps`` (which may be more than the interrupted run asked for).

    ``device`` ("cpu" or "cuda") is where the network trains; every random draw is made on the
    CPU, so both train on the same crops and noise (a GPU's arithmetic differs in rounding).
    The model is written with CPU tensors; the state file holds the device's and is read back
    onto the CPU (:func:`_load_state`), so a run resumes on either device.
    """
    model_path = Path(model_path)
    if not pairs:
        raise InputError(model_path, "no training pairs")
    pairs = [rescale_pair(pair, config.min_pixel_size_a) for pair in pairs]
    pixel_sizes = sorted({pair.pixel_size_a for pair in pairs})
    if pixel_sizes[-1] > 1.01 * pixel_sizes[0] and (config.min_pixel_size_a is None or config.guidance is not None):
        raise InputError(model_path, f"training micrographs have different pixel sizes ({pixel_sizes[0]:g} to "
                         f"{pixel_sizes[-1]:g} A); train on one pixel size"
                         + ("" if config.guidance is not None else ", or give a pixel-size floor (--min-pixel-size)"))
    smallest = min(min(pair.even.shape) for pair in pairs)
    if smallest < config.crop_px:
        raise InputError("--crop", f"{config.crop_px} px crops do not fit a {smallest} px micrograph; use --crop smaller")
    started = time.perf_counter()
    normalised = [normalise_pair(pair) for pair in pairs]
    sigma_data = signal_std(normalised)
    if initial is not None:
        if initial.net.config != config.unet:
            raise ValueError("the initial model's network differs from config.unet")
        sigma_data = initial.preconditioner.sigma_data
    objective = build_objective(config.method, config.noise_levels, config.guidance, normalised,
                                pairs[0].pixel_size_a, config.seed)
    model = _new_denoiser(config, sigma_data)
    if initial is not None:
        model.load_state_dict(initial.state_dict())
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    average = WeightAverage(model, config.ema_half_life_steps) if config.ema_half_life_steps > 0 else None
    losses: list[float] = []
    first_step = 0
    if resume:
        state = _load_state(state_path(model_path), config)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        losses = state["losses"].tolist()
        first_step = int(state["step"])
        if average is not None:
            average.model.load_state_dict(state["average"])
            average.updates = int(state["average_updates"])
        logger.info("resuming %s at step %d", model_path, first_step)
    model.train()
    bar = show_progress(range(first_step, config.steps), desc=f"train {config.method}", unit="step",
                        enabled=progress, initial=first_step, total=config.steps)
    for step in bar:
        draws = _step_draws(config.seed, step)  # every random draw of the step, in a fixed order
        sources, targets = (torch.from_numpy(crops).to(device) for crops in
                            random_crop_pairs(normalised, config.crop_px, config.batch_size, draws.numpy))
        loss = objective(model, sources, targets, draws)
        if not torch.isfinite(loss):
            raise TrainingDiverged("--learning-rate", f"training diverged (loss {loss.item()} at step {step}); "
                             f"try a learning rate below {config.learning_rate:g}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        if average is not None:
            average.update(model)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            _save_state(state_path(model_path), step + 1, model, optimizer, losses, config, average)
    seconds = time.perf_counter() - started
    metadata = {
        "cryoscore_version": __version__,
        "method": config.method,
        "normalisation": NORMALISATION,
        "training_pixel_size_a": pixel_sizes[0],
        "pixel_size_range_a": [pixel_sizes[0], pixel_sizes[-1]],
        "min_pixel_size_a": config.min_pixel_size_a,
        "sigma_data": sigma_data,
        "train_config": config.to_dict(),
        "n_micrographs": len(pairs),
        "guidance": objective.summary(),
        "final_loss": float(np.mean(losses[-20:])),
        "train_seconds": seconds,
        **(extra or {}),
    }
    save_model(model_path, (model if average is None else average.model).cpu().eval(), extra=metadata)
    return TrainResult(model_path, losses, seconds)
