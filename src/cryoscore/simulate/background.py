"""Structured low-frequency background: the ice layer seen through the beam.

Everything here is a thickness map in Angstrom, turned into a transmission factor
``T = exp(-(t - t_mean) / mean_free_path)`` (inelastic scattering removed by the
energy filter). It multiplies the whole image and is the same in every frame, so it is
part of both Noise2Noise halves: exactly what plain Noise2Noise cannot remove.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from cryoscore.fourier import radial_frequency

INELASTIC_MEAN_FREE_PATH_A = 3500.0
"""Inelastic mean free path of electrons in vitreous ice at 300 kV, Angstrom (approximate)."""


@dataclass(frozen=True)
class BackgroundParams:
    """How much structured background to put on a micrograph.

    Attributes
    ----------
    strength:
        Scales the random ice-thickness variation (``120 A * strength`` standard deviation,
        power-law spectrum) and the linear thickness gradient (``150 A * strength`` across
        the field of view). 0 gives a flat background.
    spectral_exponent:
        The ice field's power spectrum falls as ``|k|^-spectral_exponent``...
    shortest_wavelength_a:
        ...and is rolled off (Gaussian) below this wavelength, Angstrom: ice varies over
        hundreds of nanometres, not over a particle.
    carbon_edge:
        Put the edge of a continuous carbon film (200 A thick) across the micrograph.
    n_contamination:
        Number of contamination blobs (ice crystals, ethane droplets), 200-600 A radius.
    vitreous_ice_a:
        Thickness of vitreous ice whose own molecular phase contrast is simulated, Angstrom
        (:mod:`cryoscore.simulate.ice`: the Thon rings of a particle-free area); 0: none,
        only the particles are phase objects.
    """

    strength: float = 1.0
    spectral_exponent: float = 4.0
    shortest_wavelength_a: float = 600.0
    carbon_edge: bool = False
    n_contamination: int = 0
    vitreous_ice_a: float = 0.0

    def __post_init__(self) -> None:
        if self.strength < 0 or self.n_contamination < 0 or self.vitreous_ice_a < 0:
            raise ValueError("background strength, contamination count and vitreous ice thickness must be >= 0")
        if self.spectral_exponent <= 0 or self.shortest_wavelength_a <= 0:
            raise ValueError("spectral exponent and shortest wavelength must be > 0")


def _power_law_field(
    rng: np.random.Generator, shape: tuple[int, int], exponent: float, shortest_wavelength_px: float
) -> torch.Tensor:
    """Zero-mean, unit-std Gaussian random field (H, W).

    Power spectrum ``|k|^-exponent * exp(-(k * shortest_wavelength_px)^2)``, k in cycles/pixel.
    """
    white = torch.from_numpy(rng.standard_normal(shape, dtype=np.float32))
    k = radial_frequency(shape, backend="torch")
    roll_off = torch.exp(-((k * shortest_wavelength_px) ** 2) / 2)
    amplitude = torch.where(k > 0, k.clamp_min(1e-12) ** (-exponent / 2) * roll_off, torch.zeros(()))
    field = torch.fft.irfft2(torch.fft.rfft2(white) * amplitude, s=shape)
    field = field - field.mean()
    return field / field.std().clamp_min(1e-12)


def _pixel_grid_a(shape: tuple[int, int], pixel_size_a: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column coordinates of pixel centres in Angstrom, each (H, 1) and (1, W)."""
    rows = torch.arange(shape[0], dtype=torch.float32)[:, None] * pixel_size_a
    cols = torch.arange(shape[1], dtype=torch.float32)[None, :] * pixel_size_a
    return rows, cols


def ice_thickness_variation_a(
    rng: np.random.Generator, shape: tuple[int, int], pixel_size_a: float, params: BackgroundParams
) -> torch.Tensor:
    """Deviation of the specimen thickness from its mean, Angstrom, float32 (H, W)."""
    rows, cols = _pixel_grid_a(shape, pixel_size_a)
    extent_a = max(shape) * pixel_size_a
    thickness = 120.0 * params.strength * _power_law_field(
        rng, shape, params.spectral_exponent, params.shortest_wavelength_a / pixel_size_a
    )
    direction = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(direction) * cols + np.sin(direction) * rows) / extent_a
    thickness = thickness + 150.0 * params.strength * (ramp - ramp.mean())
    if params.carbon_edge:
        # The film edge: a gentle arc (a circle much larger than the image) through a random point.
        radius_a = rng.uniform(2.0, 5.0) * extent_a
        angle = rng.uniform(0, 2 * np.pi)
        through_row, through_col = rng.uniform(0.3, 0.7, size=2) * np.array(shape) * pixel_size_a
        centre_row = through_row + radius_a * np.sin(angle)
        centre_col = through_col + radius_a * np.cos(angle)
        distance_inside_a = radius_a - torch.sqrt((rows - centre_row) ** 2 + (cols - centre_col) ** 2)
        thickness = thickness + 200.0 * torch.sigmoid(distance_inside_a / 15.0)
    for _ in range(params.n_contamination):
        blob_row, blob_col = rng.uniform(0, 1, size=2) * np.array(shape) * pixel_size_a
        radius_a = rng.uniform(200.0, 600.0)
        r2 = ((rows - blob_row) ** 2 + (cols - blob_col) ** 2) / radius_a**2
        thickness = thickness + rng.uniform(1500.0, 4000.0) * torch.exp(-(r2**2))
    return thickness


def ice_transmission(
    rng: np.random.Generator, shape: tuple[int, int], pixel_size_a: float, params: BackgroundParams
) -> torch.Tensor:
    """Fraction of the beam left after the specimen, relative to the mean ice, float32 (H, W).

    ``exp(-delta_t / INELASTIC_MEAN_FREE_PATH_A)``: about 1, lower where the ice is
    thicker, on carbon and under contamination.
    """
    variation = ice_thickness_variation_a(rng, shape, pixel_size_a, params)
    return torch.exp(-variation / INELASTIC_MEAN_FREE_PATH_A)
