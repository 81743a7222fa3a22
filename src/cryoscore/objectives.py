"""Training objectives on Noise2Noise pairs in noise units (see ``pairs.normalise``).

A source crop and a target crop show the same signal with independent noise of std 1. Each
objective is one callable with one interface, ``objective(denoiser, sources, targets, draws)
-> loss``, as EDM writes its losses; ``train`` calls it and knows no method by name
(:func:`build_objective` maps a method name to its objective).

- :class:`Noise2Noise` (``n2n``): plain L2 Noise2Noise (the Topaz-Denoise recipe):
  ``D(source, 1) -> target``. The network always sees the same noise level.
- :class:`ScoreMatching` (``score``): Noise2Noise denoising score matching: extra Gaussian
  noise of a random level ``sigma_add`` is added to the source, the network is told the total
  level ``sigma = sqrt(1 + sigma_add^2)`` and still predicts the other half, with EDM's
  per-level weight ``1 / c_out(sigma)^2``. L2 makes the optimum ``E[signal | noisy source]``
  at every level, so Tweedie's formula turns the denoiser into the score of the noisy data.
- :class:`Guided` (``guided``): the ``score`` loss plus ``strength`` (the paper's lambda)
  times a supervised score-matching loss on synthetic examples with known clean targets
  (``pairs.guidance``), counted only at the wavelengths the reference is trusted at. With
  ``strength = 0`` it is ``score``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np
import torch

from cryoscore.nn.precondition import Denoiser
from cryoscore.pairs.guidance import GuidanceExamples
from cryoscore.pairs.halves import HalfPair
from cryoscore.settings import GuidanceConfig, NoiseLevels

HALF_NOISE_SIGMA = 1.0
"""Noise std of one half in noise units (by construction of the normalisation)."""


@dataclass(frozen=True)
class StepDraws:
    """The randomness of one training step: ``numpy`` draws crops and synthetic examples,
    ``torch`` the added noise; ``step`` numbers the step (the guidance bank refreshes by it)."""

    numpy: np.random.Generator
    torch: torch.Generator
    step: int


class Objective(Protocol):
    """One step's loss: ``sources`` and ``targets`` (B, 1, H, W) are the two halves' crops."""

    def __call__(self, denoiser: Denoiser, sources: torch.Tensor, targets: torch.Tensor,
                 draws: StepDraws) -> torch.Tensor: ...

    def summary(self) -> dict[str, Any] | None:
        """What the model's metadata records about the objective beyond its settings."""


class Noise2Noise:
    """Mean squared error of ``D(source, 1)`` against the other half."""

    def __call__(self, denoiser: Denoiser, sources: torch.Tensor, targets: torch.Tensor,
                 draws: StepDraws) -> torch.Tensor:
        sigma = torch.full((sources.shape[0],), HALF_NOISE_SIGMA, device=sources.device)
        return torch.mean((denoiser(sources, sigma) - targets) ** 2)

    def summary(self) -> None:
        return None


def sample_levels(levels: NoiseLevels, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` added-noise levels (n,), float32, drawn as ``levels`` says, zeros included."""
    sigma = torch.exp(levels.log_mean + levels.log_std * torch.randn(n, generator=generator))
    keep = torch.rand(n, generator=generator) >= levels.zero_fraction
    return sigma * keep


def _add_noise(
    source: torch.Tensor, levels: NoiseLevels, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``source`` (B, 1, H, W) with extra noise of random levels; returns it and the total levels (B,).

    The draws come from ``generator`` on the CPU whatever ``source``'s device, so a run on a GPU
    draws the same noise as one on the CPU.
    """
    sigma_add = sample_levels(levels, source.shape[0], generator).to(source.device)
    noisy = source + sigma_add[:, None, None, None] * torch.randn(source.shape, generator=generator).to(source.device)
    return noisy, torch.sqrt(HALF_NOISE_SIGMA**2 + sigma_add**2)


def weighted_denoising_error(denoiser: Denoiser, inputs: torch.Tensor, targets: torch.Tensor, levels: NoiseLevels,
                             generator: torch.Generator, band: torch.Tensor | None = None) -> torch.Tensor:
    """EDM-weighted L2 of ``D(inputs + sigma_add * eps, sigma)`` against ``targets``, (B, 1, H, W) each.

    ``inputs`` hold a half's noise level (1). With ``band`` (H, W//2+1, an rfft transfer) the
    error is filtered before it is squared, so only the wavelengths the band passes count.
    """
    noisy, sigma = _add_noise(inputs, levels, generator)
    weight = denoiser.preconditioner.loss_weight(sigma)[:, None, None, None]
    error = denoiser(noisy, sigma) - targets
    if band is not None:
        error = torch.fft.irfft2(torch.fft.rfft2(error) * band.to(error.device), s=error.shape[-2:])
    return torch.mean(weight * error**2)


@dataclass(frozen=True)
class ScoreMatching:
    """Noise2Noise denoising score matching over ``levels`` of added noise."""

    levels: NoiseLevels = field(default_factory=NoiseLevels)

    def __call__(self, denoiser: Denoiser, sources: torch.Tensor, targets: torch.Tensor,
                 draws: StepDraws) -> torch.Tensor:
        return weighted_denoising_error(denoiser, sources, targets, self.levels, draws.torch)

    def summary(self) -> None:
        return None


@dataclass(frozen=True)
class Guided:
    """Score matching plus ``strength`` times supervised score matching on ``examples``.

    Each step draws as many synthetic crops as the batch has, of the same size; their error
    against the clean particle images counts only in the band the reference is trusted at
    (``examples.loss_band``).
    """

    examples: GuidanceExamples
    strength: float
    levels: NoiseLevels = field(default_factory=NoiseLevels)

    def __call__(self, denoiser: Denoiser, sources: torch.Tensor, targets: torch.Tensor,
                 draws: StepDraws) -> torch.Tensor:
        loss = weighted_denoising_error(denoiser, sources, targets, self.levels, draws.torch)
        batch, crop_px = sources.shape[0], sources.shape[-1]
        inputs, clean = (torch.from_numpy(crops).to(sources.device)
                         for crops in self.examples.sample(batch, crop_px, draws.numpy, draws.step))
        guided = weighted_denoising_error(denoiser, inputs, clean, self.levels, draws.torch,
                                          self.examples.loss_band(crop_px))
        return loss + self.strength * guided

    def summary(self) -> dict[str, Any]:
        return self.examples.summary()


def build_objective(method: str, levels: NoiseLevels, guidance: GuidanceConfig | None,
                    normalised_pairs: Sequence[HalfPair], pixel_size_a: float, seed: int) -> Objective:
    """The objective of ``method`` (one of :data:`cryoscore.settings.METHODS`) for a training run.

    ``guidance`` (``guided`` only) builds the synthetic examples from ``normalised_pairs``
    (noise units, all at ``pixel_size_a``) with ``seed``; a strength of 0 gives exactly
    :class:`ScoreMatching`, without building them.
    """
    if method == "n2n":
        return Noise2Noise()
    if method == "score" or (method == "guided" and guidance is not None and guidance.strength == 0):
        return ScoreMatching(levels)
    if method == "guided" and guidance is not None:
        return Guided(GuidanceExamples(guidance, normalised_pairs, pixel_size_a, seed), guidance.strength, levels)
    raise ValueError(f"unknown method {method!r} or guided without guidance")
