"""CTF estimation (cryoscore.preprocess.ctf, ``cryoscore ctf``) against the simulator's true
defoci, the vitreous-ice phase contrast that gives a micrograph its Thon rings, and the
RELION micrograph STAR files the estimates are written to."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from cryoscore.errors import InputError
from cryoscore.io.ctf_star import MicrographCtf, read_ctf_star, write_ctf_star
from cryoscore.io.layout import DatasetLayout
from cryoscore.io.mrc import read_mrc, write_mrc
from cryoscore.preprocess.ctf import RELIABLE_FIGURE_OF_MERIT, CtfSearch, estimate_ctf
from cryoscore.settings import ReconstructionSettings
from cryoscore.simulate.background import BackgroundParams
from cryoscore.simulate.ctf import CtfParams
from cryoscore.simulate.dataset import SimulationConfig, write_dataset
from cryoscore.simulate.ice import (
    WATER_CONTACT_DISTANCE_A,
    WATER_NUMBER_DENSITY_PER_A3,
    hard_sphere_structure_factor,
    ice_potential_spectrum,
    ice_projected_potential,
)

BOX_48 = ReconstructionSettings(box_px=48)
"""Reconstructions in these tests run in a 48 px box."""


def test_hard_sphere_structure_factor_has_its_compressibility_limit_and_first_peak():
    eta = math.pi / 6 * WATER_NUMBER_DENSITY_PER_A3 * WATER_CONTACT_DISTANCE_A**3
    k = np.linspace(0.001, 1.0, 4000)
    structure = hard_sphere_structure_factor(k)
    assert structure[0] == pytest.approx((1 - eta) ** 4 / (1 + 2 * eta) ** 2, rel=1e-6)
    assert np.all(np.abs(np.diff(structure[:100])) < 1e-3)  # continuous where the closed form takes over
    peak = k[np.argmax(structure)]
    assert 1.3 < 2 * np.pi * peak * WATER_CONTACT_DISTANCE_A / np.pi < 2.6  # q d between 1.3 pi and 2.6 pi
    assert structure[-1] == pytest.approx(1.0, abs=0.2)  # uncorrelated at short wavelengths


def test_ice_potential_has_the_spectrum_it_is_drawn_from_and_scales_with_thickness():
    rng = np.random.default_rng(0)
    pixel_a, size = 1.5, 512
    field = ice_projected_potential(rng, (size, size), pixel_a, 300.0).numpy().astype(np.float64)
    periodogram = np.abs(np.fft.rfft2(field)) ** 2 * pixel_a**2 / size**2  # V^2 A^2
    ky = np.fft.fftfreq(size, d=pixel_a)[:, None]
    kx = np.fft.rfftfreq(size, d=pixel_a)[None, :]
    k = np.sqrt(ky**2 + kx**2)
    for low, high in ((0.05, 0.1), (0.15, 0.2), (0.25, 0.3)):
        band = (k > low) & (k < high)
        assert periodogram[band].mean() == pytest.approx(ice_potential_spectrum(k[band], 300.0).mean(), rel=0.05)
    assert ice_potential_spectrum(np.array([0.1]), 600.0)[0] == pytest.approx(
        2 * ice_potential_spectrum(np.array([0.1]), 300.0)[0])


@pytest.fixture(scope="module")
def iced_dataset(tmp_path_factory):
    """Two 768 px micrographs at 1.5 A/px, 40 e/A^2, 300 A of vitreous ice, astigmatic."""
    directory = tmp_path_factory.mktemp("iced")
    write_dataset(SimulationConfig(specimen="apoferritin", n_micrographs=2, size_px=768, pixel_size_a=1.5,
                                   particles_per_micrograph=15, dose_e_per_a2=40.0, max_astigmatism_um=0.3,
                                   background=BackgroundParams(vitreous_ice_a=300.0), seed=11),
                  directory, progress=False)
    return directory


def test_estimated_defocus_is_within_20_nm_of_the_simulated_one(iced_dataset):
    layout = DatasetLayout(iced_dataset)
    manifest = json.loads((iced_dataset / "manifest.json").read_text())
    for entry in manifest["micrographs"]:
        image, pixel_a = read_mrc(layout.micrograph(entry["name"]))
        estimate = estimate_ctf(image, pixel_a, CtfSearch(tile_px=256))
        truth = entry["ctf"]
        assert estimate.params.defocus_u_um == pytest.approx(truth["defocus_u_um"], abs=0.02)
        assert estimate.params.defocus_v_um == pytest.approx(truth["defocus_v_um"], abs=0.02)
        if truth["defocus_u_um"] - truth["defocus_v_um"] > 0.05:
            difference = (estimate.params.astigmatism_angle_deg - truth["astigmatism_angle_deg"]) % 180
            assert min(difference, 180 - difference) < 10
        assert estimate.figure_of_merit >= RELIABLE_FIGURE_OF_MERIT
        assert estimate.fit_resolution_a < 10.0


def test_the_ice_alone_gives_thon_rings_and_without_it_particles_in_noise_give_none(tmp_path, iced_dataset):
    """The particles' own rings are under the shot noise at 40 e/A^2; the ice's are not, as in
    real micrographs."""
    config = SimulationConfig(specimen="apoferritin", n_micrographs=1, size_px=768, pixel_size_a=1.5,
                              particles_per_micrograph=15, dose_e_per_a2=40.0, seed=11)
    write_dataset(config, tmp_path / "dry", progress=False)
    image, pixel_a = read_mrc(DatasetLayout(tmp_path / "dry").micrograph("mic_0000"))
    assert estimate_ctf(image, pixel_a, CtfSearch(tile_px=256)).figure_of_merit < RELIABLE_FIGURE_OF_MERIT
    empty = dataclasses.replace(config, particles_per_micrograph=0, background=BackgroundParams(vitreous_ice_a=300.0))
    write_dataset(empty, tmp_path / "ice-only", progress=False)
    image, _ = read_mrc(DatasetLayout(tmp_path / "ice-only").micrograph("mic_0000"))
    truth = json.loads((tmp_path / "ice-only" / "manifest.json").read_text())["micrographs"][0]["ctf"]
    estimate = estimate_ctf(image, pixel_a, CtfSearch(tile_px=256))
    assert estimate.figure_of_merit >= RELIABLE_FIGURE_OF_MERIT
    assert (estimate.params.defocus_u_um + estimate.params.defocus_v_um) / 2 == pytest.approx(
        (truth["defocus_u_um"] + truth["defocus_v_um"]) / 2, abs=0.02)


def test_white_noise_is_flagged_as_having_no_rings():
    noise = np.random.default_rng(1).normal(size=(512, 512)).astype(np.float32)
    assert estimate_ctf(noise, 1.5, CtfSearch(tile_px=256)).figure_of_merit < RELIABLE_FIGURE_OF_MERIT


def test_bad_search_settings_and_tiny_micrographs_are_refused():
    with pytest.raises(ValueError, match="defocus range"):
        CtfSearch(defocus_range_um=(3.0, 1.0))
    with pytest.raises(ValueError, match="resolution range"):
        CtfSearch(resolution_range_a=(5.0, 30.0))
    with pytest.raises(ValueError, match="too small"):
        estimate_ctf(np.zeros((40, 40), dtype=np.float32), 1.0)
    with pytest.raises(ValueError, match="no room for Thon rings"):
        estimate_ctf(np.zeros((256, 256), dtype=np.float32), 10.0)


def test_ctf_star_round_trip_and_relion_30_files(tmp_path):
    written = [MicrographCtf("MotionCorr/a.mrc", CtfParams(1.2, 1.1, 30.0), 4.5, 0.3),
               MicrographCtf("MotionCorr/b.mrc", CtfParams(2.0, 1.9, 150.0, voltage_kv=200.0, cs_mm=2.0), None, None)]
    write_ctf_star(tmp_path / "ctf.star", written, 1.06)
    read = read_ctf_star(tmp_path / "ctf.star")
    assert set(read) == {"a", "b"}
    for micrograph in written:
        got = read[micrograph.name.split("/")[1][:-4]]
        for field in ("defocus_u_um", "defocus_v_um", "astigmatism_angle_deg", "voltage_kv", "cs_mm",
                      "amplitude_contrast"):
            assert getattr(got, field) == pytest.approx(getattr(micrograph.params, field), abs=1e-5)
    (tmp_path / "relion30.star").write_text(
        "data_\nloop_\n_rlnMicrographName #1\n_rlnDefocusU #2\n_rlnDefocusV #3\n_rlnDefocusAngle #4\n"
        "_rlnVoltage #5\n_rlnSphericalAberration #6\n_rlnAmplitudeContrast #7\n"
        "Micrographs/x.mrc 15000 14000 12.5 300 2.7 0.1\n")
    assert read_ctf_star(tmp_path / "relion30.star")["x"] == CtfParams(1.5, 1.4, 12.5, 300.0, 2.7, 0.1)
    (tmp_path / "coords.star").write_text("data_\nloop_\n_rlnCoordinateX #1\n_rlnCoordinateY #2\n1 2\n")
    with pytest.raises(InputError, match="no table with rlnMicrographName"):
        read_ctf_star(tmp_path / "coords.star")


def test_cryoscore_ctf_writes_a_star_file_and_refuses_bad_input_in_one_line(tmp_path, iced_dataset):
    command = [sys.executable, "-m", "cryoscore.cli", "ctf"]
    ran = subprocess.run(command + [str(iced_dataset / "micrographs"), "-o", str(tmp_path / "ctf.star"),
                                    "--tile", "256"], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.count("defocus U") == 2 and "unreliable" not in ran.stdout
    manifest = json.loads((iced_dataset / "manifest.json").read_text())
    estimates = read_ctf_star(tmp_path / "ctf.star")
    for entry in manifest["micrographs"]:
        assert estimates[entry["name"]].defocus_u_um == pytest.approx(entry["ctf"]["defocus_u_um"], abs=0.02)
    (tmp_path / "broken.mrc").write_text("not an MRC file")
    failed = subprocess.run(command + [str(tmp_path / "broken.mrc"), "-o", str(tmp_path / "x.star")],
                            capture_output=True, text=True)
    assert failed.returncode == 2 and len(failed.stderr.strip().splitlines()) == 1
    assert "broken.mrc" in failed.stderr and not (tmp_path / "x.star").exists()
    write_mrc(tmp_path / "noise.mrc", np.random.default_rng(0).normal(size=(256, 256)).astype(np.float32), 1.5)
    flagged = subprocess.run(command + [str(tmp_path / "noise.mrc"), "-o", str(tmp_path / "n.star"), "--tile", "256"],
                             capture_output=True, text=True)
    assert flagged.returncode == 0 and "no Thon rings found" in flagged.stdout


def test_vitreous_ice_adds_only_background_and_leaves_the_rest_of_the_micrograph_as_it_was(tmp_path):
    config = SimulationConfig(specimen="small", n_micrographs=1, size_px=256, pixel_size_a=1.5,
                              particles_per_micrograph=5, dose_e_per_a2=40.0, seed=5)
    write_dataset(config, tmp_path / "dry", progress=False)
    write_dataset(dataclasses.replace(config, background=BackgroundParams(vitreous_ice_a=300.0)), tmp_path / "iced",
                  progress=False)
    dry, iced = DatasetLayout(tmp_path / "dry"), DatasetLayout(tmp_path / "iced")
    np.testing.assert_array_equal(read_mrc(dry.clean("mic_0000"))[0], read_mrc(iced.clean("mic_0000"))[0])
    dry_background, iced_background = read_mrc(dry.background("mic_0000"))[0], read_mrc(iced.background("mic_0000"))[0]
    assert iced_background.mean() == pytest.approx(dry_background.mean(), rel=1e-3)  # contrast averages out
    relative = iced_background / dry_background - 1
    assert 0.02 < relative.std() < 0.1  # a few per cent of the beam: the ice's phase contrast at this sampling


@pytest.mark.slow
def test_a_map_from_estimated_ctfs_is_as_good_as_from_the_true_ones_and_a_wrong_ctf_is_worse(tmp_path):
    from cryoscore.preprocess.ctf import estimate_ctf_files
    from cryoscore.reconstruct.pipeline import reconstruct_dataset

    root = tmp_path / "data"
    write_dataset(SimulationConfig(specimen="apoferritin", n_micrographs=3, size_px=512, pixel_size_a=3.0,
                                   particles_per_micrograph=60, dose_e_per_a2=40.0, n_frames=4,
                                   defocus_range_um=(1.0, 2.5), background=BackgroundParams(vitreous_ice_a=300.0),
                                   seed=0), root, progress=False)
    paths = sorted((root / "micrographs").glob("*.mrc"))
    estimates, pixel_a = estimate_ctf_files(paths, CtfSearch(tile_px=256, resolution_range_a=(40.0, 7.0)))
    write_ctf_star(tmp_path / "estimated.star", estimates, pixel_a)
    wrong = [dataclasses.replace(m, params=dataclasses.replace(m.params, defocus_u_um=m.params.defocus_u_um + 0.4,
                                                               defocus_v_um=m.params.defocus_v_um + 0.4))
             for m in estimates]
    write_ctf_star(tmp_path / "wrong.star", wrong, pixel_a)
    true = reconstruct_dataset(root, settings=BOX_48)
    estimated = reconstruct_dataset(root, ctf_star=tmp_path / "estimated.star", settings=BOX_48)
    off = reconstruct_dataset(root, ctf_star=tmp_path / "wrong.star", settings=BOX_48)
    assert estimated.truth_resolution_a < 1.1 * true.truth_resolution_a
    assert off.truth_resolution_a > 1.2 * estimated.truth_resolution_a
    write_ctf_star(tmp_path / "partial.star", estimates[:1], pixel_a)
    with pytest.raises(InputError, match="no CTF for micrograph"):
        reconstruct_dataset(root, ctf_star=tmp_path / "partial.star", settings=BOX_48)


def test_guided_training_takes_its_defocus_range_and_optics_from_a_ctf_star(tmp_path):
    from cryoscore.cli import build_parser
    from cryoscore.cli.train import _guidance_config

    write_ctf_star(tmp_path / "ctf.star", [MicrographCtf("a.mrc", CtfParams(1.3, 1.1, 10.0, voltage_kv=200.0, cs_mm=2.0)),
                                           MicrographCtf("b.mrc", CtfParams(2.6, 2.5, 80.0, voltage_kv=200.0,
                                                                            cs_mm=2.0))], 1.0)
    common = ["train", "sim/", "--method", "guided", "--reference", "apoferritin", "-o", "m.pt"]
    guidance = _guidance_config(build_parser().parse_args(common + ["--guide-ctf", str(tmp_path / "ctf.star")]))
    assert guidance.defocus_range_um == pytest.approx((1.1, 2.6))
    assert (guidance.voltage_kv, guidance.cs_mm) == (200.0, 2.0)
    with pytest.raises(InputError, match="not both"):
        _guidance_config(build_parser().parse_args(common + ["--guide-ctf", str(tmp_path / "ctf.star"),
                                                             "--guide-defocus", "1", "2"]))
