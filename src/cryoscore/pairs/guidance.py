"""Target guidance: synthetic examples with known clean targets, made from a reference density.

The ``guided`` method (``objectives.Guided``) needs examples whose clean image is known
and whose background is known *not* to be signal. Each synthetic example is

- a target ``t``: CTF-modulated projections of the reference density (MRC map, atomic model
  or built-in specimen) at random orientations, positions and defoci, scaled to the
  particle contrast the data show (:func:`fit_amplitude`), and
- an input ``t + background + noise``, where the background is the data's own low
  frequencies (wavelengths longer than ``BACKGROUND_DIAMETERS`` particle diameters: ice,
  gradients, carbon) plus random ice at every shorter scale, drawn with the power-law
  spectrum the data's ice shows there (:meth:`GuidanceExamples.fit_spectrum`: the even/odd
  cross-spectrum is fitted as reference particles plus ``b * k^-alpha``), and the noise is
  the data's own ``(even - odd) / sqrt(2)``, which has a half's noise level and the true
  (possibly coloured) noise spectrum.

Everything is in noise units (``pairs.normalise``). The loss compares the network's output
with ``t`` only at wavelengths longer than the reference resolution, so the reference
teaches the particle's shape and that the background is not signal, and never dictates
detail finer than the resolution it is trusted to.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from scipy import optimize

from cryoscore.errors import InputError
from cryoscore.filters import lowpass_filter, lowpass_transfer, periodic_smooth_decomposition
from cryoscore.fourier import frequency_axes, radial_frequency
from cryoscore.pairs.crops import dihedral
from cryoscore.pairs.halves import HalfPair
from cryoscore.settings import GuidanceConfig
from cryoscore.simulate.ctf import CtfParams
from cryoscore.simulate.micrograph import contrast_from_projections, place_particles
from cryoscore.simulate.project import project_potential, random_orientations
from cryoscore.simulate.volume import load_specimen

logger = logging.getLogger(__name__)

BACKGROUND_DIAMETERS = 2.0
"""Wavelengths longer than this many particle diameters are taken from the data as background;
shorter ones get random ice of the fitted spectrum (the data there mixes ice and particles).
Two diameters, the longest wavelength that can describe a particle (the bench's background metric,
``metrics.pixel.pixel_metrics``, uses the same): at four, the data's contamination and ice that vary
over 2-4 diameters of a large particle were in neither part, and the guided model kept them
(benchmarks/RESULTS.md section 6, "Guided background on the elongated particle")."""

ICE_EXPONENTS = np.linspace(1.0, 5.0, 33)
"""Power-law exponents tried for the ice spectrum ``b * k^-alpha``."""

SPECTRUM_BINS = 48
"""Radial frequency bins of the spectrum fit, between 1/(BACKGROUND_DIAMETERS * diameter) and
1/resolution."""

PROJECTION_BANK_SIZE = 256
"""Reference projections computed once per training run and reused at random positions."""

AMPLITUDE_FIT_CROPS = 16
"""Synthetic crops rendered at unit amplitude to measure the particles' spectrum."""

SYNTHETIC_BANK_SIZE = 64
"""Synthetic particle images kept ready; training draws from them with random flips."""

BANK_REFRESH_PER_STEP = 2
"""Bank slots re-rendered at each training step (rendering is the costly part of a
guided step): a 600-step run sees about 1,200 distinct particle arrangements, and each
slot's content is a function of (seed, slot, step) alone, so a resumed run draws the same
examples as an uninterrupted one."""


@dataclass(frozen=True)
class SpectrumFit:
    """The data's signal spectrum as particles plus ice, in noise units per frequency sample.

    ``amplitude`` scales the unit-amplitude synthetic particles; the ice's density is
    ``ice_coefficient * (k * 100 A)^-ice_exponent`` at spatial frequency ``k`` (1/A).
    ``relative_residual`` is the fit's root-mean-square error over the bins, relative to each
    bin's value plus its sampling error.
    """

    amplitude: float
    ice_coefficient: float
    ice_exponent: float
    relative_residual: float

    def ice_density(self, k_per_a: np.ndarray) -> np.ndarray:
        return self.ice_coefficient * np.maximum(k_per_a * 100.0, 1e-6) ** -self.ice_exponent


def radial_cross_density(first: np.ndarray, second: np.ndarray, pixel_size_a: float,
                         edges_per_a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``Re(A B*) / N`` over the frequencies of each radial bin (``edges_per_a``, 1/A),
    and the number of (rfft) frequencies in each bin.

    For two halves of one micrograph that is the signal's spectral density (white noise of
    variance s^2 has density s^2 at every frequency); for ``first is second`` its power.
    """
    k = np.hypot(*frequency_axes(first.shape, pixel_size_a))
    cross = (np.fft.rfft2(first.astype(np.float64)) * np.conj(np.fft.rfft2(second.astype(np.float64)))).real
    bins = np.digitize(k, edges_per_a) - 1
    inside = (bins >= 0) & (bins < len(edges_per_a) - 1)
    totals = np.bincount(bins[inside], cross[inside], minlength=len(edges_per_a) - 1)
    counts = np.bincount(bins[inside], minlength=len(edges_per_a) - 1)
    return totals / np.maximum(counts, 1) / first.size, counts


def _periodic_cross_power(first: np.ndarray, second: np.ndarray, pixel_size_a: float, longest_a: float,
                          shortest_a: float) -> float:
    """:func:`band_power` of two images (H, W) that already wrap around without a jump."""
    k = radial_frequency(first.shape, pixel_size_a, rfft=False)
    band = (k >= 1 / longest_a) & (k <= 1 / shortest_a)
    cross = np.fft.fft2(first.astype(np.float64)) * np.conj(np.fft.fft2(second.astype(np.float64)))
    return float(cross.real[band].sum() / first.size**2)


def band_power(first: np.ndarray, second: np.ndarray, pixel_size_a: float, longest_a: float, shortest_a: float) -> float:
    """Per-pixel cross power of two images (H, W) at wavelengths in [shortest_a, longest_a].

    For two halves of one micrograph the noise averages out and this is the signal's
    variance in that band (Parseval: ``sum Re(A B*) / N^2`` over the band's frequencies).
    Measured on each image's periodic part (``filters.periodic_smooth_decomposition``): the
    jump where an image with a gradient or a carbon edge wraps around would put power at every
    frequency along the axes, and the band would count it (benchmarks/RESULTS.md section 6,
    "A correction").
    """
    first_periodic = periodic_smooth_decomposition(first)[0]
    second_periodic = first_periodic if second is first else periodic_smooth_decomposition(second)[0]
    return _periodic_cross_power(first_periodic, second_periodic, pixel_size_a, longest_a, shortest_a)


def particle_band_a(diameter_a: float) -> tuple[float, float]:
    """The scales of particles ``diameter_a`` Angstrom across: wavelengths from an eighth of a diameter to
    two diameters, (shortest, longest) in Angstrom."""
    return diameter_a / 8, 2 * diameter_a


def band_correlation(first: np.ndarray, second: np.ndarray, pixel_size_a: float, shortest_a: float,
                     longest_a: float) -> float:
    """Correlation of two images (H, W) over the wavelengths from ``shortest_a`` to ``longest_a`` Angstrom,
    their edges excluded as in :func:`band_power`."""
    a, b = (periodic_smooth_decomposition(image)[0] for image in (first, second))

    def power(x: np.ndarray, y: np.ndarray) -> float:
        return _periodic_cross_power(x, y, pixel_size_a, longest_a, shortest_a)

    return float(power(a, b) / np.sqrt(power(a, a) * power(b, b)))


class GuidanceExamples:
    """Draws synthetic (input, target) crops for one training run.

    Parameters
    ----------
    config:
        The guidance settings.
    normalised_pairs:
        The training halves in noise units (half noise std 1), all at ``pixel_size_a``.
    pixel_size_a:
        Pixel size of the training data, Angstrom; the reference is resampled to it.
    seed:
        Seeds the projection bank and the amplitude fit, so a run is reproducible.
    """

    def __init__(self, config: GuidanceConfig, normalised_pairs: Sequence[HalfPair], pixel_size_a: float, seed: int):
        self.config = config
        self.pixel_size_a = pixel_size_a
        specimen = load_specimen(config.reference, pixel_size_a)
        self.diameter_px = specimen.diameter_a / pixel_size_a
        self.reference_name = specimen.name
        rng = np.random.default_rng([seed, 0x6A1DE])
        self.projections_va = project_potential(
            torch.from_numpy(specimen.volume_v), random_orientations(PROJECTION_BANK_SIZE, rng), pixel_size_a
        )
        background_cutoff_a = BACKGROUND_DIAMETERS * specimen.diameter_a
        self.backgrounds = [
            lowpass_filter((pair.even + pair.odd) / 2, pixel_size_a, background_cutoff_a) for pair in normalised_pairs
        ]
        self.noises = [((pair.even - pair.odd) / math.sqrt(2)).astype(np.float32) for pair in normalised_pairs]
        self.spectrum = self.fit_spectrum(normalised_pairs, rng)
        self.amplitude = self.spectrum.amplitude
        self.seed = seed
        self._bank: dict[int, tuple[int, int, np.ndarray]] = {}  # slot -> (crop_px, generation, contrast)

    def _band(self) -> tuple[float, float]:
        """The particle band: wavelengths between the reference resolution and the diameter."""
        return self.diameter_px * self.pixel_size_a, self.config.resolution_a

    def fit_spectrum(self, normalised_pairs: Sequence[HalfPair], rng: np.random.Generator) -> SpectrumFit:
        """Fit the data's signal spectrum as ``a * particles + b * k^-alpha`` (ice) and return both.

        The data's signal spectrum is the even/odd cross-spectrum (noise cancels), averaged
        over micrographs, in radial bins from ``1 / (BACKGROUND_DIAMETERS * diameter)`` (or a
        quarter of the synthetic crop, if shorter) to ``1 / resolution``, with each bin's
        sampling error; the particles' is measured on synthetic crops at unit amplitude and
        this run's particle density. For each exponent of :data:`ICE_EXPONENTS` the two
        non-negative weights are fitted by least squares in units of those errors; the best exponent
        wins. The synthetic particles are then scaled by ``sqrt(a)``, so ice at the particle's
        scale no longer counts as particle contrast. Where the fit leaves no particle signal
        (``a`` = 0: the reference's spectrum explains none of the data's), the amplitude is
        matched to the data's power in the particle band instead; InputError when there is none.
        """
        crop_px = min(256, *normalised_pairs[0].even.shape)
        longest_a = min(BACKGROUND_DIAMETERS * self.diameter_px, crop_px / 4) * self.pixel_size_a
        edges = np.geomspace(1 / longest_a, 1 / self.config.resolution_a, SPECTRUM_BINS + 1)
        centres = np.sqrt(edges[:-1] * edges[1:])
        # Periodic parts only: a micrograph's edges (ice gradients) would put a cross of power on
        # the frequency axes that no particle or ice spectrum explains.
        measured = [radial_cross_density(periodic_smooth_decomposition(pair.even)[0],
                                         periodic_smooth_decomposition(pair.odd)[0], self.pixel_size_a, edges)
                    for pair in normalised_pairs]
        data = np.mean([density for density, _ in measured], axis=0)
        data_counts = sum(counts for _, counts in measured)
        # The cross density of one frequency has a standard deviation of about a half's noise
        # density (1 in noise units); a bin averages ``counts`` of them in every micrograph.
        error = np.abs(data) + 1.0 / np.sqrt(np.maximum(data_counts, 1))
        rendered = [radial_cross_density(image, image, self.pixel_size_a, edges)
                    for image in (self.render_contrast(crop_px, rng) for _ in range(AMPLITUDE_FIT_CROPS))]
        synthetic = np.mean([density for density, _ in rendered], axis=0)
        usable = (data_counts > 0) & (rendered[0][1] > 0)  # bins with frequencies on both grids
        best: SpectrumFit | None = None
        for exponent in ICE_EXPONENTS:
            ice = np.maximum(centres * 100.0, 1e-6) ** -exponent
            design = np.stack([synthetic, ice], axis=1)[usable] / error[usable, None]
            weights, residual = optimize.nnls(design, (data / error)[usable])
            relative = float(residual / math.sqrt(max(int(usable.sum()), 1)))
            if best is None or relative < best.relative_residual:
                best = SpectrumFit(math.sqrt(weights[0]), float(weights[1]), float(exponent), relative)
        assert best is not None, "ICE_EXPONENTS is not empty"
        if best.amplitude > 0:
            return best
        # The reference's spectrum explains none of the data's (a wrong reference, as the decoy
        # control uses, or very little signal): match its power in the particle band instead,
        # as if all of it were particles, and keep the fitted ice.
        band = (centres >= 1 / (self.diameter_px * self.pixel_size_a)) & usable
        data_power, synthetic_power = float(np.sum(data[band])), float(np.sum(synthetic[band]))
        if not (data_power > 0 and synthetic_power > 0):
            raise InputError(
                "--reference", "the training halves show no particle signal between the reference resolution and "
                "the particle diameter, so guidance has nothing to match; train with --method score"
            )
        logger.warning("the spectrum of %s explains none of the data's; its amplitude is matched to the data's "
                       "power in its particle band instead", self.reference_name)
        return dataclasses.replace(best, amplitude=math.sqrt(data_power / synthetic_power))

    def ice_field(self, crop_px: int, rng: np.random.Generator) -> np.ndarray:
        """Random ice (crop_px, crop_px), float32, noise units: Gaussian, with the fitted ice density at
        wavelengths shorter than ``BACKGROUND_DIAMETERS`` diameters (longer ones come from the data)."""
        k = np.hypot(*frequency_axes((crop_px, crop_px), self.pixel_size_a))
        shorter = 1.0 - lowpass_transfer((crop_px, crop_px), self.pixel_size_a,
                                         BACKGROUND_DIAMETERS * self.diameter_px * self.pixel_size_a)
        amplitude = np.sqrt(self.spectrum.ice_density(k)) * shorter
        amplitude[0, 0] = 0.0
        white = np.fft.rfft2(rng.standard_normal((crop_px, crop_px)))
        return np.fft.irfft2(white * amplitude, s=(crop_px, crop_px)).astype(np.float32)

    def render_contrast(self, crop_px: int, rng: np.random.Generator) -> np.ndarray:
        """Unit-amplitude phase contrast (crop_px, crop_px) of randomly placed reference particles.

        Particles are placed on a canvas one diameter wider on every side and the centre is
        cut out, so particles cross the crop's edges as they cross a micrograph's. The count
        is Poisson around ``area_fraction`` coverage, capped at twice that, which always fits.
        """
        margin = int(math.ceil(self.diameter_px))
        canvas_px = crop_px + 2 * margin
        expected = self.config.area_fraction * canvas_px**2 / (math.pi * (self.diameter_px / 2) ** 2)
        count = min(int(rng.poisson(expected)), int(2 * expected))
        centres = place_particles(rng, (canvas_px, canvas_px), count, self.diameter_px, edge_particles=True)
        chosen = rng.integers(len(self.projections_va), size=len(centres))
        mean_defocus = rng.uniform(*self.config.defocus_range_um)
        ctf = CtfParams(
            defocus_u_um=mean_defocus, defocus_v_um=mean_defocus, voltage_kv=self.config.voltage_kv,
            cs_mm=self.config.cs_mm, amplitude_contrast=self.config.amplitude_contrast,
            bfactor_a2=self.config.bfactor_a2,
        )
        contrast = contrast_from_projections(
            self.projections_va[chosen], self.pixel_size_a, centres, (canvas_px, canvas_px), ctf
        )
        return contrast[margin : margin + crop_px, margin : margin + crop_px].numpy()

    def _data_crop(self, images: list[np.ndarray], crop_px: int, rng: np.random.Generator) -> np.ndarray:
        image = images[rng.integers(len(images))]
        row = rng.integers(image.shape[0] - crop_px + 1)
        col = rng.integers(image.shape[1] - crop_px + 1)
        return dihedral(image[row : row + crop_px, col : col + crop_px], int(rng.integers(8)))

    @staticmethod
    def bank_generation(slot: int, step: int) -> int:
        """How many times bank ``slot`` has been re-rendered by training ``step`` (0-based).

        Step ``t`` re-renders slots ``t * R .. t * R + R - 1`` (modulo the bank size, R =
        :data:`BANK_REFRESH_PER_STEP`), so slot ``j``'s turns come every ``B / R`` steps.
        """
        period = SYNTHETIC_BANK_SIZE // BANK_REFRESH_PER_STEP
        turn = slot // BANK_REFRESH_PER_STEP
        return 0 if step < turn else (step - turn) // period + 1

    def _bank_contrast(self, slot: int, crop_px: int, step: int) -> np.ndarray:
        """Bank ``slot``'s unit-amplitude particle image at ``step``, rendered when stale."""
        generation = self.bank_generation(slot, step)
        cached = self._bank.get(slot)
        if cached is None or cached[:2] != (crop_px, generation):
            rng = np.random.default_rng([self.seed, 0xBA4C, slot, generation])
            cached = (crop_px, generation, self.render_contrast(crop_px, rng))
            self._bank[slot] = cached
        return cached[2]

    def sample(self, n_crops: int, crop_px: int, rng: np.random.Generator, step: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``n_crops`` synthetic (input, target) crops at training ``step``, each (n_crops, 1, crop_px, crop_px) float32.

        Targets are bank images (:data:`SYNTHETIC_BANK_SIZE`, refreshed as
        :meth:`bank_generation` says) under a random flip/rotation; inputs add a random crop
        of the data's background, of random ice at shorter scales and of the data's noise. The target is the full-resolution
        particle image; the guided loss low-passes the error, not the target, so synthetic
        inputs look like real data at every frequency. ``rng`` draws everything else.
        """
        inputs = np.empty((n_crops, 1, crop_px, crop_px), dtype=np.float32)
        targets = np.empty_like(inputs)
        for index in range(n_crops):
            slot = int(rng.integers(SYNTHETIC_BANK_SIZE))
            target = self.amplitude * dihedral(self._bank_contrast(slot, crop_px, step), int(rng.integers(8)))
            background = self._data_crop(self.backgrounds, crop_px, rng) + self.ice_field(crop_px, rng)
            noise = self._data_crop(self.noises, crop_px, rng)
            targets[index, 0] = target
            inputs[index, 0] = target + background + noise
        return inputs, targets

    def loss_band(self, crop_px: int) -> torch.Tensor:
        """Transfer (crop_px, crop_px//2+1) that keeps the wavelengths the reference is trusted at."""
        transfer = lowpass_transfer((crop_px, crop_px), self.pixel_size_a, self.config.resolution_a)
        return torch.from_numpy(transfer.astype(np.float32))

    def summary(self) -> dict[str, Any]:
        """What the model's metadata records about the guidance."""
        return {
            **self.config.to_dict(),
            "reference_name": self.reference_name,
            "reference_diameter_a": self.diameter_px * self.pixel_size_a,
            "fitted_amplitude": self.amplitude,
            "fitted_ice": {"coefficient": self.spectrum.ice_coefficient, "exponent": self.spectrum.ice_exponent,
                           "relative_residual": self.spectrum.relative_residual},
        }
