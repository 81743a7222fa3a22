"""Flattened micrographs (``denoise --flatten``): the shipped model's background estimate subtracted, low-passed."""

from __future__ import annotations

import numpy as np
import pytest

from cryoscore.cli import main
from cryoscore.infer.denoise import background_image, denoise_image, flatten_image, load_denoiser
from cryoscore.io.mrc import read_mrc, write_mrc
from cryoscore.simulate.background import BackgroundParams
from cryoscore.simulate.dataset import SimulationConfig, render_truth, sample_halves
from cryoscore.simulate.procedural import builtin_specimen

PIXEL_A, DIAMETER_A = 3.0, 120.0
# Apoferritin at the real EMPIAR-10146 set's particle contrast (a fifth of the weak-phase one) under
# ice that varies down to half the particles' size: the regime where a posterior mean keeps the ice
# and shrinks the particles.
FAINT = SimulationConfig(specimen="apoferritin", n_micrographs=1, size_px=384, pixel_size_a=PIXEL_A,
                         particles_per_micrograph=14, dose_e_per_a2=60.0, n_frames=8, contrast_scale=0.2,
                         background=BackgroundParams(strength=3.0, shortest_wavelength_a=60.0), seed=3)


def _particle_band_correlation(first: np.ndarray, second: np.ndarray) -> float:
    """Correlation over wavelengths from an eighth of a particle diameter to two diameters, as
    benchmarks/bench_particle_band.py measures it (the fixture ``benchmarks_on_path`` makes it importable)."""
    from bench_particle_band import band_correlation

    return band_correlation(first, second, PIXEL_A, DIAMETER_A / 8, 2 * DIAMETER_A)


@pytest.fixture(scope="module")
def faint_micrograph():
    truth = render_truth(FAINT, builtin_specimen("apoferritin", PIXEL_A), 0)
    even, odd = sample_halves(truth)
    return (even + odd).numpy(), truth.clean.numpy(), truth.background.numpy()


def test_flattening_removes_the_background_and_keeps_the_faint_particles(faint_micrograph, benchmarks_on_path):
    micrograph, particles, background = faint_micrograph
    model = load_denoiser()
    estimate = background_image(model, micrograph, pixel_size_a=PIXEL_A)
    posterior_mean = denoise_image(model, micrograph, pixel_size_a=PIXEL_A)
    flattened = flatten_image(model, micrograph, pixel_size_a=PIXEL_A)
    assert flattened.shape == micrograph.shape and flattened.dtype == np.float32
    raw = {"particles": _particle_band_correlation(micrograph, particles),
           "background": _particle_band_correlation(micrograph, background)}
    flat = {"particles": _particle_band_correlation(flattened, particles),
            "background": _particle_band_correlation(flattened, background)}
    # what hides the particles at their own scale is the background, and the model's estimate is it
    assert raw["background"] > 5 * raw["particles"]
    assert _particle_band_correlation(estimate, background) > 0.9
    assert flat["particles"] > 1.3 * raw["particles"]  # the particles stand out (measured: 0.182 vs 0.119)
    assert flat["particles"] > 2 * _particle_band_correlation(posterior_mean, particles)  # measured: 0.056
    assert abs(flat["background"]) < 0.5 * raw["background"]  # the background is gone


def test_cli_flatten_writes_each_micrograph_and_refuses_a_low_pass_beside_it(faint_micrograph, tmp_path, capsys):
    micrograph = faint_micrograph[0]
    source = tmp_path / "mic.mrc"
    write_mrc(source, micrograph, PIXEL_A)
    assert main(["denoise", str(source), "-o", str(tmp_path / "flat"), "--flatten", "25"]) == 0
    written, pixel_a = read_mrc(tmp_path / "flat" / "mic.mrc")
    assert written.shape == micrograph.shape and pixel_a == pytest.approx(PIXEL_A)
    expected = flatten_image(load_denoiser(), micrograph, pixel_size_a=PIXEL_A, lowpass_a=25)
    assert np.allclose(written, expected, atol=1e-4 * expected.std())
    assert main(["denoise", str(source), "-o", str(tmp_path / "both"), "--flatten", "--lowpass", "20"]) == 2
    assert "--flatten" in capsys.readouterr().err
    assert not (tmp_path / "both" / "mic.mrc").exists()
