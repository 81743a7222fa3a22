"""Stochastic sampling with a score model: a mean estimate and a per-pixel std map.

A micrograph in noise units is ``y = x + sigma_y * n``. The reverse diffusion walks an
image at level ``s_0`` down to ``s_N``, each step (the variance-exploding "reverse
diffusion" predictor of Song et al. 2021) being

    x <- x + (s_i^2 - s_{i+1}^2) * score(x, s_i) + sqrt(s_i^2 - s_{i+1}^2) * z,
    score(x, s) = (D(x, s) - x) / s^2     (Tweedie).

Models trained on Noise2Noise halves only know levels at or above a half's (the
``floor``), and every micrograph they are given (a half, or a full sum at 0.707 of a
half's noise) is already at or below it, so the exact posterior ``p(x | y)`` cannot be
walked to. Each sample instead adds fresh noise to bring the input to
``sqrt(max(sigma_y, floor)^2 + floor^2)`` (a half's worth above the level the one-step
estimate assumes), shaped by the input's measured local noise level (so noisier regions
get proportionally more), walks back down to the floor in ``steps`` steps and ends with the
Tweedie estimate ``D(x, floor)``. The samples' mean is a (slightly smoother) estimate of
the signal; their per-pixel standard deviation shows where the estimate is not pinned
down by the data: it grows with the input's noise and is largest where the model has to
invent structure. It is an uncertainty map, not the exact posterior standard deviation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

SAMPLERS = ("tweedie", "sde")

DenoiseFunction = Callable[[torch.Tensor, float], torch.Tensor]
"""``D(x, sigma)``: the model's estimate of the signal in x (H, W) at noise level sigma."""


@dataclass(frozen=True)
class SamplerConfig:
    """How ``cryoscore denoise`` turns a model into an estimate.

    ``tweedie``: one deterministic step, ``D(y, sigma_y)``. ``sde``: ``samples`` stochastic
    samples, each a walk of ``steps`` reverse-diffusion steps (geometric in sigma); their
    mean is the estimate and their standard deviation the uncertainty map. ``seed`` fixes
    the samples' noise.
    """

    name: str = "tweedie"
    steps: int = 10
    samples: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.name not in SAMPLERS:
            raise ValueError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {self.name!r}")
        if self.steps < 1 or self.samples < 1 or self.seed < 0:
            raise ValueError("--steps and --uncertainty must be >= 1, the seed >= 0")


def noise_schedule(sigma_start: float, sigma_end: float, steps: int) -> list[float]:
    """``steps + 1`` levels from ``sigma_start`` down to ``sigma_end``, geometric (one level if equal)."""
    if sigma_start <= sigma_end:
        return [sigma_end]
    ratio = sigma_end / sigma_start
    return [sigma_start * ratio ** (index / steps) for index in range(steps + 1)]


def stochastic_sample(
    denoise: DenoiseFunction,
    observation: torch.Tensor,
    sigma_observation: float,
    sigma_floor: float,
    noise_map: torch.Tensor,
    steps: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """One stochastic estimate of the signal in ``observation`` (H, W), noise units; see the module.

    ``noise_map`` (H, W) is the input's local noise std relative to ``sigma_observation``.
    """
    sigma_assumed = max(sigma_observation, sigma_floor)
    sigma_start = math.sqrt(sigma_assumed**2 + sigma_floor**2)
    lift = math.sqrt(sigma_start**2 - sigma_observation**2) * noise_map
    x = observation + lift * torch.randn(observation.shape, generator=generator)
    levels = noise_schedule(sigma_start, sigma_floor, steps)
    for sigma, next_sigma in zip(levels[:-1], levels[1:]):
        variance_step = sigma**2 - next_sigma**2
        score = (denoise(x, sigma) - x) / sigma**2
        x = x + variance_step * score + math.sqrt(variance_step) * torch.randn(x.shape, generator=generator)
    return denoise(x, sigma_floor)


def sample_mean_and_std(
    denoise: DenoiseFunction,
    observation: torch.Tensor,
    sigma_observation: float,
    sigma_floor: float,
    noise_map: torch.Tensor,
    config: SamplerConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and per-pixel standard deviation (each H, W) of ``config.samples`` stochastic samples.

    With one sample the standard deviation is zero. Samples are accumulated one at a
    time (Welford), so memory does not grow with their number.
    """
    generator = torch.Generator().manual_seed(config.seed)
    mean = torch.zeros_like(observation, dtype=torch.float64)
    sum_squares = torch.zeros_like(mean)
    for count in range(1, config.samples + 1):
        sample = stochastic_sample(denoise, observation, sigma_observation, sigma_floor, noise_map, config.steps,
                                   generator)
        delta = sample.double() - mean
        mean += delta / count
        sum_squares += delta * (sample.double() - mean)
    std = torch.sqrt(sum_squares / max(config.samples - 1, 1))
    return mean.float(), std.float()
