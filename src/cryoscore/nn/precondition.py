"""EDM preconditioning (Karras et al. 2022, "Elucidating the design space...", table 1).

The denoiser is ``D(y, sigma) = c_skip(sigma) y + c_out(sigma) F(c_in(sigma) y, c_noise(sigma))``
with ``F`` the raw network. ``sigma`` is the *total* noise standard deviation of ``y`` (the
noise already in the observation plus any added noise), in the units of the data, which
are normalised to roughly unit variance outside this module. With
``sigma_data`` the signal standard deviation, the network's input and its effective training
target both have unit variance for every sigma, and ``loss_weight`` makes the weighted L2
loss ``loss_weight * |D - target|^2`` equal to ``|F - F_target|^2``.

Everything is finite for sigma in [1e-3, 1e2] (and for any sigma > 0 representable in
float32 without over/underflow of sigma^2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cryoscore.nn.unet import NoiseConditionedUNet


@dataclass(frozen=True)
class EDMPreconditioner:
    """EDM scaling functions; all act element-wise on a tensor ``sigma`` > 0 of any shape.

    Attributes
    ----------
    sigma_data:
        Standard deviation of the clean signal, in data units (0.5 in EDM for images in
        [-1, 1]; for micrographs normalised to unit variance the signal is a small fraction).
    """

    sigma_data: float = 0.5

    def __post_init__(self) -> None:
        if not isinstance(self.sigma_data, (int, float)) or isinstance(self.sigma_data, bool):
            raise ValueError(f"sigma_data must be a number, got {self.sigma_data!r}")
        if not 0 < self.sigma_data < float("inf"):
            raise ValueError(f"sigma_data must be positive and finite, got {self.sigma_data}")

    def c_skip(self, sigma: torch.Tensor) -> torch.Tensor:
        """sigma_data^2 / (sigma^2 + sigma_data^2): 1 at sigma = 0, 0 as sigma -> inf."""
        return self.sigma_data**2 / (sigma**2 + self.sigma_data**2)

    def c_out(self, sigma: torch.Tensor) -> torch.Tensor:
        """sigma * sigma_data / sqrt(sigma^2 + sigma_data^2) (data units)."""
        return sigma * self.sigma_data * torch.rsqrt(sigma**2 + self.sigma_data**2)

    def c_in(self, sigma: torch.Tensor) -> torch.Tensor:
        """1 / sqrt(sigma^2 + sigma_data^2) (1 / data units): scales y to unit variance."""
        return torch.rsqrt(sigma**2 + self.sigma_data**2)

    def c_noise(self, sigma: torch.Tensor) -> torch.Tensor:
        """log(sigma) / 4: the network's noise-level input."""
        return torch.log(sigma) / 4

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """(sigma^2 + sigma_data^2) / (sigma * sigma_data)^2 = 1 / c_out^2."""
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2

    def to_dict(self) -> dict[str, float]:
        """JSON-serialisable form; ``EDMPreconditioner(**d)`` rebuilds it."""
        return {"sigma_data": float(self.sigma_data)}


class Denoiser(nn.Module):
    """D(y, sigma): a noise-conditioned network wrapped in EDM preconditioning.

    ``net`` is any module with ``net(x: (B, 1, H, W), c_noise: (B,)) -> (B, 1, H, W)``,
    normally a :class:`cryoscore.nn.unet.NoiseConditionedUNet`.
    """

    def __init__(self, net: NoiseConditionedUNet, preconditioner: EDMPreconditioner):
        super().__init__()
        self.net = net
        self.preconditioner = preconditioner

    def forward(self, y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """y: (B, 1, H, W) noisy image; sigma: (B,) its total noise std (> 0, data units).

        Returns (B, 1, H, W): the estimate of E[clean | y] (or E[target | y] as trained).
        """
        if sigma.shape != (y.shape[0],):
            raise ValueError(f"expected sigma of shape ({y.shape[0]},), got {tuple(sigma.shape)}")
        pre, sigma = self.preconditioner, sigma.to(y.dtype)
        s = sigma[:, None, None, None]
        return pre.c_skip(s) * y + pre.c_out(s) * self.net(pre.c_in(s) * y, pre.c_noise(sigma))


def tweedie_score(y: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Score of the noisy-data density by Tweedie's formula: (denoised - y) / sigma^2.

    y, denoised: (B, 1, H, W) (data units); sigma: (B,) total noise std of y.
    Returns (B, 1, H, W) in 1 / data units.
    """
    return (denoised - y) / sigma.to(y.dtype)[:, None, None, None] ** 2
