"""The phase contrast of vitreous ice itself: the Thon rings of a real micrograph's spectrum.

Water molecules are weak phase objects like the particle's atoms. A slab of ``t`` Angstrom
of ice holds ``n = WATER_NUMBER_DENSITY * t`` molecules per square Angstrom, at random
positions with the short-range order of a dense liquid, so its projected potential is a
stationary random field with power spectrum (V^2 A^2, k in 1/A)::

    P(k) = n * V_w(k)^2 * S(k)

``V_w(k) = 47.878 V*A^2 * (f_O(k) + 2 f_H(k))`` is one molecule's scattering (electron
scattering factors of International Tables C 4.3.2.2, through gemmi, at
``sin(theta)/lambda = k/2``) and ``S(k)`` the structure factor of the molecules' centres,
modelled as hard spheres of the oxygen-oxygen contact distance in the Percus-Yevick
approximation (Wertheim's closed form): ``S(0) = (1 - eta)^4 / (1 + 2 eta)^2`` = 0.056 for
water's packing fraction (measured for water: 0.06), rising to its first peak at k = 0.37 1/A
(measured for vitreous ice: 0.27 1/A; the hard spheres put it a little too far out). The phase
``sigma_e * potential`` passes through the micrograph's CTF with the particles' phase
(:mod:`cryoscore.simulate.micrograph`), so a spectrum shows Thon rings even where there are
no particles, as real micrographs do.
"""

from __future__ import annotations

import math

import gemmi
import numpy as np
import torch

from cryoscore.fourier import radial_frequency
from cryoscore.simulate.specimen import VOLTS_A3_PER_SCATTERING_A

WATER_NUMBER_DENSITY_PER_A3 = 0.0314
"""Molecules per cubic Angstrom in vitreous (low-density amorphous) ice, 0.94 g/cm^3."""
WATER_CONTACT_DISTANCE_A = 2.8
"""Oxygen-oxygen distance of neighbouring molecules, Angstrom: the hard-sphere diameter."""


def water_scattering_v_a3(k_per_a: np.ndarray) -> np.ndarray:
    """One water molecule's scattering (the Fourier transform of its potential), V*A^3, at ``k`` (1/A)."""
    stol2 = (np.asarray(k_per_a, dtype=np.float64) / 2) ** 2
    oxygen, hydrogen = gemmi.Element("O").c4322, gemmi.Element("H").c4322
    factor = np.vectorize(lambda s2: oxygen.calculate_sf(s2) + 2 * hydrogen.calculate_sf(s2))(stol2)
    return VOLTS_A3_PER_SCATTERING_A * factor


def hard_sphere_structure_factor(k_per_a: np.ndarray, diameter_a: float = WATER_CONTACT_DISTANCE_A,
                                 number_density_per_a3: float = WATER_NUMBER_DENSITY_PER_A3) -> np.ndarray:
    """Percus-Yevick structure factor of hard spheres at spatial frequency ``k`` (1/A; q = 2 pi k)."""
    eta = math.pi / 6 * number_density_per_a3 * diameter_a**3
    alpha = (1 + 2 * eta) ** 2 / (1 - eta) ** 4
    beta = -6 * eta * (1 + eta / 2) ** 2 / (1 - eta) ** 4
    gamma = eta * alpha / 2
    x = np.maximum(2 * np.pi * np.asarray(k_per_a, dtype=np.float64) * diameter_a, 1e-2)
    sin, cos = np.sin(x), np.cos(x)
    bracket = (alpha * x**3 * (sin - x * cos)
               + beta * x**2 * (2 * x * sin - (x**2 - 2) * cos - 2)
               + gamma * ((4 * x**3 - 24 * x) * sin - (x**4 - 12 * x**2 + 24) * cos + 24))
    structure = 1 / (1 + 24 * eta / x**6 * bracket)
    small = x < 0.5  # the closed form cancels badly here; S is flat to within 1 % below x = 0.5
    return np.where(small, (1 - eta) ** 4 / (1 + 2 * eta) ** 2, structure)


def ice_potential_spectrum(k_per_a: np.ndarray, thickness_a: float) -> np.ndarray:
    """Power spectrum of the projected potential of ``thickness_a`` of vitreous ice, V^2 A^2, at ``k`` (1/A)."""
    molecules_per_a2 = WATER_NUMBER_DENSITY_PER_A3 * thickness_a
    return molecules_per_a2 * water_scattering_v_a3(k_per_a) ** 2 * hard_sphere_structure_factor(k_per_a)


def ice_projected_potential(rng: np.random.Generator, shape: tuple[int, int], pixel_size_a: float,
                            thickness_a: float) -> torch.Tensor:
    """A random projected potential (V*A, zero mean) of ``thickness_a`` of ice on a (H, W) grid, float32.

    Gaussian, periodic, with the spectrum of :func:`ice_potential_spectrum`: a DFT coefficient
    has variance ``H * W * P(k) / pixel_size_a^2``.
    """
    amplitude = np.sqrt(ice_potential_spectrum(radial_frequency(shape, pixel_size_a), thickness_a)) / pixel_size_a
    amplitude[0, 0] = 0.0
    white = rng.standard_normal(shape)
    field = np.fft.irfft2(np.fft.rfft2(white) * amplitude, s=shape)
    return torch.from_numpy(field.astype(np.float32))
