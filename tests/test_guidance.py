"""Target guidance: synthetic examples look like the data and the guided loss stays in its band."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cryoscore.io.mrc import read_mrc
from cryoscore.nn.precondition import Denoiser, EDMPreconditioner
from cryoscore.nn.unet import NoiseConditionedUNet
from cryoscore.objectives import weighted_denoising_error
from cryoscore.pairs.guidance import GuidanceExamples, band_correlation, band_power
from cryoscore.pairs.halves import pairs_from_dataset
from cryoscore.pairs.normalise import normalise_pair
from cryoscore.settings import GuidanceConfig, NoiseLevels, UNetConfig
from cryoscore.simulate.dataset import SimulationConfig, write_dataset

PIXEL_SIZE_A = 3.0


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("guidance")
    # 24 apoferritin particles (40 px across) on 384 px: 20% of the area, the guidance default.
    config = SimulationConfig(n_micrographs=2, size_px=384, pixel_size_a=PIXEL_SIZE_A, particles_per_micrograph=24,
                              dose_e_per_a2=30.0, n_frames=8, seed=3)
    write_dataset(config, root, progress=False)
    return root


@pytest.fixture(scope="module")
def examples(dataset):
    normalised = [normalise_pair(pair) for pair in pairs_from_dataset(dataset)]
    return GuidanceExamples(GuidanceConfig(reference=str(dataset / "reference.mrc")), normalised, PIXEL_SIZE_A, seed=0)


def test_band_power_measures_shared_signal_and_cancels_independent_noise():
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[:256, :256]
    wave = np.cos(2 * np.pi * cols / 16.0)  # wavelength 16 px = 48 A, variance 0.5
    first, second = wave + rng.normal(size=wave.shape), wave + rng.normal(size=wave.shape)
    assert band_power(first, second, PIXEL_SIZE_A, 100.0, 20.0) == pytest.approx(0.5, abs=0.03)
    assert abs(band_power(first - wave, second - wave, PIXEL_SIZE_A, 100.0, 20.0)) < 0.03
    # outside the band: the edge-free measure's smooth part takes the wave's own step from its last column to its
    # first (smooth std 0.022), which puts 1.2e-5 of the wave's 0.5 in this band (measured); the plain FFT put 2e-30
    assert abs(band_power(wave, wave, PIXEL_SIZE_A, 40.0, 10.0)) < 1e-4


def test_band_power_does_not_count_a_gradient_that_does_not_wrap_around():
    rows, cols = np.mgrid[:256, :256]
    gradient = 0.05 * cols.astype(float)  # a tilted ice layer: smooth inside, a jump of 12.75 where it wraps
    wave = np.cos(2 * np.pi * rows / 16.0)  # 48 A, variance 0.5
    # the plain FFT puts the jump at every frequency along the axis, power 0.90 in this band (measured)
    assert abs(band_power(gradient, gradient, PIXEL_SIZE_A, 100.0, 20.0)) < 1e-3
    assert band_power(gradient + wave, gradient + wave, PIXEL_SIZE_A, 100.0, 20.0) == pytest.approx(0.5, abs=0.01)
    assert band_correlation(gradient + wave, wave, PIXEL_SIZE_A, 20.0, 100.0) == pytest.approx(1.0, abs=0.01)


def test_fitted_amplitude_matches_the_physics_of_the_simulated_dose(dataset, examples):
    # In noise units a particle's contrast c shows as sqrt(mean counts of a half) * c for Poisson data.
    even, _ = read_mrc(dataset / "even" / "mic_0000.mrc")
    expected = math.sqrt(even.mean())
    assert examples.amplitude == pytest.approx(expected, rel=0.3)


def test_synthetic_inputs_carry_the_data_noise_and_background_but_targets_do_not(examples):
    inputs, targets = examples.sample(6, 128, np.random.default_rng(1))
    assert inputs.shape == targets.shape == (6, 1, 128, 128)
    residual = inputs - targets  # background + noise, drawn from the data
    assert residual.std() == pytest.approx(1.0, rel=0.1)  # a half's noise, in noise units
    assert targets.std() > 0.02 and abs(targets.mean()) < 3 * targets.std()
    # The data's background is smooth: almost no power at wavelengths shorter than the particle.
    diameter_a = examples.diameter_px * PIXEL_SIZE_A
    background_maps = examples.backgrounds[0]
    short = band_power(background_maps, background_maps, PIXEL_SIZE_A, diameter_a, 2 * PIXEL_SIZE_A)
    assert short < 0.01 * background_maps.var()


def test_same_generator_state_gives_the_same_examples(examples):
    first = examples.sample(2, 64, np.random.default_rng(5))
    second = examples.sample(2, 64, np.random.default_rng(5))
    assert all(np.array_equal(a, b) for a, b in zip(first, second))


def test_guided_loss_ignores_errors_finer_than_the_reference_resolution(examples):
    net = UNetConfig(base_channels=8, depth=2, input_unshuffle=2)
    torch.manual_seed(0)
    denoiser = Denoiser(NoiseConditionedUNet(net), EDMPreconditioner(sigma_data=0.5))
    inputs, targets = (torch.from_numpy(array) for array in examples.sample(2, 64, np.random.default_rng(2)))
    band = examples.loss_band(64)
    levels = NoiseLevels(zero_fraction=1.0)  # no added noise: the loss is deterministic
    cols = torch.arange(64.0)
    fine = 0.5 * torch.cos(torch.pi * cols)[None, None, None, :] * torch.ones_like(targets)  # Nyquist stripes
    coarse = 0.5 * torch.cos(2 * torch.pi * cols / 64)[None, None, None, :] * torch.ones_like(targets)

    def loss(target):
        return weighted_denoising_error(denoiser, inputs, target, levels, torch.Generator().manual_seed(0), band).item()

    base = loss(targets)
    assert loss(targets + fine) == pytest.approx(base, rel=1e-3)
    assert loss(targets + coarse) > 1.5 * base


def test_the_bank_refreshes_a_fixed_number_of_slots_per_step():
    from cryoscore.pairs.guidance import BANK_REFRESH_PER_STEP, SYNTHETIC_BANK_SIZE

    generation = GuidanceExamples.bank_generation
    for step in range(3 * SYNTHETIC_BANK_SIZE):
        changed = [slot for slot in range(SYNTHETIC_BANK_SIZE)
                   if generation(slot, step) != (generation(slot, step - 1) if step else 0)]
        assert len(changed) == BANK_REFRESH_PER_STEP


def test_examples_at_a_step_do_not_depend_on_the_steps_drawn_before(dataset, examples):
    # What makes a resumed guided run draw what an uninterrupted one would.
    fresh = GuidanceExamples(examples.config, [normalise_pair(pair) for pair in pairs_from_dataset(dataset)],
                             PIXEL_SIZE_A, seed=0)
    for step in range(5):
        examples.sample(2, 64, np.random.default_rng(step), step)
    after_history = examples.sample(3, 64, np.random.default_rng(9), 40)
    without_history = fresh.sample(3, 64, np.random.default_rng(9), 40)
    assert all(np.array_equal(a, b) for a, b in zip(after_history, without_history))
    later = fresh.sample(3, 64, np.random.default_rng(9), 400)
    assert not np.array_equal(later[1], without_history[1])  # the bank moved on


def _examples_on_ice(directory, background, *, particles, n_frames, seed):
    """Two simulated apoferritin micrographs (384 px at PIXEL_SIZE_A, 30 e/A^2) on ``background``
    (BackgroundParams) written to ``directory``: their halves in noise units, and the guidance
    examples drawn from them with the dataset's own reference."""
    config = SimulationConfig(n_micrographs=2, size_px=384, pixel_size_a=PIXEL_SIZE_A, particles_per_micrograph=particles,
                              dose_e_per_a2=30.0, n_frames=n_frames, background=background, seed=seed)
    write_dataset(config, directory, progress=False)
    normalised = [normalise_pair(pair) for pair in pairs_from_dataset(directory)]
    return normalised, GuidanceExamples(GuidanceConfig(reference=str(directory / "reference.mrc")), normalised,
                                        PIXEL_SIZE_A, seed=0)


@pytest.mark.parametrize("ice", ["flat", "particle-scale"])
def test_the_spectrum_fit_separates_ice_from_particles(tmp_path, ice):
    """Ice whose power-law spectrum reaches the particle's own scale is fitted as ice (large
    coefficient, and random ice of that spectrum in the synthetic inputs), not taken for
    particle contrast: the fitted particle amplitude stays that of the dose either way."""
    from cryoscore.simulate.background import BackgroundParams

    background = (BackgroundParams(strength=0.0) if ice == "flat" else
                  BackgroundParams(strength=4.0, spectral_exponent=2.5, shortest_wavelength_a=60.0))
    normalised, examples = _examples_on_ice(tmp_path, background, particles=24, n_frames=8, seed=5)
    even, _ = read_mrc(tmp_path / "even" / "mic_0000.mrc")
    assert examples.amplitude == pytest.approx(math.sqrt(even.mean()), rel=0.3)
    ice_field = examples.ice_field(256, np.random.default_rng(0))
    diameter_a = examples.diameter_px * PIXEL_SIZE_A
    ice_power = band_power(ice_field, ice_field, PIXEL_SIZE_A, diameter_a, 25.0)
    data_power = np.mean([band_power(p.even - p.even.mean(), p.odd - p.odd.mean(), PIXEL_SIZE_A, diameter_a, 25.0)
                          for p in normalised])
    if ice == "flat":
        assert ice_power < 0.2 * data_power
    else:
        assert ice_power > 0.4 * data_power  # most of the particle band's power here is ice


def test_a_reference_whose_spectrum_explains_nothing_falls_back_to_the_band_power(caplog):
    """Halves that share only power-law 'ice' (no particle): the fit gives the particles no
    weight, and the amplitude falls back to matching the particle band's power, as before the
    spectrum fit, so a decoy or a faint reference still trains (bench --quick's decoy did not)."""
    import logging

    from cryoscore.pairs.halves import HalfPair

    rng = np.random.default_rng(7)
    k = np.hypot(np.fft.fftfreq(256)[:, None], np.fft.rfftfreq(256)[None, :])
    pairs = []
    for index in range(2):
        ice = np.fft.irfft2(np.fft.rfft2(rng.normal(size=(256, 256))) * np.maximum(k, 1 / 256) ** -1.5, s=(256, 256))
        ice *= 2.0 / ice.std()
        pairs.append(HalfPair(f"ice{index}", (ice + rng.normal(size=ice.shape)).astype(np.float32),
                              (ice + rng.normal(size=ice.shape)).astype(np.float32), PIXEL_SIZE_A))
    with caplog.at_level(logging.WARNING):
        examples = GuidanceExamples(GuidanceConfig(reference="apoferritin"), pairs, PIXEL_SIZE_A, seed=0)
    assert examples.spectrum.ice_coefficient > 0 and examples.amplitude > 0
    assert "explains none of the data" in caplog.text


def test_the_datas_own_ice_between_two_and_four_diameters_is_background_in_the_synthetic_inputs(tmp_path):
    """Wavelengths longer than two particle diameters cannot describe a particle (the bench's background
    metric takes them as background too), so the synthetic inputs carry the data's own ice there: ice
    that varies over 2-4 diameters (contamination the size of a large particle, as on the default
    benchmark's elongated particle) is taught as background, not left for the network to keep."""
    from cryoscore.pairs.guidance import BACKGROUND_DIAMETERS
    from cryoscore.simulate.background import BackgroundParams

    background = BackgroundParams(strength=10.0, spectral_exponent=1.0, shortest_wavelength_a=250.0)
    normalised, examples = _examples_on_ice(tmp_path, background, particles=12, n_frames=4, seed=7)
    diameter_a = examples.diameter_px * PIXEL_SIZE_A
    assert BACKGROUND_DIAMETERS == 2.0
    longest_a, shortest_a = 4 * diameter_a, 2.2 * diameter_a  # the band a 4-diameter cut-off left out
    data = np.mean([band_power(p.even, p.odd, PIXEL_SIZE_A, longest_a, shortest_a) for p in normalised])
    kept = np.mean([band_power(b, b, PIXEL_SIZE_A, longest_a, shortest_a) for b in examples.backgrounds])
    assert data > 1.0  # the band holds ice well above a half's noise
    assert kept > 0.5 * data
