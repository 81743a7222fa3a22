"""The datasets a benchmark judges on: simulated ones it writes itself, and real ones it reads.

Every test micrograph becomes a :class:`TestMicrograph` (the full sum and what is known
about it), so the judges need not know where it came from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from cryoscore.bench.config import BenchConfig, RealDataset, SimulatedSpecimen
from cryoscore.errors import InputError
from cryoscore.io.coords import ParticleCoordinates, coordinate_file, read_coordinates
from cryoscore.io.ctf_star import micrograph_ctfs
from cryoscore.io.layout import DatasetLayout, read_manifest
from cryoscore.io.mrc import read_mrc
from cryoscore.simulate.background import BackgroundParams
from cryoscore.simulate.ctf import CtfParams
from cryoscore.simulate.dataset import SimulationConfig, write_dataset
from cryoscore.simulate.volume import load_specimen

SEED_BASES = {"train": 1000, "test": 2000, "empty": 3000}
"""Dataset seed = base + 10 * the specimen's seed index (``SimulatedSpecimen.seed_index``, else its place in the
config) + dose index: no two datasets of a config share one unless two specimens are given one seed index."""


@dataclass(frozen=True)
class TestMicrograph:
    """One micrograph to judge denoisers on.

    ``full_sum`` (H, W) in counts (arbitrary units for real data); ``truth`` the true or
    annotated particle centres; ``clean`` (H, W) the particles-only image and ``ctf`` the
    micrograph's CTF, both known for simulated data only (else None).
    """

    name: str
    full_sum: np.ndarray
    truth: ParticleCoordinates
    clean: np.ndarray | None
    ctf: CtfParams | None


@dataclass(frozen=True)
class TestSet:
    """The test micrographs of one dataset, with the scale every judge needs.

    ``reference`` is the density the reconstruction aligns to (a path or a built-in
    specimen name; None for none); ``true_map`` the path of the exact density (simulated
    data) for FSC against the truth; ``symmetry`` its point group label (the reconstruction
    searches one asymmetric unit and averages its maps over the group; None: C1);
    ``template`` the density the template picker correlates with, one independent of the
    guidance reference (a specimen as :func:`~cryoscore.simulate.volume.load_specimen` takes
    it; None: no template judge).
    """

    label: str
    micrographs: tuple[TestMicrograph, ...]
    pixel_size_a: float
    diameter_a: float
    reference: str | None
    true_map: Path | None
    dose_e_per_a2: float | None = None
    symmetry: str | None = None
    template: str | None = None


def _simulation(config: BenchConfig, specimen: SimulatedSpecimen, specimen_index: int, dose_index: int,
                role: str, diameter_a: float) -> SimulationConfig:
    settings = config.simulation
    n_micrographs = {"train": settings.train_micrographs, "test": settings.test_micrographs,
                     "empty": settings.empty_micrographs}[role]
    particle_area_px = math.pi / 4 * (diameter_a / settings.pixel_size_a) ** 2
    n_particles = 0 if role == "empty" else max(1, round(settings.particle_area_fraction * settings.size_px**2
                                                          / particle_area_px))
    return SimulationConfig(
        specimen=specimen.specimen,
        n_micrographs=n_micrographs,
        size_px=settings.size_px,
        pixel_size_a=settings.pixel_size_a,
        particles_per_micrograph=n_particles,
        dose_e_per_a2=specimen.doses[dose_index],
        defocus_range_um=settings.defocus_range_um,
        contrast_scale=settings.contrast_scale,
        background=BackgroundParams(strength=settings.background_strength, carbon_edge=True, n_contamination=1,
                                    spectral_exponent=settings.ice_spectral_exponent,
                                    shortest_wavelength_a=settings.ice_shortest_wavelength_a),
        seed=SEED_BASES[role] + 10 * specimen_index + dose_index,
    )


def simulate_specimen(config: BenchConfig, place: int, work_dir: Path) -> tuple[list[Path], list[Path], Path]:
    """Write the training and test datasets (one per dose) and the particle-free dataset
    (at the lowest dose) of ``config.simulated[place]`` under ``work_dir``, seeded by its
    ``seed_index`` or else by ``place`` (:data:`SEED_BASES`).

    Returns (training dataset directories, test dataset directories, the particle-free one).
    """
    specimen = config.simulated[place]
    specimen_index = place if specimen.seed_index is None else specimen.seed_index
    diameter_a = load_specimen(specimen.specimen, config.simulation.pixel_size_a).diameter_a
    directories: dict[str, list[Path]] = {"train": [], "test": [], "empty": []}
    lowest = int(np.argmin(specimen.doses))
    for role in ("train", "test", "empty"):
        for dose_index, dose in enumerate(specimen.doses):
            if role == "empty" and dose_index != lowest:
                continue
            directory = work_dir / f"{role}-{dose:g}e"
            write_dataset(_simulation(config, specimen, specimen_index, dose_index, role, diameter_a), directory,
                          command_line=["cryoscore", "bench"], progress=False)
            directories[role].append(directory)
    return directories["train"], directories["test"], directories["empty"][0]


def ctf_from_manifest(entry: dict) -> CtfParams:
    """The CtfParams of one micrograph entry of a simulated dataset's manifest."""
    return CtfParams(**entry["ctf"])


def simulated_test_set(directory: Path, label: str) -> TestSet:
    """Every micrograph of the simulated dataset in ``directory``, with its ground truth."""
    layout = DatasetLayout(directory)
    manifest = read_manifest(directory)
    entries = {entry["name"]: entry for entry in manifest["micrographs"]}
    micrographs = []
    for name in layout.micrograph_names():
        full_sum, _ = read_mrc(layout.micrograph(name))
        clean, _ = read_mrc(layout.clean(name))
        micrographs.append(TestMicrograph(name, full_sum, read_coordinates(layout.coordinates(name)), clean,
                                          ctf_from_manifest(entries[name])))
    return TestSet(label, tuple(micrographs), manifest["pixel_size_a"], manifest["particle_diameter_a"],
                   str(layout.reference), layout.reference, manifest["dose_e_per_a2"],
                   symmetry=manifest.get("specimen", {}).get("symmetry"))


def real_micrograph_paths(dataset: RealDataset) -> list[Path]:
    """The micrographs of a real dataset that have a coordinate file; InputError if none."""
    if not dataset.micrographs.is_dir():
        raise InputError(dataset.micrographs, "micrograph directory not found")
    paths = sorted(dataset.micrographs.glob("*.mrc"))
    annotated = [path for path in paths if coordinate_file(dataset.coordinates, path.stem) is not None]
    if not annotated:
        raise InputError(dataset.coordinates, f"no coordinate file matches a micrograph of {dataset.micrographs}")
    return annotated


def real_test_set(dataset: RealDataset, paths: Sequence[Path]) -> TestSet:
    """The real micrographs ``paths`` at their own pixel size, with their annotated coordinates,
    no clean image, and their CTFs where ``dataset.ctf`` names a micrograph STAR file. Without
    frames the learned denoisers train on recorrupted single-image pairs on the same grid
    (:mod:`cryoscore.pairs.single`), whose full sum each micrograph is, as a simulated full sum
    is of its even and odd halves."""
    ctfs = [None] * len(paths) if dataset.ctf is None else micrograph_ctfs(dataset.ctf, [path.stem for path in paths])
    micrographs = []
    box_px = round(dataset.diameter_a / dataset.pixel_size_a)
    for path, ctf in zip(paths, ctfs):
        image, _ = read_mrc(path, pixel_size_a=dataset.pixel_size_a)
        coordinates = coordinate_file(dataset.coordinates, path.stem)
        assert coordinates is not None, "real_micrographs keeps the annotated micrographs only"
        truth = read_coordinates(coordinates, box_size_px=box_px)
        micrographs.append(TestMicrograph(path.stem, image, truth, None, ctf))
    return TestSet(dataset.name, tuple(micrographs), dataset.pixel_size_a, dataset.diameter_a, dataset.reference,
                   None, symmetry=dataset.symmetry, template=dataset.template)
