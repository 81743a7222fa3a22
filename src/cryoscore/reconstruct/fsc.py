"""Fourier shell correlation between maps, and the resolution where it crosses a threshold.

Both maps are multiplied by the same soft spherical mask before the FSC (torch-fourier-
shell-correlation): 1 within the particle radius, a raised-cosine edge outside it (the
pipeline uses an edge of 0.1 diameter). The mask removes the solvent noise, so the FSC
measures the particle. A mask this loose and soft correlates the maps only at the lowest
frequencies (its own width); no phase-randomisation correction is applied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch_fourier_shell_correlation import fsc

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
    """FSC between two maps (B, B, B) after multiplying both by ``mask`` (B, B, B)."""
    correlation = fsc(first * mask, second * mask).double().numpy()
    box = first.shape[-1]
    frequency = np.fft.rfftfreq(box, d=pixel_size_a)
    return FscCurve(frequency_per_a=frequency, correlation=correlation)
