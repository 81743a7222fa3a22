"""Reference-free 2D classification (cryoscore.classify, ``cryoscore classify2d``): the
alignment finds known rotations and shifts, CTF phase flipping undoes the CTF's sign, and
on simulated micrographs true particles and junk picks end up in different classes, the
particles fitting their averages better."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import starfile
import torch
from torch_fourier_shift import fourier_shift_image_2d

from cryoscore.classify.twod import Classification2DSettings, classify_2d, phase_flip, rotate_images
from cryoscore.io.coords import ParticleCoordinates, read_coordinates, write_coordinates
from cryoscore.io.ctf_star import MicrographCtf, write_ctf_star
from cryoscore.io.layout import DatasetLayout
from cryoscore.reconstruct.ctf import ctf_stack
from cryoscore.simulate.ctf import CtfParams
from cryoscore.simulate.dataset import SimulationConfig, write_dataset


def _letter(box: int = 48) -> torch.Tensor:
    """An asymmetric test object: an L of two Gaussian bars, its centre of mass at pixel (B//2, B//2)
    (where a picker puts a particle's centre)."""
    axis = torch.arange(box, dtype=torch.float32) - box // 2
    rows, cols = torch.meshgrid(axis, axis, indexing="ij")
    bar = torch.exp(-((cols + 6) ** 2) / 8) * (rows.abs() < 12)
    foot = torch.exp(-((rows - 10) ** 2) / 8) * ((cols > -6) & (cols < 8))
    letter = (bar + foot).to(torch.float32)
    centre = torch.stack([(letter * rows).sum(), (letter * cols).sum()]) / letter.sum()
    return fourier_shift_image_2d(letter[None], -centre[None])[0]


def _best_shifted_correlation(first: torch.Tensor, second: torch.Tensor) -> float:
    """Pearson correlation of two images (B, B) at the cyclic shift that maximises it."""
    a, b = first - first.mean(), second - second.mean()
    cross = torch.fft.irfft2(torch.fft.rfft2(a) * torch.conj(torch.fft.rfft2(b)), s=a.shape)
    return float(cross.max() / (a.norm() * b.norm()))


def test_rotation_about_the_box_centre_is_undone_by_its_inverse_and_matches_rot90():
    image = _letter()[None]
    back = rotate_images(rotate_images(image, torch.tensor([37.0])), torch.tensor([-37.0]))
    assert torch.corrcoef(torch.stack([back.flatten(), image.flatten()]))[0, 1] > 0.97
    odd = _letter(49)[None]  # an odd box's centre pixel is the array centre, about which rot90 turns
    quarter = rotate_images(odd, torch.tensor([90.0]))[0]
    turned = [torch.rot90(odd[0], k, dims=(0, 1)) for k in (1, 3)]
    assert max(float(torch.corrcoef(torch.stack([quarter.flatten(), t.flatten()]))[0, 1]) for t in turned) > 0.99
    delta = torch.zeros(1, 48, 48)
    delta[0, 24, 24] = 1.0  # an even box turns about pixel (B//2, B//2), where particles are centred
    for angle in (30.0, 90.0, 200.0):
        assert rotate_images(delta, torch.tensor([angle]))[0, 24, 24] > 0.99


def test_one_class_aligns_rotated_shifted_noisy_copies_into_the_object():
    rng = np.random.default_rng(0)
    truth = _letter()
    angles = torch.from_numpy(rng.uniform(0, 360, 60).astype(np.float32))
    shifts = torch.from_numpy(rng.uniform(-2, 2, (60, 2)).astype(np.float32))
    particles = fourier_shift_image_2d(rotate_images(truth.repeat(60, 1, 1), angles), shifts)
    particles = particles + 0.5 * torch.from_numpy(rng.normal(size=particles.shape).astype(np.float32))
    result = classify_2d(particles, 2.0, 60.0, Classification2DSettings(classes=1, iterations=6, angles=36,
                                                                         alignment_resolution_a=6.0))
    # The average is the object, turned and moved (it is re-centred on its centre of mass): the
    # best of 72 trial rotations at the best shift correlates highly.
    trials = rotate_images(truth.repeat(72, 1, 1), torch.arange(72) * 5.0)
    average = torch.from_numpy(result.averages[0])
    best = max(_best_shifted_correlation(average, trial) for trial in trials)
    assert best > 0.9
    # The angles are recovered up to one common offset (the average's own orientation): on a
    # 10 degree grid, within 10 degrees of the true angle plus that offset.
    difference = np.deg2rad(result.angles_deg - angles.numpy())
    offset = np.angle(np.mean(np.exp(1j * difference)))
    residual = np.rad2deg(np.angle(np.exp(1j * (difference - offset))))
    assert np.mean(np.abs(residual) < 10) > 0.9


def test_the_gold_standard_resolution_tells_a_particle_from_aligned_noise():
    """Independently refined halves agree to near Nyquist (4 A) on copies of an object and only to
    about the resolution they started from (30 A) on pure noise, which alignment alone would
    make agree (both halves were aligned to the same references)."""
    rng = np.random.default_rng(0)
    angles = torch.from_numpy(rng.uniform(0, 360, 60).astype(np.float32))
    shifts = torch.from_numpy(rng.uniform(-2, 2, (60, 2)).astype(np.float32))
    copies = fourier_shift_image_2d(rotate_images(_letter().repeat(60, 1, 1), angles), shifts)
    copies = copies + 0.5 * torch.from_numpy(rng.normal(size=copies.shape).astype(np.float32))
    settings = Classification2DSettings(classes=1, iterations=6, alignment_resolution_a=6.0)
    assert classify_2d(copies, 2.0, 60.0, settings).resolution_a[0] < 10.0
    noise = torch.from_numpy(rng.normal(size=(60, 48, 48)).astype(np.float32))
    resolution = classify_2d(noise, 2.0, 60.0, replace(settings, classes=2)).resolution_a
    assert np.all(resolution > 20.0)


def test_phase_flipping_restores_the_object_a_ctf_scrambled():
    truth = _letter(64)[None].repeat(2, 1, 1)  # at 1 A/px and 2-3 um the CTF flips sign inside the object's band
    ctfs = [CtfParams(2.0, 2.0), CtfParams(3.0, 2.9, 30.0)]
    spectrum = torch.fft.rfft2(torch.fft.ifftshift(truth, dim=(-2, -1))) * ctf_stack(ctfs, 64, 1.0)
    modulated = torch.fft.fftshift(torch.fft.irfft2(spectrum, s=(64, 64)), dim=(-2, -1))
    flipped = phase_flip(modulated, ctfs, 1.0)
    for index in range(2):
        before = torch.corrcoef(torch.stack([modulated[index].flatten(), truth[index].flatten()]))[0, 1]
        after = torch.corrcoef(torch.stack([flipped[index].flatten(), truth[index].flatten()]))[0, 1]
        assert after > 0.85 and before < 0.4
    np.testing.assert_allclose(phase_flip(flipped, ctfs, 1.0).numpy(), modulated.numpy(), atol=1e-4)


@pytest.fixture(scope="module")
def particles_and_junk(tmp_path_factory):
    """Two 512 px micrographs of the elongated particle at 4 A/px, the true picks plus as many
    junk picks (random positions at least a diameter from every particle), and the true CTFs."""
    root = tmp_path_factory.mktemp("class2d")
    write_dataset(SimulationConfig(specimen="elongated", n_micrographs=2, size_px=512, pixel_size_a=4.0,
                                   particles_per_micrograph=25, dose_e_per_a2=40.0, n_frames=4, seed=0),
                  root / "data", progress=False)
    layout = DatasetLayout(root / "data")
    manifest = json.loads(layout.manifest.read_text())
    rng = np.random.default_rng(1)
    (root / "picks").mkdir()
    for entry in manifest["micrographs"]:
        truth = read_coordinates(layout.coordinates(entry["name"]))
        junk = []
        while len(junk) < len(truth):
            x, y = rng.uniform(40, 472, 2)
            if np.min(np.hypot(truth.x_px - x, truth.y_px - y)) > 250 / 4:
                junk.append((x, y))
        junk = np.array(junk)
        write_coordinates(root / "picks" / f"{entry['name']}.star",
                          ParticleCoordinates(x_px=np.r_[truth.x_px, junk[:, 0]], y_px=np.r_[truth.y_px, junk[:, 1]]))
    write_ctf_star(root / "ctf.star", [MicrographCtf(f"{e['name']}.mrc", CtfParams(**e["ctf"]))
                                       for e in manifest["micrographs"]], 4.0)
    return root, layout


@pytest.mark.slow
def test_cryoscore_classify2d_puts_particles_and_junk_in_different_classes(particles_and_junk, tmp_path):
    root, layout = particles_and_junk
    ran = subprocess.run([sys.executable, "-m", "cryoscore.cli", "classify2d", str(root / "data" / "micrographs"),
                          "--picks", str(root / "picks"), "--diameter", "250", "--ctf", str(root / "ctf.star"),
                          "--classes", "4", "--iterations", "8", "--template", "elongated", "-o", str(tmp_path / "out")],
                         capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert "phase-flipped" in ran.stdout
    particles = starfile.read(tmp_path / "out" / "particles.star")
    assert set(particles["rlnClassNumber"]) <= {1, 2, 3, 4} and len(particles) > 80
    true_positions = {}
    for name in layout.micrograph_names():
        truth = read_coordinates(layout.coordinates(name))
        true_positions[name] = np.stack([truth.x_px, truth.y_px], axis=1)
    is_true = np.array([np.min(np.hypot(*(true_positions[name.split("/")[-1][:-4]] - [x, y]).T)) < 1
                        for name, x, y in zip(particles["rlnMicrographName"], particles["rlnCoordinateX"],
                                              particles["rlnCoordinateY"])])
    report = json.loads((tmp_path / "out" / "classify2d.json").read_text())
    purity = {number: is_true[particles["rlnClassNumber"] == number].mean()
              for number in range(1, 5) if (particles["rlnClassNumber"] == number).any()}
    particle_classes = [number for number, fraction in purity.items() if fraction > 0.5]
    in_particle_classes = np.isin(particles["rlnClassNumber"], particle_classes)
    assert in_particle_classes[is_true].mean() > 0.8 and in_particle_classes[~is_true].mean() < 0.2
    # A particle's best hypothesis is more probable than a junk pick's, and the particle classes'
    # gold-standard resolution is finer than the junk classes'.
    scores = particles["rlnMaxValueProbDistribution"].to_numpy()
    assert scores[is_true].mean() > scores[~is_true].mean() + 0.02
    assert sum(report["counts"]) == len(particles) and len(report["resolution_a"]) == 4
    resolution = {number: report["resolution_a"][number - 1] or np.inf for number in purity}
    junk_classes = [number for number in purity if number not in particle_classes]
    assert max(resolution[number] for number in particle_classes) < min(
        [resolution[number] for number in junk_classes] + [np.inf])
    # Matched against the particle's own density, the particle classes look like it and the junk ones less.
    matches = report["template"]["template_match"]
    assert min(matches[number - 1] for number in particle_classes) > max(
        [matches[number - 1] for number in junk_classes] + [-1.0])
    assert "of the particles in classes matching elongated" in ran.stdout
    assert (tmp_path / "out" / "classes.png").stat().st_size > 1000
    averages = (tmp_path / "out" / "class_averages.mrcs")
    assert averages.is_file()


def test_classify2d_refuses_missing_picks_and_too_few_particles_in_one_line(particles_and_junk, tmp_path):
    root, _ = particles_and_junk
    command = [sys.executable, "-m", "cryoscore.cli", "classify2d", str(root / "data" / "micrographs"),
               "--diameter", "250"]
    (tmp_path / "empty").mkdir()
    missing = subprocess.run(command + ["--picks", str(tmp_path / "empty"), "-o", str(tmp_path / "a")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "no picks for mic_0000.mrc" in missing.stderr
    too_many = subprocess.run(command + ["--picks", str(root / "picks"), "--classes", "500", "-o", str(tmp_path / "b")],
                              capture_output=True, text=True)
    assert too_many.returncode == 2 and "cannot fill 500 classes" in too_many.stderr
    assert len(too_many.stderr.strip().splitlines()) == 1
    no_template = subprocess.run(command + ["--picks", str(root / "picks"), "--template", str(tmp_path / "nosuch.mrc"),
                                            "-o", str(tmp_path / "c")], capture_output=True, text=True)
    assert no_template.returncode == 2 and "nosuch.mrc" in no_template.stderr
    assert len(no_template.stderr.strip().splitlines()) == 1 and not (tmp_path / "c" / "particles.star").exists()
