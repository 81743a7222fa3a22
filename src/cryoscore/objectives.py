"""Training objectives on Noise2Noise pairs in noise units (see ``pairs.normalise``).

A source crop and a target crop show the same signal with independent noise of std 1.

- ``n2n``: plain L2 Noise2Noise (the Topaz-Denoise recipe): ``D(source, 1) -> target``.
  The network always sees the same noise level.
- ``score``: Noise2Noise denoising score matching: extra Gaussian noise of a random level
  ``sigma_add`` is added to the source, the network is told the total level
  ``sigma = sqrt(1 + sigma_add^2)`` and still predicts the other half, with EDM's per-level
  weight ``1 / c_out(sigma)^2``. L2 makes the optimum ``E[signal | noisy source]`` at every
  level, so Tweedie's formula turns the denoiser into the score of the noisy data.
  Levels below a half's, down to a full sum's (``FULL_SUM_NOISE_SIGMA``), cannot come from a
  half; a ``full_sum_fraction`` of the examples comes from recorrupted full sums instead
  (``NoiseLevels``), so the model also knows the level of the micrographs it denoises.
- ``guided``: the ``score`` loss plus ``lambda`` times a supervised score-matching loss on
  synthetic examples with known clean targets (``pairs.guidance``), counted only at the
  wavelengths the reference is trusted at. With ``lambda = 0`` it is ``score``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from cryoscore.nn.precondition import Denoiser

METHODS = ("n2n", "score", "guided")
HALF_NOISE_SIGMA = 1.0
"""Noise std of one half in noise units (by construction of the normalisation)."""
FULL_SUM_NOISE_SIGMA = HALF_NOISE_SIGMA / math.sqrt(2)
"""Noise std of a full sum (both halves) in noise units: the level of the micrographs users denoise."""


@dataclass(frozen=True)
class NoiseLevels:
    """Distribution of the noise added for score matching.

    ``ln(sigma_add) ~ Normal(log_mean, log_std)``, and a ``zero_fraction`` of the samples get
    no added noise so the observed level itself is trained.

    A ``full_sum_fraction`` of the examples is then replaced by one at a level below a
    half's, uniform in ``[full_sum_lowest_sigma, 1)``, made from the crop's full sum ``f``
    (noise std ``1/sqrt(2)``) by recorruption (Pang et al. 2021): the source ``f + a z``
    and the target ``f - z / (2a)`` with ``z`` standard normal and ``a`` chosen so the
    source has the drawn level. The two noises are uncorrelated (independent where the
    shot noise is Gaussian) and the target's mean is the signal, so L2 still learns
    ``E[signal | source]``; the target is noisier (variance ``1/2 + 1/(4 a^2)``), which costs
    only gradient noise. The lowest level must lie above a full sum's, where ``a`` vanishes.
    """

    log_mean: float = 0.0
    log_std: float = 1.2
    zero_fraction: float = 0.25
    full_sum_fraction: float = 0.0
    full_sum_lowest_sigma: float = 0.75

    def __post_init__(self) -> None:
        if self.log_std < 0 or not 0 <= self.zero_fraction <= 1:
            raise ValueError("log_std must be >= 0 and zero_fraction in [0, 1]")
        if not 0 <= self.full_sum_fraction <= 1:
            raise ValueError(f"the full-sum fraction must be in [0, 1], got {self.full_sum_fraction}")
        if not FULL_SUM_NOISE_SIGMA < self.full_sum_lowest_sigma < HALF_NOISE_SIGMA:
            raise ValueError(f"the lowest full-sum level must lie between {FULL_SUM_NOISE_SIGMA:.4f} and "
                             f"{HALF_NOISE_SIGMA:g}, got {self.full_sum_lowest_sigma}")

    @property
    def lowest_sigma(self) -> float:
        """The lowest noise level a model trained with these levels has seen (noise units)."""
        return self.full_sum_lowest_sigma if self.full_sum_fraction > 0 else HALF_NOISE_SIGMA

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` added-noise levels (n,), float32, zeros included."""
        sigma = torch.exp(self.log_mean + self.log_std * torch.randn(n, generator=generator))
        keep = torch.rand(n, generator=generator) >= self.zero_fraction
        return sigma * keep


def noise2noise_loss(denoiser: Denoiser, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of ``D(source, 1)`` against the other half; source, target (B, 1, H, W)."""
    sigma = torch.full((source.shape[0],), HALF_NOISE_SIGMA)
    return torch.mean((denoiser(source, sigma) - target) ** 2)


def _add_noise(
    source: torch.Tensor, levels: NoiseLevels, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``source`` (B, 1, H, W) with extra noise of random levels; returns it and the total levels (B,)."""
    sigma_add = levels.sample(source.shape[0], generator)
    noisy = source + sigma_add[:, None, None, None] * torch.randn(source.shape, generator=generator)
    return noisy, torch.sqrt(HALF_NOISE_SIGMA**2 + sigma_add**2)


def score_matching_loss(
    denoiser: Denoiser,
    source: torch.Tensor,
    target: torch.Tensor,
    levels: NoiseLevels,
    generator: torch.Generator,
) -> torch.Tensor:
    """EDM-weighted L2 of ``D(source + sigma_add * eps, sigma)`` against the other half."""
    noisy, sigma = _add_noise(source, levels, generator)
    if levels.full_sum_fraction > 0:
        noisy, target, sigma = _with_full_sum_levels(source, target, noisy, sigma, levels, generator)
    weight = denoiser.preconditioner.loss_weight(sigma)[:, None, None, None]
    return torch.mean(weight * (denoiser(noisy, sigma) - target) ** 2)


def _with_full_sum_levels(
    source: torch.Tensor,
    target: torch.Tensor,
    noisy: torch.Tensor,
    sigma: torch.Tensor,
    levels: NoiseLevels,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Replace a ``levels.full_sum_fraction`` of the examples by recorrupted full sums (see
    :class:`NoiseLevels`); returns the (noisy source, target, level) of every example."""
    n = source.shape[0]
    chosen = (torch.rand(n, generator=generator) < levels.full_sum_fraction)[:, None, None, None]
    level = levels.full_sum_lowest_sigma + (HALF_NOISE_SIGMA - levels.full_sum_lowest_sigma) * torch.rand(
        n, generator=generator)
    amplitude = torch.sqrt(level**2 - FULL_SUM_NOISE_SIGMA**2)[:, None, None, None]
    extra = torch.randn(source.shape, generator=generator)
    full_sum = (source + target) / 2
    return (torch.where(chosen, full_sum + amplitude * extra, noisy),
            torch.where(chosen, full_sum - extra / (2 * amplitude), target),
            torch.where(chosen[:, 0, 0, 0], level, sigma))


def guided_loss(
    denoiser: Denoiser,
    synthetic_input: torch.Tensor,
    clean_target: torch.Tensor,
    levels: NoiseLevels,
    generator: torch.Generator,
    band: torch.Tensor,
) -> torch.Tensor:
    """Supervised score matching on synthetic examples, EDM-weighted, inside a frequency band.

    ``synthetic_input`` (B, 1, H, W) holds a half's noise level (1) like a real half;
    ``clean_target`` is its noise- and background-free particle image. The error is
    filtered by ``band`` (H, W//2+1, an rfft transfer) before it is squared, so only the
    wavelengths the reference is trusted at are taught.
    """
    noisy, sigma = _add_noise(synthetic_input, levels, generator)
    weight = denoiser.preconditioner.loss_weight(sigma)[:, None, None, None]
    error = denoiser(noisy, sigma) - clean_target
    band_error = torch.fft.irfft2(torch.fft.rfft2(error) * band, s=error.shape[-2:])
    return torch.mean(weight * band_error**2)
