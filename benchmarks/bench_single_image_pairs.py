"""Why fine-tuning on single real micrographs fails: the noise that recorrupted pairs assume, measured (issue 12).

    OMP_NUM_THREADS=1 python benchmarks/bench_single_image_pairs.py -o OUT.json [--simulated DIR ...] \
        [--models NAME=MODEL.pt ...] [--panel OUT.png] [--anscombe-adapt DIR]

``denoise --adapt`` and ``cryoscore train --micrographs`` learn from recorrupted pairs
``y +- z`` of single micrographs (cryoscore.pairs.single), which have the statistics of
even/odd halves only if ``z`` matches the micrograph's noise: Gaussian, white, at the level
``spectral_noise_sigma`` measures at the finest frequencies. On the ten real EMPIAR-10146
micrographs this measures, against the annotations:

- **colour**: the noise's radial spectrum in particle-free windows (no annotated centre within
  half a window plus 40 px), and in windows centred on particles, relative to
  ``spectral_noise_sigma``^2; and the same spectrum estimated blind, as the median over small
  tiles of each ring's power (calibrated on white noise), which needs no annotation;
- **shared noise**: the cross-spectrum of a recorrupted pair (what N2N treats as signal), for a
  white ``z`` (the package's) and for a ``z`` coloured with the blind spectrum;
- **skew**: the third cumulant of the noise (after a 3 x 3 high-pass), the fraction of pixels
  beyond +-4 standard deviations, and the Poisson gain, offset and counts per pixel it implies
  (``y = gain * counts + offset``; on simulated counts this returns gain 1.01 and the true mean);
- ``--simulated DIR ...``: the same particle-free and particle-centred spectra on simulated
  datasets (their true centres), to set the simulator's particle contrast beside the real set's;
- ``--models``: what each model does with the raw micrograph's outliers (the mean high-passed
  output, in its standard deviations, at the raw pixels beyond +4 and below -3.5), and the
  output's skew; ``--panel`` writes crops of the first micrograph (raw, then each model);
- ``--anscombe-adapt DIR``: ``--adapt``'s fine-tuning (its defaults) on the micrographs after
  the generalised Anscombe transform with the measured gain and offset (which makes Poisson
  noise Gaussian of unit variance), then the default and the adapted model denoise in that
  domain, the result is transformed back, and the learned judge (5-fold, seed 0, 800 steps)
  scores both.
"""

from __future__ import annotations

import argparse
import json
from functools import lru_cache
from pathlib import Path

import numpy as np
from bench_learned_picker import DIAMETER_A, real_set, run_record
from scipy import ndimage, stats

from cryoscore.bench.config import LearnedJudgeSettings
from cryoscore.bench.crossval import cross_validate
from cryoscore.bench.datasets import simulated_test_set
from cryoscore.fourier import radial_frequency
from cryoscore.infer.adapt import AdaptSettings, adapt_denoiser
from cryoscore.infer.denoise import denoise_image, load_denoiser
from cryoscore.io.mrc import write_mrc
from cryoscore.io.png import write_panels_png
from cryoscore.pairs.guidance import radial_cross_density
from cryoscore.pairs.noise import spectral_noise_sigma

TILE_PX = 64
#: Frequency (cycles/px) of each ring of a TILE_PX tile's spectrum.
RING_FREQUENCIES = np.arange(TILE_PX // 2 + 1) / TILE_PX
#: Wavelength bands (A) of the tables.
BAND_EDGES_A = np.array([240, 120, 60, 40, 30, 20, 15, 10, 8, 6, 4.5, 3.7001])
#: Centre minus the mean of its 8 neighbours: a high-pass that keeps almost only noise.
HIGH_PASS = np.full((3, 3), -1 / 8)
HIGH_PASS[1, 1] = 1.0


def tile_ring_powers(image: np.ndarray) -> tuple[list[tuple[int, int]], np.ndarray]:
    """The half-overlapping Hann-windowed TILE_PX tiles of ``image``: their (row, col) starts and
    their ring-averaged periodograms (tiles, TILE_PX//2 + 1), ring ``i`` at RING_FREQUENCIES[i]."""
    window = np.outer(np.hanning(TILE_PX), np.hanning(TILE_PX))
    starts = [(row, col) for row in range(0, image.shape[0] - TILE_PX + 1, TILE_PX // 2)
              for col in range(0, image.shape[1] - TILE_PX + 1, TILE_PX // 2)]
    tiles = np.stack([image[row:row + TILE_PX, col:col + TILE_PX] for row, col in starts]).astype(np.float64)
    power = np.abs(np.fft.rfft2((tiles - tiles.mean(axis=(1, 2), keepdims=True)) * window)) ** 2 / np.sum(window**2)
    rings = np.minimum(np.round(radial_frequency((TILE_PX, TILE_PX)) * TILE_PX).astype(int), TILE_PX // 2).ravel()
    counts = np.bincount(rings, minlength=len(RING_FREQUENCIES))
    return starts, np.stack([np.bincount(rings, p, minlength=len(RING_FREQUENCIES))
                             for p in power.reshape(len(tiles), -1)]) / counts


@lru_cache(maxsize=1)
def median_to_mean() -> np.ndarray:
    """Each ring's median over tiles divided by its mean, for white Gaussian noise."""
    _, rings = tile_ring_powers(np.random.default_rng(0).standard_normal((1024, 1024)))
    return np.median(rings, axis=0) / rings.mean(axis=0)


def blind_noise_spectrum(image: np.ndarray) -> np.ndarray:
    """Noise density at RING_FREQUENCIES: the calibrated median over tiles (particles and ice are
    not everywhere, the noise is), held flat below 0.125 cycles/px where ice covers every tile."""
    density = np.median(tile_ring_powers(image)[1], axis=0) / median_to_mean()
    flat = RING_FREQUENCIES < 0.125
    density[flat] = density[np.argmin(flat)]
    return density


def coloured_noise(shape: tuple[int, int], density: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise of ``shape`` with radial density ``density`` at RING_FREQUENCIES."""
    transfer = np.sqrt(np.interp(radial_frequency(shape), RING_FREQUENCIES, density))
    return np.fft.irfft2(np.fft.rfft2(rng.standard_normal(shape)) * transfer, s=shape)


def annotated_window_spectra(image: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ring powers (TILE_PX//2 + 1,) of particle-free windows and of windows centred on a particle."""
    free, centred = [], []
    for (row, col), ring in zip(*tile_ring_powers(image)):
        distance = np.min(np.hypot(centres[:, 0] - col - TILE_PX / 2, centres[:, 1] - row - TILE_PX / 2))
        if distance > TILE_PX / 2 + 40:
            free.append(ring)
        elif distance < 8:
            centred.append(ring)
    return np.mean(free, axis=0), np.mean(centred, axis=0)


def window_spectra(images: list[np.ndarray], truths: list, pixel_a: float) -> dict[str, dict[str, float]]:
    """Mean over micrographs, relative to each one's ``spectral_noise_sigma``^2, of the spectrum of
    particle-free windows (``free``), of windows centred on particles (``centred``) and their
    difference, the particles' own power (``particles``), in the bands of BAND_EDGES_A."""
    rows: dict[str, list[dict[str, float]]] = {"free": [], "centred": [], "particles": []}
    for image, truth in zip(images, truths):
        image = image.astype(np.float64)
        level = spectral_noise_sigma(image) ** 2
        free, centred = annotated_window_spectra(image, np.stack([truth.x_px, truth.y_px], 1))
        for key, values in (("free", free), ("centred", centred), ("particles", centred - free)):
            rows[key].append(in_bands(RING_FREQUENCIES, values / level, pixel_a))
    return {key: {band: float(np.mean([row[band] for row in values])) for band in values[0]}
            for key, values in rows.items()}


def band_label(index: int) -> str:
    """The name of band ``index`` of BAND_EDGES_A, e.g. "30-20 A"."""
    return f"{BAND_EDGES_A[index]:.0f}-{BAND_EDGES_A[index + 1]:.0f} A"


def in_bands(frequencies: np.ndarray, values: np.ndarray, pixel_a: float) -> dict[str, float]:
    """Mean of ``values`` at ``frequencies`` (cycles/px) in each band of BAND_EDGES_A that holds any."""
    wavelengths = pixel_a / np.maximum(frequencies, 1e-9)
    means = {}
    for index in range(len(BAND_EDGES_A) - 1):
        inside = (wavelengths <= BAND_EDGES_A[index]) & (wavelengths > BAND_EDGES_A[index + 1])
        if np.any(inside):
            means[band_label(index)] = float(np.mean(values[inside]))
    return means


def high_passed(image: np.ndarray) -> np.ndarray:
    """``image`` (H, W) filtered with HIGH_PASS, its mean removed, float64."""
    high = ndimage.convolve(image.astype(np.float64), HIGH_PASS, mode="reflect")
    return high - high.mean()


def high_passed_z(image: np.ndarray) -> np.ndarray:
    """``image`` high-passed (HIGH_PASS) and standardised."""
    high = high_passed(image)
    return high / high.std()


def poisson_gain_offset(image: np.ndarray) -> tuple[float, float, float]:
    """(gain, offset, mean counts per pixel) of ``image = gain * Poisson counts + offset``: for
    scaled Poisson noise the third cumulant over the variance is the gain, both measured after
    HIGH_PASS (a linear filter scales them by the sums of its squares and cubes)."""
    high = high_passed(image)
    variance = np.mean(high**2) / np.sum(HIGH_PASS**2)
    gain = float(np.mean(high**3) / np.sum(HIGH_PASS**3) / variance)
    counts = float(variance / gain**2)
    return gain, float(image.mean()) - gain * counts, counts


def anscombe(image: np.ndarray, gain: float, offset: float) -> np.ndarray:
    """Generalised Anscombe transform: scaled Poisson noise becomes Gaussian of variance about 1."""
    return 2 * np.sqrt(np.maximum((image.astype(np.float64) - offset) / gain + 3 / 8, 0))


def inverse_anscombe(transformed: np.ndarray, gain: float, offset: float) -> np.ndarray:
    """The asymptotically unbiased inverse of :func:`anscombe`."""
    return offset + gain * ((transformed.astype(np.float64) / 2) ** 2 - 1 / 8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--models", nargs="*", default=[], help="NAME=MODEL.pt (NAME= for the shipped default)")
    parser.add_argument("--panel", type=Path, help="write crops of the first micrograph, raw and each model's output")
    parser.add_argument("--simulated", nargs="*", type=Path, default=[], metavar="DIR",
                        help="simulated datasets whose particle and noise power to set beside the real set's")
    parser.add_argument("--anscombe-adapt", type=Path, metavar="DIR", help="adapt and judge in the Anscombe domain")
    args = parser.parse_args()
    paths, images, pixel_a, truths = real_set()
    document: dict = {**run_record(), "pixel_size_a": pixel_a}
    per_micrograph: dict[str, list[dict[str, float]]] = {"blind": [], "white_shared": [], "coloured_shared": []}
    edges = 1 / BAND_EDGES_A
    shape_rows = []
    for index, (image, truth) in enumerate(zip(images, truths)):
        image = image.astype(np.float64)
        level = spectral_noise_sigma(image) ** 2
        blind = blind_noise_spectrum(image)
        per_micrograph["blind"].append(in_bands(RING_FREQUENCIES, blind / level, pixel_a))
        rng = np.random.default_rng([0, index])
        for key, extra in (("white_shared", rng.normal(0.0, np.sqrt(level), image.shape)),
                           ("coloured_shared", coloured_noise(image.shape, blind, rng))):
            density, _ = radial_cross_density(image + extra, image - extra, pixel_a, edges)
            per_micrograph[key].append({band_label(i): float(value / level) for i, value in enumerate(density)})
        z = high_passed_z(image)
        gain, offset, counts = poisson_gain_offset(image)
        shape_rows.append({"skew": float(stats.skew(z.ravel())), "above_4": float(np.mean(z > 4)),
                           "below_minus_4": float(np.mean(z < -4)), "gain": gain, "offset": offset,
                           "counts_per_px": counts})
    document["spectra_relative_to_spectral_sigma2"] = {**window_spectra(images, truths, pixel_a), **{
        key: {band: float(np.mean([row[band] for row in rows])) for band in rows[0]} for key, rows in per_micrograph.items()}}
    document["noise_shape"] = {"gaussian_fraction_beyond_4": float(stats.norm.sf(4)), "micrographs": shape_rows}
    for key, rows in document["spectra_relative_to_spectral_sigma2"].items():
        print(key, " ".join(f"{band}:{value:+.3f}" for band, value in rows.items()))
    print("skew", [round(row["skew"], 3) for row in shape_rows], "counts/px", [round(row["counts_per_px"], 1)
                                                                               for row in shape_rows])
    for folder in args.simulated:
        test_set = simulated_test_set(folder, folder.name)
        spectra = window_spectra([micrograph.full_sum for micrograph in test_set.micrographs],
                                 [micrograph.truth for micrograph in test_set.micrographs], test_set.pixel_size_a)
        document.setdefault("simulated", {})[str(folder)] = spectra
        print(folder, "particles", " ".join(f"{band}:{value:+.3f}" for band, value in spectra["particles"].items()))
    args.output.write_text(json.dumps(document, indent=2) + "\n")

    first = images[0].astype(np.float32)
    outputs = {"raw": first}
    document["models"] = {}
    raw_z = high_passed_z(first)
    for spec in args.models:
        name, _, model = spec.partition("=")
        output = denoise_image(load_denoiser(model or None), first, pixel_size_a=pixel_a)
        outputs[name or "default"] = output
        z = high_passed_z(output)
        document["models"][name or "default"] = {"output_at_raw_above_4": float(z[raw_z > 4].mean()),
                                                 "output_at_raw_below_minus_3.5": float(z[raw_z < -3.5].mean()),
                                                 "output_skew": float(stats.skew(z.ravel()))}
        print(name or "default", document["models"][name or "default"])
    if args.panel:
        write_panels_png(args.panel, [(name, image[300:684, 300:684]) for name, image in outputs.items()],
                         caption=f"{paths[0].name}, crop [300:684, 300:684]")
    args.output.write_text(json.dumps(document, indent=2) + "\n")

    if args.anscombe_adapt:
        folder = args.anscombe_adapt
        folder.mkdir(parents=True, exist_ok=True)
        transforms = [poisson_gain_offset(image)[:2] for image in images]
        for path, image, (gain, offset) in zip(paths, images, transforms):
            write_mrc(folder / path.name, anscombe(image, gain, offset).astype(np.float32), pixel_size_a=pixel_a)
        adapted_path = folder / "adapted.pt"
        adapt_denoiser(load_denoiser(), sorted(folder.glob("*.mrc")), adapted_path, AdaptSettings(), progress=False)
        settings = LearnedJudgeSettings(folds=5, seeds=(0,), steps=800)
        document["anscombe"] = {}
        for name, model in (("default", None), ("adapted", adapted_path)):
            denoiser = load_denoiser(model)
            denoised = [inverse_anscombe(denoise_image(denoiser, anscombe(image, gain, offset).astype(np.float32),
                                                       pixel_size_a=pixel_a), gain, offset).astype(np.float32)
                        for image, (gain, offset) in zip(images, transforms)]
            run = cross_validate(denoised, truths, pixel_a, DIAMETER_A, DIAMETER_A / pixel_a / 2, settings)
            document["anscombe"][name] = run.summary(settings)
            print("anscombe", name, round(document["anscombe"][name]["ap"], 3), flush=True)
            args.output.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
