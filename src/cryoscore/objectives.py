"""Training objectives on Noise2Noise pairs in noise units (see ``pairs.normalise``).

A source crop and a target crop show the same signal with independent noise of std 1.

- ``n2n``: plain L2 Noise2Noise (the Topaz-Denoise recipe): ``D(source, 1) -> target``.
  The network always sees the same noise level.
- ``score``: Noise2Noise denoising score matching: extra Gaussian noise of a random level
  ``sigma_add`` is added to the source, the network is told the total level
  ``sigma = sqrt(1 + sigma_add^2)`` and still predicts the other half, with EDM's per-level
  weight ``1 / c_out(sigma)^2``. L2 makes the optimum ``E[signal | noisy source]`` at every
  level, so Tweedie's formula turns the denoiser into the score of the noisy data.
- ``guided``: the ``score`` loss plus ``lambda`` times a supervised score-matching loss on
  synthetic examples with known clean targets (``pairs.guidance``), counted only at the
  wavelengths the reference is trusted at. With ``lambda = 0`` it is ``score``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cryoscore.nn.precondition import Denoiser

METHODS = ("n2n", "score", "guided")
HALF_NOISE_SIGMA = 1.0
"""Noise std of one half in noise units (by construction of the normalisation)."""


@dataclass(frozen=True)
class NoiseLevels:
    """Distribution of the noise added for score matching.

    ``ln(sigma_add) ~ Normal(log_mean, log_std)``, and a ``zero_fraction`` of the samples get
    no added noise so the observed level itself is trained.
    """

    log_mean: float = 0.0
    log_std: float = 1.2
    zero_fraction: float = 0.25

    def __post_init__(self) -> None:
        if self.log_std < 0 or not 0 <= self.zero_fraction <= 1:
            raise ValueError("log_std must be >= 0 and zero_fraction in [0, 1]")

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
    weight = denoiser.preconditioner.loss_weight(sigma)[:, None, None, None]
    return torch.mean(weight * (denoiser(noisy, sigma) - target) ** 2)


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
