"""The camera: how an electron counting detector records the expected image.

An ideal detector (the default, :data:`IDEAL`) counts every electron in the pixel it lands
in: the counts are Poisson with the expected image as mean, independent between pixels, and
the image is the expected value at the pixel centres. A real counting camera (K2/K3, Falcon)
differs in two ways that matter to a denoiser, both modelled here on the camera's own grid:

- **Modulation transfer (MTF)**: a pixel integrates over its area (a ``sinc`` per axis) and
  each event is localised with an error (a Gaussian of ``localisation_px``), so fine signal
  is attenuated: ``MTF(f) = sinc(f_x) sinc(f_y) exp(-2 pi^2 s^2 |f|^2)`` with ``f`` in
  cycles per pixel (``sinc(x) = sin(pi x) / (pi x)``; 0.64 at Nyquist for the aperture alone).
- **Double counting**: a fraction ``double_count_fraction`` (``p``) of the electrons is
  counted a second time in one of the four edge neighbours of its pixel (the charge cloud
  crosses the pixel border). This makes the noise correlated between neighbours: with
  ``lambda`` electrons per pixel, the counts have variance ``lambda (1 + p)``, covariance
  ``lambda p / 2`` with each edge neighbour and none diagonally, so the noise power spectrum
  is ``lambda (1 + p + p (cos 2 pi f_x + cos 2 pi f_y))``: it falls from ``1 + 3p`` at zero
  frequency to ``1 + p`` at the Nyquist frequency of one axis (radially averaged, with
  ``p = 0.1``, it falls by 12 % from half Nyquist to Nyquist; the real EMPIAR-10146
  micrographs' falls by 9-11 %), and ``DQE(0) = (1 + p)^2 / (1 + 3p)``.

The sampling is exact by Poisson thinning: of ``Poisson(lambda)`` electrons, those counted
once are ``Poisson(lambda (1 - p))`` and those shared with each neighbour ``Poisson(lambda p /
4)``, all independent. Sums of frames keep the form (shifts commute with sums), so half sums
are drawn from their summed means as for the ideal detector (:mod:`cryoscore.simulate.dose`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from cryoscore.fourier import frequency_axes

#: The four edge neighbours, (row, column) offsets.
_NEIGHBOURS = ((1, 0), (-1, 0), (0, 1), (0, -1))


@dataclass(frozen=True)
class DetectorParams:
    """A counting camera's response (see the module docstring), on the image's pixel grid.

    ``pixel_aperture``: whether pixels integrate over their area (``sinc`` MTF) rather than
    sample the expected image at their centres; ``localisation_px``: standard deviation of an
    electron event's position error, pixels; ``double_count_fraction``: fraction of the
    electrons counted a second time in an edge neighbour (0 <= p <= 1).
    """

    pixel_aperture: bool = False
    localisation_px: float = 0.0
    double_count_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.localisation_px) and self.localisation_px >= 0):
            raise ValueError(f"detector localisation must be >= 0 px, got {self.localisation_px}")
        if not 0 <= self.double_count_fraction <= 1:
            raise ValueError(f"detector double-count fraction must lie in [0, 1], got {self.double_count_fraction}")


IDEAL = DetectorParams()
"""Every electron counted once where it lands; no MTF: what cryoscore simulated before detectors."""

COUNTING = DetectorParams(pixel_aperture=True, localisation_px=0.2, double_count_fraction=0.1)
"""A typical counting camera at its physical pixel: MTF 0.52 at Nyquist, neighbours' noise
correlated as in the EMPIAR-10146 micrographs (DQE(0) 0.93)."""

PRESETS = {"ideal": IDEAL, "counting": COUNTING}
"""``cryoscore simulate --detector NAME``."""


def mtf(params: DetectorParams, shape: tuple[int, int]) -> torch.Tensor:
    """The MTF on the ``rfft2`` grid of an image of ``shape`` (H, W), float64 (H, W//2+1)."""
    fy, fx = frequency_axes(shape, backend="torch", dtype=torch.float64)
    transfer = torch.exp(-2 * math.pi**2 * params.localisation_px**2 * (fy**2 + fx**2))
    if params.pixel_aperture:
        transfer = transfer * torch.sinc(fy) * torch.sinc(fx)
    return transfer


def apply_mtf(image: torch.Tensor, params: DetectorParams) -> torch.Tensor:
    """``image`` (H, W) as the camera's MTF passes it (the expected electrons per pixel), float32."""
    if not params.pixel_aperture and params.localisation_px == 0:
        return image
    spectrum = torch.fft.rfft2(image.to(torch.float64)) * mtf(params, (image.shape[-2], image.shape[-1]))
    return torch.fft.irfft2(spectrum, s=tuple(image.shape)).to(torch.float32)


def _share(image: torch.Tensor, fraction: float) -> torch.Tensor:
    """``image`` plus ``fraction / 4`` of it moved to each edge neighbour (periodic edges), as the
    counts of shared electrons are recorded in both pixels."""
    shared = sum(torch.roll(image, shifts=offset, dims=(0, 1)) for offset in _NEIGHBOURS)
    return image + fraction / 4 * shared


def expected_counts(electrons: torch.Tensor, params: DetectorParams) -> torch.Tensor:
    """Expected recorded counts (H, W) of ``electrons`` per pixel (after :func:`apply_mtf`):
    ``electrons`` plus the double-counted share in each neighbour (mean ``(1 + p)`` times)."""
    if params.double_count_fraction == 0:
        return electrons
    return _share(electrons, params.double_count_fraction)


def sample_counts(electrons: torch.Tensor, params: DetectorParams, generator: torch.Generator) -> torch.Tensor:
    """Recorded counts (H, W, float32) of a frame or a sum of frames whose expected electrons per
    pixel (after :func:`apply_mtf`) are ``electrons`` (tiny negative ringing clipped)."""
    electrons = electrons.clamp_min(0.0)
    fraction = params.double_count_fraction
    if fraction == 0:
        return torch.poisson(electrons, generator=generator)
    counts = torch.poisson(electrons * (1 - fraction), generator=generator)
    for offset in _NEIGHBOURS:
        shared = torch.poisson(electrons * (fraction / 4), generator=generator)
        counts += shared + torch.roll(shared, shifts=offset, dims=(0, 1))
    return counts
