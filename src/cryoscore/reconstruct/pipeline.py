"""From picks to a resolution: extraction, pose assignment, reconstruction and FSC.

The judge a user would apply: particles are boxed from the *raw* micrographs at the picked
positions (:mod:`.extract`), given poses by projection matching against the reference
low-passed to ``reference_resolution_a`` over one asymmetric unit of the point group
(:mod:`.poses`), split at random into two halves (seeded) and reconstructed with CTF
correction where the CTFs are known (:mod:`.insert`), each half averaged over the point group
on its own; the half maps' FSC gives the resolution at 0.143, the full map's FSC against the
true map the resolution at 0.5 (:mod:`.fsc`). False picks add noise to the maps and
off-centre picks (beyond the translation search) blur them, so both cost resolution.

Einstein from noise: particles with no signal, aligned to the reference, reproduce the
reference up to ``reference_resolution_a`` in both half maps. A half-map resolution near
``reference_resolution_a`` therefore means nothing was found beyond the reference; the
FSC against the truth is not fooled that way only when the reference differs from it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from cryoscore.errors import InputError
from cryoscore.io.coords import ParticleCoordinates, picks_for_micrographs, read_picks
from cryoscore.io.ctf_star import micrograph_ctfs
from cryoscore.io.layout import DatasetLayout, read_manifest, write_json
from cryoscore.io.mrc import check_pixel_size, read_mrc, write_mrc
from cryoscore.reconstruct.ctf import ctf_stack
from cryoscore.reconstruct.extract import (
    extract_picked_particles,
    extraction_box_px,
    read_picked_micrographs,
    without_particle_defocus,
)
from cryoscore.reconstruct.fsc import HALF_MAP_THRESHOLD, TRUTH_THRESHOLD, FscCurve, fourier_shell_correlation
from cryoscore.reconstruct.grid import resample_volume, soft_sphere_mask, symmetrise_volume
from cryoscore.reconstruct.insert import reconstruct_half_maps
from cryoscore.reconstruct.poses import assign_poses, point_group_rotations
from cryoscore.settings import POINT_GROUP, ReconstructionSettings, SettingError
from cryoscore.simulate.ctf import CtfParams
from cryoscore.simulate.volume import load_specimen

logger = logging.getLogger(__name__)

#: Soft edge of the FSC mask beyond the particle radius, as a fraction of the diameter.
_FSC_MASK_EDGE_OVER_DIAMETER = 0.1


@dataclass(frozen=True, eq=False)
class ReconstructionResult:
    """What the reconstruction judge measured.

    Attributes
    ----------
    n_picks:
        Picks given, over all micrographs.
    n_particles:
        Particles reconstructed: picks on the micrographs, at most ``max_particles``.
    box_px, pixel_size_a:
        The particles' box (pixels) and pixel size (Angstrom) after downsampling; the maps'.
    half_map_resolution_a:
        Resolution where the half maps' FSC falls below 0.143, Angstrom (inf: not even
        the first shell).
    truth_resolution_a:
        Resolution where the full map's FSC with the true map falls below 0.5, Angstrom;
        None without a true map.
    fsc_half_maps, fsc_truth:
        The curves (masked, see :mod:`.fsc`); ``fsc_truth`` None without a true map.
    mean_pose_score:
        Mean normalised cross-correlation of the assigned poses.
    half_maps:
        float32 (2, B, B, B) half maps, axes (z, y, x).
    full_map:
        float32 (B, B, B) map from all particles.
    angles_deg, shifts_yx_px:
        Assigned poses, (n, 3) RELION Euler angles in degrees and (n, 2) particle centres
        relative to the box centre in pixels of the box.
    in_second_half:
        bool (n,) half each particle went to.
    timings_s:
        Seconds per stage: extract, poses, reconstruct, fsc, total.
    """

    n_picks: int
    n_particles: int
    box_px: int
    pixel_size_a: float
    half_map_resolution_a: float
    truth_resolution_a: float | None
    fsc_half_maps: FscCurve
    fsc_truth: FscCurve | None
    mean_pose_score: float
    half_maps: np.ndarray = field(repr=False)
    full_map: np.ndarray = field(repr=False)
    angles_deg: np.ndarray = field(repr=False)
    shifts_yx_px: np.ndarray = field(repr=False)
    in_second_half: np.ndarray = field(repr=False)
    timings_s: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary and curves, without maps and per-particle poses; inf -> None."""

        def finite_or_none(value: float | None) -> float | None:
            return None if value is None or not math.isfinite(value) else float(value)

        return {
            "n_picks": self.n_picks,
            "n_particles": self.n_particles,
            "box_px": self.box_px,
            "pixel_size_a": self.pixel_size_a,
            "half_map_resolution_a": finite_or_none(self.half_map_resolution_a),
            "truth_resolution_a": finite_or_none(self.truth_resolution_a),
            "mean_pose_score": self.mean_pose_score,
            "fsc_half_maps": self.fsc_half_maps.to_dict(),
            "fsc_truth": None if self.fsc_truth is None else self.fsc_truth.to_dict(),
            "timings_s": dict(self.timings_s),
        }


def _fsc_mask(box_px: int, diameter_px: float) -> torch.Tensor:
    """Soft ball: 1 within the particle radius, raised-cosine edge of 0.1 diameter (clipped
    to the box), (box, box, box)."""
    radius = min(diameter_px / 2, box_px / 2 - 1)
    edge = min(_FSC_MASK_EDGE_OVER_DIAMETER * diameter_px, box_px / 2 - 1 - radius)
    return soft_sphere_mask(box_px, 3, radius, edge)


def reconstruct_from_picks(
    micrographs: Sequence[np.ndarray | str | os.PathLike],
    picks: Sequence[ParticleCoordinates],
    ctfs: Sequence[CtfParams] | None,
    reference: np.ndarray,
    pixel_size_a: float,
    diameter_a: float,
    settings: ReconstructionSettings = ReconstructionSettings(),
    *,
    reference_pixel_size_a: float | None = None,
    true_map: np.ndarray | None = None,
    true_map_pixel_size_a: float | None = None,
) -> ReconstructionResult:
    """Reconstruct the particles picked on raw micrographs and measure the maps' resolution.

    Parameters
    ----------
    micrographs:
        Raw micrographs (H, W), as arrays or MRC paths (read one at a time).
    picks:
        Particle coordinates per micrograph (pixels of the micrograph); per-particle
        defocus (rlnDefocusU/V/Angle) is used when present.
    ctfs:
        CTF per micrograph, or None where they are unknown: the particles are then aligned
        and reconstructed as plain projections (CTF = 1, no correction), which holds only
        to the resolution of the CTF's first zero.
    reference:
        Map (D, D, D) for pose assignment, low-passed here to ``settings.reference_resolution_a``.
    pixel_size_a:
        Micrograph pixel size, Angstrom.
    diameter_a:
        Particle diameter, Angstrom: sets the box, the masks and the translation range.
    settings:
        Box, alignment, particle subset and CTF correction (:class:`ReconstructionSettings`).
    reference_pixel_size_a, true_map_pixel_size_a:
        Voxel sizes of the maps, Angstrom; default ``pixel_size_a``.
    true_map:
        The true map (D', D', D') for the FSC at 0.5, or None.

    Raises InputError for mismatched lengths, a box larger than a micrograph, no particles
    to reconstruct, or unusable sizes (a reference resolution finer than the box's Nyquist
    limit names ``settings.reference_resolution_a``).
    """
    started = time.perf_counter()
    if not len(micrographs) == len(picks) == (len(micrographs) if ctfs is None else len(ctfs)):
        n_ctfs = "no" if ctfs is None else len(ctfs)
        raise InputError(
            "picks",
            f"{len(micrographs)} micrographs, {len(picks)} coordinate sets and {n_ctfs} CTFs: "
            "need one of each per micrograph",
        )
    pixel_size_a = check_pixel_size("pixel size", pixel_size_a)
    if not diameter_a > 0:
        raise InputError("diameter", f"the particle diameter must be > 0 A, got {diameter_a}")
    extraction_box = extraction_box_px(diameter_a / pixel_size_a, settings.box_over_diameter)
    box = min(settings.box_px, extraction_box)
    particle_pixel_a = pixel_size_a * extraction_box / box
    if settings.reference_resolution_a < 2 * particle_pixel_a:
        raise SettingError(
            "ReconstructionSettings", "reference_resolution_a",
            f"{settings.reference_resolution_a:g} A is finer than Nyquist ({2 * particle_pixel_a:.3g} A) "
            f"of the {box} px particle box",
        )

    if ctfs is None and any(coordinates.defocus_u_a is not None for coordinates in picks):
        logger.warning("no CTFs: the picks' per-particle defocus is not used (no CTF correction)")
    stack = extract_picked_particles(micrographs, picks, ctfs, pixel_size_a, diameter_a, box,
                                     settings.box_over_diameter)
    n_picks = stack.n_picks
    n_available = len(stack.images)
    if n_available < 2:
        raise InputError("picks", f"{n_available} of {n_picks} picks lie on the micrographs; need at least 2 particles")
    rng = np.random.default_rng(settings.seed)
    subset = np.sort(rng.choice(n_available, size=min(settings.max_particles, n_available), replace=False))
    particles = stack.images[subset]
    particle_params = None if stack.ctfs is None else [stack.ctfs[index] for index in subset]
    n_particles = len(subset)
    in_second_half = np.zeros(n_particles, dtype=bool)
    in_second_half[rng.permutation(n_particles)[: n_particles // 2]] = True
    extracted = time.perf_counter()

    reference_grid = resample_volume(
        reference, reference_pixel_size_a or pixel_size_a, box, particle_pixel_a, source="reference"
    )
    diameter_px = diameter_a / particle_pixel_a
    max_shift_px = settings.max_shift_over_diameter * diameter_px
    poses = assign_poses(
        particles,
        (torch.ones((n_particles, box, box // 2 + 1)) if particle_params is None
         else ctf_stack(particle_params, box, particle_pixel_a)),
        reference_grid,
        particle_pixel_a,
        resolution_a=settings.reference_resolution_a,
        max_shift_px=max_shift_px,
        diameter_px=diameter_px,
        symmetry=settings.symmetry,
        config=settings.search,
    )
    posed = time.perf_counter()

    half_1, half_2, full = reconstruct_half_maps(
        particles, poses.rotations, poses.shifts_yx_px, particle_params, particle_pixel_a, in_second_half,
        wiener_constant=settings.wiener_constant,
    )
    group = point_group_rotations(settings.symmetry)
    if len(group) > 1:  # each half on its own, as RELION does: the FSC stays gold-standard
        half_1, half_2, full = (symmetrise_volume(volume, group) for volume in (half_1, half_2, full))
    reconstructed = time.perf_counter()

    mask = _fsc_mask(box, diameter_px)
    fsc_half_maps = fourier_shell_correlation(half_1, half_2, particle_pixel_a, mask)
    fsc_truth = None
    if true_map is not None:
        truth = resample_volume(
            true_map, true_map_pixel_size_a or pixel_size_a, box, particle_pixel_a, source="true map"
        )
        fsc_truth = fourier_shell_correlation(full, truth, particle_pixel_a, mask)
    finished = time.perf_counter()

    result = ReconstructionResult(
        n_picks=n_picks,
        n_particles=n_particles,
        box_px=box,
        pixel_size_a=particle_pixel_a,
        half_map_resolution_a=fsc_half_maps.resolution_a(HALF_MAP_THRESHOLD),
        truth_resolution_a=None if fsc_truth is None else fsc_truth.resolution_a(TRUTH_THRESHOLD),
        fsc_half_maps=fsc_half_maps,
        fsc_truth=fsc_truth,
        mean_pose_score=float(poses.scores.mean()),
        half_maps=torch.stack([half_1, half_2]).numpy(),
        full_map=full.numpy(),
        angles_deg=poses.angles_deg(),
        shifts_yx_px=poses.shifts_yx_px.numpy(),
        in_second_half=in_second_half,
        timings_s={
            "extract": extracted - started,
            "poses": posed - extracted,
            "reconstruct": reconstructed - posed,
            "fsc": finished - reconstructed,
            "total": finished - started,
        },
    )
    logger.info(
        "%d particles of %d px at %.3g A/px: half maps %.1f A (FSC 0.143), %.1f s",
        n_particles, box, particle_pixel_a, result.half_map_resolution_a, result.timings_s["total"],
    )
    return result


def reconstruct_micrographs(
    paths: Sequence[Path],
    picks_dir: str | os.PathLike,
    reference: str,
    diameter_a: float,
    settings: ReconstructionSettings = ReconstructionSettings(),
    *,
    ctf_star: str | os.PathLike | None = None,
    pixel_size_a: float | None = None,
    threshold: float | None = None,
) -> ReconstructionResult:
    """:func:`reconstruct_from_picks` on micrograph files without a dataset manifest (real data).

    The picks are ``picks_dir/NAME.star`` (or .box/.csv) per micrograph ``NAME.mrc``, those
    scoring at least ``threshold`` when given; the pixel size is ``pixel_size_a`` or the
    first micrograph's MRC header; the CTFs are those of ``ctf_star`` (a micrograph STAR
    file, matched by name) or, without it, unknown: the particles are then reconstructed
    without CTF correction. ``reference`` is a density as
    :func:`~cryoscore.simulate.volume.load_specimen` takes it (MRC map, atomic model,
    built-in name, ``shell:OUTER_A:INNER_A``), sampled at the micrographs' pixel size; to
    judge picks, use one independent of what made them (Einstein from noise, module notes).
    The point group is ``settings.symmetry`` (None: C1). There is no true map, so
    ``truth_resolution_a`` is None.
    """
    data = read_picked_micrographs(paths, picks_dir, ctf_star=ctf_star, pixel_size_a=pixel_size_a,
                                   threshold=threshold)
    volume = load_specimen(reference, data.pixel_size_a).volume_v
    return reconstruct_from_picks(data.paths, data.picks, data.ctfs, volume, data.pixel_size_a, diameter_a, settings)


def reconstruct_dataset(
    dataset_dir: str | os.PathLike,
    picks_dir: str | os.PathLike | None = None,
    *,
    threshold: float | None = None,
    ctf_star: str | os.PathLike | None = None,
    settings: ReconstructionSettings = ReconstructionSettings(),
) -> ReconstructionResult:
    """:func:`reconstruct_from_picks` on a dataset directory (see :mod:`cryoscore.io.layout`).

    Micrographs are the full sums ``micrographs/NAME.mrc`` of the manifest's micrographs,
    with the manifest's CTFs (or those of ``ctf_star``, a micrograph STAR file such as
    ``cryoscore ctf`` writes, matched by micrograph name; it then replaces any per-particle
    defocus the coordinate files carry), pixel size and particle diameter.
    Picks are read from
    ``picks_dir/NAME.star`` (RELION coordinates; InputError if one is missing), or are the
    true coordinates ``coordinates/NAME.star`` when ``picks_dir`` is None; with a
    ``threshold`` only picks whose figure of merit is at least that are used. The dataset's
    ``reference.mrc`` (for a simulation, the true specimen) is both the alignment reference
    (low-passed) and the true map; the manifest's symmetry is used unless ``settings`` names
    one.
    """
    layout = DatasetLayout(Path(dataset_dir))
    manifest = read_manifest(layout.root)
    try:
        pixel_size_a = float(manifest["pixel_size_a"])
        diameter_a = float(manifest["particle_diameter_a"])
        names = [entry["name"] for entry in manifest["micrographs"]]
        ctfs = [CtfParams(**entry["ctf"]) for entry in manifest["micrographs"]]
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(layout.manifest, f"incomplete manifest ({error})") from None
    if ctf_star is not None:
        ctfs = micrograph_ctfs(ctf_star, names)
    reference, reference_pixel_size_a = read_mrc(layout.reference, ndim=3)
    picks = ([read_picks(layout.coordinates(name), threshold) for name in names] if picks_dir is None
             else picks_for_micrographs([layout.micrograph(name) for name in names], picks_dir, threshold))
    if ctf_star is not None:
        picks = without_particle_defocus(picks)
    if settings.symmetry is None:
        symmetry = manifest.get("specimen", {}).get("symmetry")
        if symmetry is not None and not POINT_GROUP.fullmatch(symmetry):
            raise InputError(layout.manifest, f"symmetry {symmetry!r} is not supported (Cn, Dn or O); "
                                              "give --symmetry (C1 for none)")
        settings = dataclasses.replace(settings, symmetry=symmetry)
    return reconstruct_from_picks(
        [layout.micrograph(name) for name in names],
        picks,
        ctfs,
        reference,
        pixel_size_a,
        diameter_a,
        settings,
        reference_pixel_size_a=reference_pixel_size_a,
        true_map=reference,
        true_map_pixel_size_a=reference_pixel_size_a,
    )


def write_reconstruction(output_dir: str | os.PathLike, result: ReconstructionResult,
                         inputs: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write the maps and the measurements of ``result`` into ``output_dir``, atomically.

    Files: ``half1.mrc`` and ``half2.mrc`` (the half maps), ``map.mrc`` (all particles),
    all at ``result.pixel_size_a``, and ``reconstruction.json`` (``result.to_dict()`` plus
    ``inputs``, which should say where the picks came from). Returns the paths by role.
    """
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    paths = {"half1": output / "half1.mrc", "half2": output / "half2.mrc", "map": output / "map.mrc",
             "json": output / "reconstruction.json"}
    for role, volume in (("half1", result.half_maps[0]), ("half2", result.half_maps[1]), ("map", result.full_map)):
        write_mrc(paths[role], volume, result.pixel_size_a)
    write_json(paths["json"], {"inputs": inputs or {}, **result.to_dict()})
    return paths
