"""Simulate whole micrographs with exact ground truth and write them as a dataset directory.

One micrograph, in order: CTF parameters and ice background drawn from the micrograph's
own random generator ``default_rng([seed, index])``; particles placed and oriented;
phase-contrast image; expected electrons per frame ``E = N_frame * T * (1 + c)`` as the
detector's MTF passes them; drift; the detector's counts (Poisson for the ideal detector) in
the even and odd half sums (or frame by frame when frames are written).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from tqdm import tqdm

from cryoscore import __version__
from cryoscore.io.coords import ParticleCoordinates, write_coordinates
from cryoscore.io.layout import DatasetLayout, write_json
from cryoscore.io.movie import write_movie
from cryoscore.io.mrc import write_mrc
from cryoscore.simulate.background import BackgroundParams, ice_transmission
from cryoscore.simulate.ctf import CtfParams
from cryoscore.simulate.detector import IDEAL, DetectorParams, apply_mtf, expected_counts, sample_counts
from cryoscore.simulate.dose import (
    counts_per_pixel_per_frame,
    drift_sum,
    drift_trajectory,
    frame_parity,
    sample_frames,
)
from cryoscore.simulate.ice import ice_projected_potential
from cryoscore.simulate.micrograph import particle_contrast, phase_contrast, place_particles
from cryoscore.simulate.project import random_orientations
from cryoscore.simulate.specimen import Specimen
from cryoscore.simulate.volume import load_specimen

logger = logging.getLogger(__name__)

ICE_STREAM = 1
"""Third element of the seed of a micrograph's vitreous-ice potential (``[seed, index, ICE_STREAM]``)."""

DEFAULT_PARTICLES_PER_1024_PX = 40
"""Particles on a 1024 x 1024 px micrograph when none are asked for (``SimulationConfig``'s default)."""


def default_particle_count(size_px: int) -> int:
    """The default particle count for a ``size_px`` square micrograph: 40 per 1024 x 1024 px, scaled
    with the area (10 at 512 px, 640 at 4096 px), so the default particle density fits any size."""
    return max(1, round(DEFAULT_PARTICLES_PER_1024_PX * (size_px / 1024) ** 2))


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that determines a simulated dataset; the same config gives the same files.

    Sizes are in pixels, lengths in Angstrom (``_a``) or micrometres (``_um``), dose in
    electrons per square Angstrom over the whole movie.

    ``contrast_scale`` multiplies the particles' phase contrast ``c`` (not the ice's): the
    fraction of the weak-phase-object contrast that the particles keep. Real images show
    less contrast than that model predicts (beam-induced motion, radiation damage and
    charging blur and fade the particles; the cryo-EM analogue of the Stobbs factor). 1 is
    the model as it is; the real EMPIAR-10146 micrographs match about 0.2
    (benchmarks/RESULTS.md, section 6).
    """

    specimen: str = "apoferritin"
    n_micrographs: int = 4
    size_px: int = 1024
    pixel_size_a: float = 1.5
    particles_per_micrograph: int = DEFAULT_PARTICLES_PER_1024_PX  # at the default size_px
    dose_e_per_a2: float = 40.0
    n_frames: int = 40
    defocus_range_um: tuple[float, float] = (1.0, 2.5)
    max_astigmatism_um: float = 0.1
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.07
    bfactor_a2: float = 60.0
    contrast_scale: float = 1.0
    background: BackgroundParams = BackgroundParams()
    detector: DetectorParams = IDEAL
    edge_particles: bool = False
    cluster_fraction: float = 0.0
    drift_a: float = 0.0
    write_frames: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "--micrographs must be >= 1": self.n_micrographs >= 1,
            "--size must be >= 64 px": self.size_px >= 64,
            "--pixel-size must be > 0": self.pixel_size_a > 0,
            "--particles must be >= 0": self.particles_per_micrograph >= 0,
            "--dose must be > 0": self.dose_e_per_a2 > 0,
            "--contrast-scale must lie in (0, 1]": 0 < self.contrast_scale <= 1,
            "--frames must be >= 2 (even and odd halves)": self.n_frames >= 2,
            "--defocus needs 0 < min <= max": 0 < self.defocus_range_um[0] <= self.defocus_range_um[1],
            "astigmatism must be >= 0 and below the smallest defocus": (
                0 <= self.max_astigmatism_um < self.defocus_range_um[0]
            ),
            "--cluster-fraction must lie in [0, 1]": 0 <= self.cluster_fraction <= 1,
            "--drift must be >= 0": self.drift_a >= 0,
            "--seed must be >= 0": self.seed >= 0,
        }
        failed = [message for message, ok in checks.items() if not ok]
        if failed:
            raise ValueError("; ".join(failed))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class MicrographTruth:
    """The noise-free description of one simulated micrograph.

    Images are float32 tensors (H, W) in electron counts. ``clean`` and ``background``
    are on the scale of the full sum over all frames, drift included, and add up to its
    expected value; ``expected_per_frame`` is one undrifted frame's mean electrons per pixel
    as the detector's MTF passes them (before double counting), which ``detector`` records.
    """

    name: str
    ctf: CtfParams
    centres_rc: np.ndarray  # (n, 2) row, col in pixels
    angles_deg: np.ndarray  # (n, 3) RELION rot, tilt, psi
    drift_rc: np.ndarray  # (n_frames, 2) per-frame shift in pixels
    expected_per_frame: torch.Tensor
    clean: torch.Tensor
    background: torch.Tensor
    noise_seed: int
    detector: DetectorParams = IDEAL

    def coordinates(self) -> ParticleCoordinates:
        """Particle centres with poses and per-particle CTF, in RELION units."""
        n = len(self.centres_rc)
        return ParticleCoordinates(
            x_px=self.centres_rc[:, 1].copy(),
            y_px=self.centres_rc[:, 0].copy(),
            angles_deg=self.angles_deg,
            defocus_u_a=np.full(n, self.ctf.defocus_u_um * 1e4),
            defocus_v_a=np.full(n, self.ctf.defocus_v_um * 1e4),
            defocus_angle_deg=np.full(n, self.ctf.astigmatism_angle_deg),
        )


def micrograph_name(index: int) -> str:
    """File stem of micrograph ``index`` (contains none of even/odd/clean/background)."""
    return f"mic_{index:04d}"


def _draw_ctf(rng: np.random.Generator, config: SimulationConfig) -> CtfParams:
    mean_defocus = rng.uniform(*config.defocus_range_um)
    half_astigmatism = rng.uniform(0, config.max_astigmatism_um) / 2
    return CtfParams(
        defocus_u_um=mean_defocus + half_astigmatism,
        defocus_v_um=mean_defocus - half_astigmatism,
        astigmatism_angle_deg=rng.uniform(-90, 90),
        voltage_kv=config.voltage_kv,
        cs_mm=config.cs_mm,
        amplitude_contrast=config.amplitude_contrast,
        bfactor_a2=config.bfactor_a2,
    )


def render_truth(config: SimulationConfig, specimen: Specimen, index: int) -> MicrographTruth:
    """Noise-free micrograph ``index`` of the dataset ``config`` describes."""
    rng = np.random.default_rng([config.seed, index])
    shape = (config.size_px, config.size_px)
    ctf = _draw_ctf(rng, config)
    transmission = ice_transmission(rng, shape, config.pixel_size_a, config.background)
    centres = place_particles(
        rng,
        shape,
        config.particles_per_micrograph,
        specimen.diameter_a / config.pixel_size_a,
        edge_particles=config.edge_particles,
        cluster_fraction=config.cluster_fraction,
    )
    angles = random_orientations(len(centres), rng)
    contrast = config.contrast_scale * particle_contrast(
        torch.from_numpy(specimen.volume_v), config.pixel_size_a, angles, centres, shape, ctf
    )
    drift = drift_trajectory(rng, config.n_frames, config.drift_a / config.pixel_size_a)
    per_frame = counts_per_pixel_per_frame(config.dose_e_per_a2, config.n_frames, config.pixel_size_a)
    background_per_frame = per_frame * transmission
    if config.background.vitreous_ice_a > 0:  # its own stream: the rest of the micrograph stays as without it
        ice_rng = np.random.default_rng([config.seed, index, ICE_STREAM])
        ice = ice_projected_potential(ice_rng, shape, config.pixel_size_a, config.background.vitreous_ice_a)
        background_per_frame = background_per_frame * (1 + phase_contrast(ice, config.pixel_size_a, ctf))
    clean_per_frame = per_frame * transmission * contrast
    background_per_frame, clean_per_frame = (apply_mtf(image, config.detector)
                                             for image in (background_per_frame, clean_per_frame))
    return MicrographTruth(
        name=micrograph_name(index),
        ctf=ctf,
        centres_rc=centres,
        angles_deg=angles,
        drift_rc=drift,
        expected_per_frame=background_per_frame + clean_per_frame,
        clean=expected_counts(drift_sum(clean_per_frame, drift), config.detector),
        background=expected_counts(drift_sum(background_per_frame, drift), config.detector),
        noise_seed=int(rng.integers(2**62)),
        detector=config.detector,
    )


def sample_halves(truth: MicrographTruth) -> tuple[torch.Tensor, torch.Tensor]:
    """Even and odd half sums (H, W) of the detector's counts, drawn without making the frames."""
    generator = torch.Generator().manual_seed(truth.noise_seed)
    n_frames = len(truth.drift_rc)
    return tuple(  # type: ignore[return-value]
        sample_counts(drift_sum(truth.expected_per_frame, truth.drift_rc[frame_parity(n_frames, parity)]),
                      truth.detector, generator)
        for parity in ("even", "odd")
    )


class _HalfSumAccumulator:
    """Passes frames through while summing even- and odd-indexed ones."""

    def __init__(self, frames: Iterator[torch.Tensor], shape: tuple[int, int]):
        self._frames = frames
        self.halves = (torch.zeros(shape), torch.zeros(shape))

    def __iter__(self) -> Iterator[np.ndarray]:
        for index, frame in enumerate(self._frames):
            self.halves[index % 2].add_(frame)
            yield frame.numpy()


def write_micrograph(layout: DatasetLayout, config: SimulationConfig, truth: MicrographTruth) -> dict[str, Any]:
    """Draw the noise of one micrograph and write all its files; returns its manifest entry."""
    name, pixel_size = truth.name, config.pixel_size_a
    paths = {
        "micrograph": layout.micrograph(name),
        "even": layout.even(name),
        "odd": layout.odd(name),
        "clean": layout.clean(name),
        "background": layout.background(name),
        "coordinates": layout.coordinates(name),
    }
    if config.write_frames:
        paths["frames"] = layout.frames(name)
        generator = torch.Generator().manual_seed(truth.noise_seed)
        frames = _HalfSumAccumulator(
            sample_frames(truth.expected_per_frame, truth.drift_rc, generator, truth.detector),
            (truth.clean.shape[-2], truth.clean.shape[-1]),
        )
        write_movie(paths["frames"], frames, pixel_size, n_frames=config.n_frames)
        even, odd = frames.halves
    else:
        even, odd = sample_halves(truth)
    images = {"micrograph": even + odd, "even": even, "odd": odd, "clean": truth.clean, "background": truth.background}
    for kind, image in images.items():
        write_mrc(paths[kind], image.numpy(), pixel_size)
    write_coordinates(paths["coordinates"], truth.coordinates())
    return {
        "name": name,
        "n_particles": len(truth.centres_rc),
        "ctf": truth.ctf.to_dict(),
        "drift_px": float(np.linalg.norm(truth.drift_rc[-1] - truth.drift_rc[0])),
        "frame_shifts_px": np.round(truth.drift_rc, 4).tolist(),
        "files": {kind: str(path.relative_to(layout.root)) for kind, path in paths.items()},
    }


def write_dataset(
    config: SimulationConfig,
    output_dir: str | Path,
    *,
    command_line: Sequence[str] = (),
    progress: bool = True,
) -> Path:
    """Simulate ``config.n_micrographs`` micrographs into ``output_dir``; returns the manifest path.

    The manifest is written last, so a directory with a manifest is complete.
    """
    layout = DatasetLayout(Path(output_dir))
    specimen = load_specimen(config.specimen, config.pixel_size_a)
    write_mrc(layout.reference, specimen.volume_v, specimen.pixel_size_a)
    # disable=None: a progress bar on a terminal only, never mixed into redirected output.
    indices = tqdm(range(config.n_micrographs), desc="simulate", unit="mic", disable=None if progress else True)
    entries = [write_micrograph(layout, config, render_truth(config, specimen, index)) for index in indices]
    manifest = {
        "kind": "simulated",
        "cryoscore_version": __version__,
        "command_line": list(command_line),
        "pixel_size_a": config.pixel_size_a,
        "particle_diameter_a": specimen.diameter_a,
        "dose_e_per_a2": config.dose_e_per_a2,
        "n_frames": config.n_frames,
        "seed": config.seed,
        "specimen": {
            "source": config.specimen,
            "name": specimen.name,
            "symmetry": specimen.symmetry,
            "box_px": int(specimen.volume_v.shape[-1]),
            "reference": layout.reference.name,
        },
        "config": config.to_dict(),
        "micrographs": entries,
    }
    write_json(layout.manifest, manifest)
    logger.info("wrote %d micrographs to %s", len(entries), layout.root)
    return layout.manifest
