"""Fourier shell correlation between maps, and the resolution where it crosses a threshold.

Both maps are multiplied by the same soft spherical mask before the FSC (torch-fourier-
shell-correlation): 1 within the particle radius, a raised-cosine edge outside it (the
pipeline uses an edge of 0.1 diameter). The mask removes the solvent noise, so the FSC
measures the particle. A mask this loose and soft correlates the maps only at the lowest
frequencies (its own width); the 3D path applies no phase-randomisation correction (on the real
set's half maps it moves the resolution by at most 1.6 A: benchmarks/RESULTS.md, section 7).

Where the maps are smooth and the mask's edge cuts through density they share (a 2D class
average of junk: an offset over the whole disc), the mask's edge correlates them at every
frequency. :func:`phase_randomised_fsc` removes that as RELION's post-processing does (Chen et
al., 2013, Ultramicroscopy 135:24): the FSC of the masked maps is corrected by the FSC of the
same maps with their phases beyond a frequency randomised, then masked again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch_fourier_shell_correlation import fsc

from cryoscore.fourier import radial_frequency

#: Gold-standard threshold for independent half maps (Rosenthal and Henderson, 2003).
HALF_MAP_THRESHOLD = 0.143
#: Threshold against a noise-free map (equivalent to 0.143 between half maps).
TRUTH_THRESHOLD = 0.5


@dataclass(frozen=True, eq=False)
class FscCurve:
    """FSC per shell.

    Attributes
    ----------
    frequency_per_a:
        float64 (n_shells,) shell frequencies, 1/Angstrom, from 0 to Nyquist.
    correlation:
        float64 (n_shells,) FSC in each shell.
    """

    frequency_per_a: np.ndarray
    correlation: np.ndarray

    def resolution_a(self, threshold: float) -> float:
        """Resolution (Angstrom) where the FSC first falls below ``threshold``.

        Interpolated linearly in frequency between the last shell above and the first
        below. The Nyquist resolution if it never falls below; ``math.inf`` if it is below
        already in the first shell past the origin.
        """
        below = np.nonzero(self.correlation[1:] < threshold)[0]
        if len(below) == 0:
            return 1.0 / float(self.frequency_per_a[-1])
        shell = int(below[0]) + 1
        if shell == 1 and self.correlation[0] < threshold:
            return math.inf
        f0, f1 = self.frequency_per_a[shell - 1], self.frequency_per_a[shell]
        c0, c1 = self.correlation[shell - 1], self.correlation[shell]
        crossing = f0 + (c0 - threshold) / (c0 - c1) * (f1 - f0)
        return math.inf if crossing <= 0 else 1.0 / float(crossing)

    def to_dict(self) -> dict[str, list[float]]:
        return {"frequency_per_a": self.frequency_per_a.tolist(), "fsc": self.correlation.tolist()}


def fourier_shell_correlation(
    first: torch.Tensor, second: torch.Tensor, pixel_size_a: float, mask: torch.Tensor
) -> FscCurve:
    """FSC between two maps (B, B, B) or images (B, B) after multiplying both by ``mask`` (same shape)."""
    correlation = fsc(first * mask, second * mask).double().numpy()
    box = first.shape[-1]
    frequency = np.fft.rfftfreq(box, d=pixel_size_a)
    return FscCurve(frequency_per_a=frequency, correlation=correlation)


def randomise_phases(image: torch.Tensor, pixel_size_a: float, beyond_a: float,
                     generator: torch.Generator) -> torch.Tensor:
    """``image`` (B, B) or (B, B, B), real, with the phase of every Fourier component finer than
    ``beyond_a`` (Angstrom) replaced by a uniform random one; amplitudes and coarser components kept."""
    spectrum = torch.fft.rfftn(image)
    frequency = radial_frequency(tuple(image.shape), pixel_size_a, backend="torch")
    phases = torch.rand(spectrum.shape, generator=generator, dtype=image.dtype) * (2 * math.pi)
    randomised = torch.where(frequency > 1.0 / beyond_a, spectrum.abs() * torch.exp(1j * phases), spectrum)
    return torch.fft.irfftn(randomised, s=image.shape)


def phase_randomised_fsc(first: torch.Tensor, second: torch.Tensor, pixel_size_a: float, mask: torch.Tensor,
                         randomise_beyond_a: float, seed: int = 0) -> FscCurve:
    """FSC between two maps or images (B,)*ndim under ``mask``, corrected for what the mask
    correlates: beyond ``randomise_beyond_a`` (Angstrom; a frequency where the two share
    nothing by construction), ``(FSC - FSC_r) / (1 - FSC_r)``, where FSC_r is the FSC of the two
    with their phases randomised there (:func:`randomise_phases`, independently, seeded by
    ``seed``) and then masked. Coarser shells keep the masked FSC."""
    masked = fourier_shell_correlation(first, second, pixel_size_a, mask)
    generator = torch.Generator().manual_seed(seed)
    randomised = fourier_shell_correlation(randomise_phases(first, pixel_size_a, randomise_beyond_a, generator),
                                           randomise_phases(second, pixel_size_a, randomise_beyond_a, generator),
                                           pixel_size_a, mask).correlation
    beyond = (masked.frequency_per_a > 1.0 / randomise_beyond_a) & (randomised < 1.0)
    corrected = masked.correlation.copy()
    corrected[beyond] = (corrected[beyond] - randomised[beyond]) / (1.0 - randomised[beyond])
    return FscCurve(frequency_per_a=masked.frequency_per_a, correlation=corrected)
