"""How strong a micrograph's long-wavelength background is: the real set against simulated stand-ins (issue 12).

    OMP_NUM_THREADS=1 python benchmarks/bench_background_power.py -o OUT.json [--simulated DIR ...] [--panel OUT.png]

For each micrograph, the power spectrum of the whole image (mean removed) is averaged over
the Fourier coefficients of each wavelength band and divided by the noise power ``spectral_noise_sigma``^2 (the finest
frequencies, where the CTF-modulated signal is weak). Ice-thickness variation, gradients and
carbon live in the longest band; particles in the middle ones; in a band holding only white
noise the ratio is 1. Every micrograph is cut to its central ``--field-px`` square first: the
ice's power rises steeply with wavelength, so fields of different sizes would put different
wavelengths in the longest band. Printed and written per dataset as the median over its micrographs:
the ten real EMPIAR-10146 micrographs first, then each ``--simulated`` dataset directory
(``cryoscore simulate``; its full sums). ``--panel`` writes a crop of each dataset's first
micrograph, raw and denoised by the shipped default model, one dataset per row.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from bench_learned_picker import real_set, run_record

from cryoscore.bench.datasets import simulated_test_set
from cryoscore.fourier import pad_or_crop_centred, radial_frequency
from cryoscore.infer.denoise import denoise_image, load_denoiser
from cryoscore.io.png import write_panels_png
from cryoscore.pairs.noise import spectral_noise_sigma

#: The panel's crop of each first micrograph, rows and columns.
PANEL_CROP = (slice(300, 684), slice(300, 684))
#: Wavelength bands (A), longest first.
BANDS_A = ((2000.0, 300.0), (300.0, 120.0), (120.0, 60.0), (60.0, 30.0), (30.0, 15.0))


def band_powers(image: np.ndarray, pixel_a: float) -> dict[str, float]:
    """``image`` (H, W)'s mean power per Fourier coefficient in each band of BANDS_A, over its
    noise power (white noise of that level reads 1)."""
    image = image.astype(np.float64)
    power = np.abs(np.fft.rfft2(image - image.mean())) ** 2 / image.size
    wavelengths = pixel_a / np.maximum(radial_frequency(image.shape), 1e-12)
    noise = spectral_noise_sigma(image) ** 2
    return {f"{long:.0f}-{short:.0f} A": float(power[(wavelengths <= long) & (wavelengths > short)].mean() / noise)
            for long, short in BANDS_A}


def median_band_powers(images: list[np.ndarray], pixel_a: float, field_px: int) -> dict[str, float]:
    """The median over ``images`` of :func:`band_powers` of their central ``field_px`` squares (of their
    shorter edge when that is smaller), per band."""
    rows = [band_powers(pad_or_crop_centred(image, min(field_px, *image.shape)), pixel_a) for image in images]
    return {band: float(np.median([row[band] for row in rows])) for band in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--simulated", nargs="*", type=Path, default=[], metavar="DIR")
    parser.add_argument("--field-px", type=int, default=1024,
                        help="judge the central square of this edge of every micrograph, so that every dataset's "
                        "longest band holds the same wavelengths (default: 1024)")
    parser.add_argument("--panel", type=Path, help="write raw and default-model crops of each dataset here (PNG)")
    args = parser.parse_args()
    _, real_images, real_pixel_a, _ = real_set()
    sets = {"real EMPIAR-10146": (real_images, real_pixel_a)}
    for folder in args.simulated:
        test_set = simulated_test_set(folder, folder.name)
        sets[str(folder)] = ([micrograph.full_sum for micrograph in test_set.micrographs], test_set.pixel_size_a)
    datasets = {name: median_band_powers(images, pixel_a, args.field_px) for name, (images, pixel_a) in sets.items()}
    for name, bands in datasets.items():
        print(name, " ".join(f"{band}: {value:.2f}" for band, value in bands.items()))
    document = {**run_record(), "power_over_noise_power": datasets}
    args.output.write_text(json.dumps(document, indent=2) + "\n")
    if args.panel:
        denoiser, panels = load_denoiser(), []
        for name, (images, pixel_a) in sets.items():
            panels += [(f"{Path(name).name}: raw", images[0][PANEL_CROP]),
                       (f"{Path(name).name}: default model", denoise_image(denoiser, images[0], pixel_size_a=pixel_a)[PANEL_CROP])]
        write_panels_png(args.panel, panels, columns=2,
                         caption="first micrograph of each dataset, crop [300:684, 300:684], full resolution")


if __name__ == "__main__":
    main()
