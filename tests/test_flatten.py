"""Flattened micrographs (``denoise --flatten``): the shipped model's background estimate subtracted, low-passed;
and ``--flatten auto``, which flattens only where that background is strong."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cryoscore.cli import main
from cryoscore.infer.denoise import (
    background_image,
    background_strength,
    denoise_image,
    flatten_image,
    load_denoiser,
    should_flatten,
)
from cryoscore.io.mrc import read_mrc, write_mrc
from cryoscore.pairs.guidance import band_correlation, particle_band_a
from cryoscore.simulate.background import BackgroundParams
from cryoscore.simulate.dataset import SimulationConfig, render_truth, sample_halves
from cryoscore.simulate.detector import COUNTING
from cryoscore.simulate.procedural import builtin_specimen

PIXEL_A, DIAMETER_A = 3.0, 120.0
# Apoferritin at the real EMPIAR-10146 set's particle contrast (a fifth of the weak-phase one) under
# ice that varies down to half the particles' size: the regime where a posterior mean keeps the ice
# and shrinks the particles.
FAINT = SimulationConfig(specimen="apoferritin", n_micrographs=1, size_px=384, pixel_size_a=PIXEL_A,
                         particles_per_micrograph=14, dose_e_per_a2=60.0, n_frames=8, contrast_scale=0.2,
                         background=BackgroundParams(strength=3.0, shortest_wavelength_a=60.0), seed=3)


# Apoferritin crowded as on the real EMPIAR-10146 set, at its pixel size, dose, camera and signal level (the
# bench's "reallike-1.85A" condition at a 384 px crop): the regime where the posterior mean keeps the particles.
CROWDED_PIXEL_A = 1.85
CROWDED = SimulationConfig(specimen="apoferritin", n_micrographs=1, size_px=384, pixel_size_a=CROWDED_PIXEL_A,
                           particles_per_micrograph=16, dose_e_per_a2=6.5, detector=COUNTING, contrast_scale=0.2,
                           background=BackgroundParams(strength=0.1), seed=1)


def _particle_band_correlation(first: np.ndarray, second: np.ndarray, pixel_a: float = PIXEL_A) -> float:
    """Correlation over wavelengths from an eighth of a particle diameter to two diameters, as
    benchmarks/bench_particle_band.py measures it."""
    return band_correlation(first, second, pixel_a, *particle_band_a(DIAMETER_A))


@pytest.fixture(scope="module")
def faint_micrograph():
    truth = render_truth(FAINT, builtin_specimen("apoferritin", PIXEL_A), 0)
    even, odd = sample_halves(truth)
    return (even + odd).numpy(), truth.clean.numpy(), truth.background.numpy()


def test_flattening_removes_the_background_and_keeps_the_faint_particles(faint_micrograph):
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
    assert flat["particles"] > 1.3 * raw["particles"]  # the particles stand out (measured: 0.183 vs 0.131)
    assert flat["particles"] > 2 * _particle_band_correlation(posterior_mean, particles)  # measured: 0.067
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


@pytest.fixture(scope="module")
def crowded_micrograph():
    truth = render_truth(CROWDED, builtin_specimen("apoferritin", CROWDED_PIXEL_A), 0)
    even, odd = sample_halves(truth)
    return (even + odd).numpy(), truth.clean.numpy()


def test_the_background_is_strong_where_flattening_helps_and_weak_where_the_posterior_mean_keeps_particles(
        faint_micrograph, crowded_micrograph):
    model = load_denoiser()
    faint = background_strength(model, faint_micrograph[0], pixel_size_a=PIXEL_A, diameter_a=DIAMETER_A)
    crowded, particles = crowded_micrograph
    weak = background_strength(model, crowded, pixel_size_a=CROWDED_PIXEL_A, diameter_a=DIAMETER_A)
    assert faint > 10 and weak < 1.5  # measured: 26.1 and 0.81
    assert should_flatten([faint]) and not should_flatten([weak])
    # what the choice rests on: on the crowded micrograph the posterior mean holds more of the particles than
    # the flattened one (measured 0.211 against 0.145; raw 0.144), on the faint one less (test above)
    posterior_mean = denoise_image(model, crowded, pixel_size_a=CROWDED_PIXEL_A)
    flattened = flatten_image(model, crowded, pixel_size_a=CROWDED_PIXEL_A)
    assert (_particle_band_correlation(posterior_mean, particles, CROWDED_PIXEL_A)
            > 1.2 * _particle_band_correlation(flattened, particles, CROWDED_PIXEL_A))


def test_one_choice_for_a_dataset_by_the_median():
    assert should_flatten([20.0, 30.0, 0.8]) and not should_flatten([0.8, 0.9, 30.0])


def test_cli_flatten_auto_chooses_per_run_and_needs_a_diameter(faint_micrograph, crowded_micrograph, tmp_path,
                                                              capsys):
    model = load_denoiser()
    for name, micrograph, pixel_a, expected, flattened in (
            ("faint", faint_micrograph[0], PIXEL_A, flatten_image, True),
            ("crowded", crowded_micrograph[0], CROWDED_PIXEL_A, denoise_image, False)):
        source = tmp_path / f"{name}.mrc"
        write_mrc(source, micrograph, pixel_a)
        out = tmp_path / f"auto-{name}"
        assert main(["denoise", str(source), "-o", str(out), "--flatten", "auto", "--diameter", "120"]) == 0
        written, _ = read_mrc(out / source.name)
        wanted = expected(model, micrograph, pixel_size_a=pixel_a)
        assert np.allclose(written, wanted, atol=1e-4 * wanted.std())
        record = json.loads((out / "denoise.json").read_text())["flatten_auto"]
        assert record["flattened"] is flattened and list(record["background_strengths"]) == [source.name]
        said = capsys.readouterr().err
        assert ("flattened micrographs" in said) is flattened and "over 1 micrograph;" in said
    source = tmp_path / "faint.mrc"
    assert main(["denoise", str(source), "-o", str(tmp_path / "nodiameter"), "--flatten", "auto"]) == 2
    assert "--diameter" in capsys.readouterr().err
    assert main(["denoise", str(source), "-o", str(tmp_path / "noauto"), "--diameter", "120"]) == 2
    assert "--flatten auto" in capsys.readouterr().err
    assert not (tmp_path / "nodiameter").exists() and not (tmp_path / "noauto").exists()
