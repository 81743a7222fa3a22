"""Where in frequency does ``--adapt`` change the held-out squared error? (issue 12, item 3)

    OMP_NUM_THREADS=2 python benchmarks/bench_adapt_bands.py -o OUTDIR [--micrographs DIR] [--alphas 1 0.5]

``denoise --adapt`` keeps a fine-tuned model when it lowers the Noise2Noise loss on recorrupted
pairs of held-out strips (:mod:`cryoscore.infer.adapt`), yet on the real EMPIAR-10146 set the
kept model picks worse (benchmarks/RESULTS.md section 6). This script adapts the shipped model
to the micrographs in DIR (default: the real set) with ``--adapt``'s settings, then splits the
held-out loss of both models by spatial frequency: the squared difference between one image's
estimate and the other image of the pair, summed over rings of wavelength (Angstrom) and divided
by the input's noise variance. Between two models on the same pairs, a ring's difference is the
difference of their squared errors against the clean image in that ring (the target's noise is
independent of the input's where the noise is white at the level ``spectral_noise_sigma`` says).

Pairs are recorrupted with a strength ``alpha`` (:func:`cryoscore.pairs.single.recorrupted_pair`):
``y + alpha z`` is denoised and compared with ``y - z / alpha``, ``z`` white noise of the micrograph's own level. ``alpha = 1``
is the check's own pair (input noise twice the micrograph's); smaller ``alpha`` judges the models
on inputs nearer the micrograph itself, at the price of a noisier target. Writes OUTDIR/adapted.pt,
OUTDIR/adapt_bands.json and OUTDIR/adapt_bands.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from bench_learned_picker import DATA, run_record

from cryoscore.filters import fourier_resample
from cryoscore.fourier import radial_frequency
from cryoscore.infer.adapt import AdaptSettings, Micrograph, adapt_to_images, split_held_out
from cryoscore.infer.denoise import TrainedDenoiser, denoise_image, load_denoiser
from cryoscore.io.mrc import read_mrc
from cryoscore.pairs.noise import spectral_noise_sigma
from cryoscore.pairs.single import recorrupted_pair

#: Ring edges, wavelengths in Angstrom from the longest down. The last ring ends at 3 A: it holds the
#: real set's Nyquist ring (3.7 A at 1.85 A/px) and leaves out only its grid's corners (2.6-3 A).
BAND_EDGES_A = (np.inf, 400.0, 200.0, 100.0, 60.0, 40.0, 30.0, 20.0, 15.0, 10.0, 7.0, 5.0, 3.0)


def band_errors(denoiser: TrainedDenoiser, noisy: np.ndarray, target: np.ndarray, pixel_size_a: float) -> np.ndarray:
    """Squared error of the estimate from ``noisy`` (H, W) against ``target`` (H, W) in each ring of
    :data:`BAND_EDGES_A`, on the model's working grid, in units of ``noisy``'s noise variance there;
    the rings sum to the mean squared error per pixel."""
    estimate = denoise_image(denoiser, noisy, pixel_size_a=pixel_size_a, halves_in_image=1)
    working = denoiser.working_scale(noisy.shape, pixel_size_a)
    estimate, target, noisy = (fourier_resample(image, working.shape) for image in (estimate, target, noisy))
    power = np.abs(np.fft.fft2(estimate - target)) ** 2 / estimate.size**2 / spectral_noise_sigma(noisy) ** 2
    k = radial_frequency(estimate.shape, working.pixel_size_a, rfft=False)
    return np.array([power[(k >= 1 / longer) & (k < 1 / shorter)].sum()
                     for longer, shorter in zip(BAND_EDGES_A[:-1], BAND_EDGES_A[1:])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--micrographs", type=Path, default=DATA / "micrographs")
    parser.add_argument("--alphas", type=float, nargs="+", default=[1.0, 0.5])
    parser.add_argument("--draws", type=int, default=3, help="recorrupted pairs per micrograph and alpha")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    settings = AdaptSettings()
    micrographs = [Micrograph(path.stem, *read_mrc(path), str(path)) for path in sorted(args.micrographs.glob("*.mrc"))]
    default = load_denoiser()
    adaptation = adapt_to_images(default, micrographs, args.output / "adapted.pt", settings, progress=False)
    models = {"default": default, "adapted": load_denoiser(args.output / "adapted.pt")}
    bands: dict[float, dict[str, np.ndarray]] = {}
    for alpha in args.alphas:
        sums = {name: np.zeros(len(BAND_EDGES_A) - 1) for name in models}
        for index, micrograph in enumerate(micrographs):
            _, held_out = split_held_out(micrograph.image.astype(np.float64), settings.validation_fraction)
            for draw in range(args.draws):
                noisy, target = recorrupted_pair(held_out, np.random.default_rng([1000 + draw, index]), alpha)
                for name, model in models.items():
                    sums[name] += band_errors(model, noisy, target, micrograph.pixel_size_a)
        bands[alpha] = {name: total / (len(micrographs) * args.draws) for name, total in sums.items()}
    labels = [f"{longer:g}-{shorter:g}" for longer, shorter in zip(BAND_EDGES_A[:-1], BAND_EDGES_A[1:])]
    results = {**run_record(), "micrographs": [m.source for m in micrographs], "adapt_settings": vars(settings),
               "adaptation": {"initial_loss": adaptation.initial_loss, "adapted_loss": adaptation.adapted_loss,
                              "kept": adaptation.kept, "seconds": adaptation.seconds},
               "bands_a": labels, "draws": args.draws,
               "per_alpha": {str(alpha): {name: values.tolist() for name, values in by_model.items()}
                             for alpha, by_model in bands.items()},
               "seconds": time.perf_counter() - started}
    (args.output / "adapt_bands.json").write_text(json.dumps(results, indent=1))
    lines = [f"Held-out loss (check's own pairs) {adaptation.initial_loss:.4f} -> {adaptation.adapted_loss:.4f}, "
             f"kept: {adaptation.kept}.", "",
             "| wavelength (A) | " + " | ".join(f"default, alpha {a:g} | adapted minus default, alpha {a:g}"
                                               for a in args.alphas) + " |",
             "|---|" + "---|---|" * len(args.alphas)]
    for band, label in enumerate(labels):
        cells = [f"{bands[a]['default'][band]:.5f} | {bands[a]['adapted'][band] - bands[a]['default'][band]:+.5f}"
                 for a in args.alphas]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    (args.output / "adapt_bands.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
