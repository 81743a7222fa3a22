"""Pose assignment by projection matching against a low-passed reference.

Each particle is compared with CTF-modulated central sections of the reference, in
Fourier space, over a band of frequencies ``0 < |k| <= 1 / resolution_a``: the reference
is thereby low-passed (a hard cut-off) and the DC term, which carries the ice, ignored.
The score of an orientation R and a translation s is the normalised cross-correlation

    NCC = Re sum_k conj(CTF(k) P_R(k)) X(k) exp(2 pi i k.s) / (|CTF P_R| |X|)

with ``X`` the particle's spectrum (masked by a soft disc) and ``P_R`` the reference's
central section: the cross-correlation of the particle with the CTF-modulated projection,
evaluated at the lag ``s``. For a whole grid of orientations and a few translations this
is one matrix product per batch of particles (translations within a few pixels are cheaper
evaluated so than by an inverse FFT per particle and orientation).

1. Global search: a Hopf-fibration grid of SO(3) from torch-so3 at ``coarse_step_deg``
   (restricted to an asymmetric unit when a symmetry is given) times translations on a
   square grid of ``shift_step_px`` within ``max_shift_px``, on a coarser band (up to
   ``1 / (global_resolution_over_diameter * diameter)``), whose correlation falls less
   steeply with the angle. The best ``n_candidates`` orientations per particle are scored
   again on the full band, with translations at half the step, and the best
   ``n_refined`` of those go on: a grid point 5-7 degrees from the true pose can score
   below one near a false, pseudo-symmetric pose, but refined it wins.
2. Local refinement, once per entry of ``local_steps_deg``: rotations ``R @ dR`` with
   ``dR`` on a cubic grid of rotation vectors of that step, within 1.3 previous steps of
   the identity (torch-so3's local grid is degenerate about its pole, so a rotation-vector
   grid is used), and translations within one previous step, at half of it. The first
   round refines every kept pose on the coarse band; each particle then keeps the pose
   that scores best on the full band.

The central sections are sampled directly at the band's frequencies from the padded,
sinc^2-corrected DFT of the (Fourier-cropped) reference, exactly as torch-fourier-slice's
``project_3d_to_2d`` samples them, with ``grid_sample`` (trilinear) instead of whole
slices: 5-10 times faster.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial.transform import Rotation
from torch_fourier_rescale import fourier_rescale_3d
from torch_fourier_slice.volume_utils import separable_sinc2_correction
from torch_so3 import get_symmetry_ranges, get_uniform_euler_angles

from cryoscore.errors import InputError
from cryoscore.reconstruct.grid import centred_rfft2, soft_sphere_mask
from cryoscore.settings import POINT_GROUP, PoseSearchConfig
from cryoscore.simulate.project import euler_to_matrices
from cryoscore.simulate.specimen import octahedral_rotations

logger = logging.getLogger(__name__)

#: Radius of a local search, in steps of the previous grid: beyond the covering radius of
#: both a cubic grid of rotation vectors (0.87 steps) and torch-so3's grid (about 0.76).
_LOCAL_RADIUS_OVER_STEP = 1.3
#: Bound on the correlation scores held at once (particles x translations x orientations).
_SCORES_PER_BATCH = 16_000_000
#: Bound on the central-section samples held at once in the local refinement.
_SAMPLES_PER_BATCH = 4_000_000
#: Width of the soft edge of the alignment mask, pixels.
_MASK_EDGE_PX = 4.0


@dataclass(frozen=True, eq=False)
class Poses:
    """Orientation and translation of each particle.

    Attributes
    ----------
    rotations:
        float32 (N, 3, 3) matrices left-multiplying (x, y, z): the particle image is the
        projection of the map along ``R @ (x, y, z)`` (see :mod:`cryoscore.simulate.project`).
    shifts_yx_px:
        float32 (N, 2) position of the particle's centre relative to the box centre,
        (row, column) pixels of the particle box; the particle is centred by shifting it by
        minus this.
    scores:
        float32 (N,) normalised cross-correlation of the best pose, in [-1, 1].
    """

    rotations: torch.Tensor
    shifts_yx_px: torch.Tensor
    scores: torch.Tensor

    def __len__(self) -> int:
        return len(self.rotations)

    def angles_deg(self) -> np.ndarray:
        """RELION Euler angles (rot, tilt, psi) of the rotations, float64 (N, 3) degrees."""
        with warnings.catch_warnings():  # tilt 0 or 180: rot and psi are one angle, psi is set to 0
            warnings.simplefilter("ignore", UserWarning)
            return Rotation.from_matrix(self.rotations.double().numpy()).as_euler("ZYZ", degrees=True)


def parse_symmetry(symmetry: str | None) -> tuple[str, int]:
    """``"C1"``, ``"C4"``, ``"D2"``, ``"O"`` or None (= C1) -> (group letter, order).

    Only the groups whose asymmetric unit torch-so3 gives in RELION's axis convention
    (Cn and Dn about z, O with four-folds along x, y and z) are accepted; InputError otherwise.
    """
    label = (symmetry or "C1").upper()
    if not POINT_GROUP.fullmatch(label):
        raise InputError("symmetry", f"unsupported symmetry {symmetry!r}; use Cn, Dn or O (or C1 for none)")
    return ("O", 24) if label == "O" else (label[0], int(label[1:]))


def point_group_rotations(symmetry: str | None) -> np.ndarray:
    """The rotations of a point group (:func:`parse_symmetry`), float64 (K, 3, 3), identity first.

    They act on (x, y, z) column vectors in RELION's axis convention: Cn turns about z, Dn
    adds two-folds about x and its images under Cn, O is the octahedral group with four-folds
    along x, y and z (:func:`~cryoscore.simulate.specimen.octahedral_rotations`).
    """
    group, order = parse_symmetry(symmetry)
    if group == "O":
        return octahedral_rotations()
    turns = [Rotation.from_euler("z", 360.0 * step / order, degrees=True).as_matrix() for step in range(order)]
    if group == "D":
        flip = np.diag([1.0, -1.0, -1.0])  # two-fold about x
        turns += [turn @ flip for turn in turns]
    return np.stack(turns)


def coarse_rotations(step_deg: float, symmetry: str | None = None) -> torch.Tensor:
    """Global orientation grid (torch-so3, Hopf fibration), float32 (n, 3, 3).

    With a symmetry the projection directions (rot, tilt) cover one asymmetric unit;
    the in-plane angle psi always covers 360 degrees.
    """
    group, order = parse_symmetry(symmetry)
    ranges = get_symmetry_ranges(group, order)
    angles = get_uniform_euler_angles(
        psi_step=step_deg,
        theta_step=step_deg,
        phi_min=ranges.phi_min,
        phi_max=ranges.phi_max,
        theta_min=ranges.theta_min,
        theta_max=ranges.theta_max,
    )
    return euler_to_matrices(angles.numpy())


def local_rotations(step_deg: float, radius_deg: float) -> torch.Tensor:
    """Small rotations on a cubic grid of rotation vectors (step ``step_deg``) within
    ``radius_deg`` of the identity (included), float32 (n, 3, 3)."""
    reach = math.floor(radius_deg / step_deg)
    axis = np.arange(-reach, reach + 1) * math.radians(step_deg)
    vectors = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    vectors = vectors[np.linalg.norm(vectors, axis=1) <= math.radians(radius_deg) + 1e-9]
    return torch.from_numpy(Rotation.from_rotvec(vectors).as_matrix()).to(torch.float32)


def shift_grid(step_px: float, max_shift_px: float) -> torch.Tensor:
    """Translations (n, 2) (row, column) pixels on a square grid of ``step_px`` within a
    disc of ``max_shift_px`` about 0 (included)."""
    reach = math.floor(max_shift_px / step_px + 1e-9)
    axis = torch.arange(-reach, reach + 1, dtype=torch.float32) * step_px
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1).reshape(-1, 2)
    return grid[grid.norm(dim=1) <= max_shift_px + 1e-6]


class _Band:
    """Half-plane integer frequencies (jy, jx), ``0 < |j| <= max_index``, jx > 0 or jx = 0 < jy.

    Each pair of Friedel mates appears once, so a sum over the band is half the sum over
    the whole plane. ``box`` is the smallest even box (<= the particle box) holding them.
    """

    def __init__(self, particle_box_px: int, max_index: int):
        self.particle_box = particle_box_px
        self.box = min(particle_box_px, 2 * max_index + 2)
        j = torch.arange(-max_index, max_index + 1)
        jy, jx = (grid.reshape(-1) for grid in torch.meshgrid(j, j[j >= 0], indexing="ij"))
        keep = (jy**2 + jx**2 <= max_index**2) & ((jx > 0) | (jy > 0))
        self.jy, self.jx = jy[keep], jx[keep]

    def gather(self, spectra: torch.Tensor) -> torch.Tensor:
        """The band's values (..., K) from unshifted half spectra (..., B, B//2+1)."""
        return spectra[..., self.jy % spectra.shape[-2], self.jx]

    def centring_phases(self, shifts_yx_px: torch.Tensor) -> torch.Tensor:
        """exp(+2 pi i k.s): moves a particle at ``shifts_yx_px`` (..., 2) to the centre; (..., K)."""
        turns = (shifts_yx_px[..., 0:1] * self.jy + shifts_yx_px[..., 1:2] * self.jx) / self.particle_box
        return torch.polar(torch.ones_like(turns), 2 * math.pi * turns)


class _BandProjector:
    """Central sections of a reference map at the band's frequencies.

    As torch-fourier-slice's ``project_3d_to_2d``: the map, cropped to the band's box in
    Fourier space, is zero-padded twice, divided by sinc^2 (the trilinear interpolation's
    attenuation) and Fourier transformed; sections are sampled trilinearly. The full
    (not half) DFT is kept, so no Friedel mate has to be looked up.
    """

    def __init__(self, reference: torch.Tensor, band: _Band):
        box = band.box
        padded = F.pad(fourier_rescale_3d(reference, target_shape=(box,) * 3)[0], [box // 2] * 6)
        padded = padded / separable_sinc2_correction(tuple(padded.shape))
        dft = torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(padded)))
        self._channels = torch.stack([dft.real, dft.imag])[None]  # (1, 2, n, n, n)
        size = 2 * box
        # frequency (cycles/px) f -> array index n/2 + f n -> grid_sample's [-1, 1] (align_corners)
        frequencies_xyz = torch.stack([band.jx, band.jy, torch.zeros_like(band.jx)], dim=-1) / box
        self._scaled_frequencies = (frequencies_xyz * 2 * size / (size - 1)).to(torch.float32)
        self._offset = 1.0 / (size - 1)

    def __call__(self, rotations: torch.Tensor) -> torch.Tensor:
        """Sections for rotations (..., 3, 3) as real (..., 2K): real parts, then imaginary."""
        grid = torch.einsum("...ij,kj->...ki", rotations, self._scaled_frequencies) + self._offset
        samples = F.grid_sample(self._channels, grid.reshape(1, 1, 1, -1, 3), mode="bilinear", align_corners=True)
        stack_shape = rotations.shape[:-2]
        return samples.reshape(2, -1, grid.shape[-2]).transpose(0, 1).reshape(*stack_shape, -1)


class _Matcher:
    """The particles' spectra and CTFs at a band, and the reference's sections there."""

    def __init__(self, spectra: torch.Tensor, ctfs: torch.Tensor, reference: torch.Tensor, band: _Band):
        self.band = band
        self.particles = band.gather(spectra)  # (N, K) complex
        self.ctfs = band.gather(ctfs)  # (N, K)
        self.project = _BandProjector(reference, band)

    def ncc(self, rows: torch.Tensor | slice, references: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
        """Normalised cross-correlation of particles ``rows`` (P of them) with references at shifts.

        references: sections as real (O, 2K) shared by all particles, or (P, O, 2K) one set
        each (see :class:`_BandProjector`); shifts: (S, 2) shared or (P, S, 2) per particle,
        pixels. Returns float32 (P, S, O).
        """
        particles, ctfs = self.particles[rows], self.ctfs[rows]
        modulated = (ctfs * particles)[:, None, :] * self.band.centring_phases(shifts)  # (P, S, K)
        stacked = torch.cat([modulated.real, modulated.imag], dim=-1)  # (P, S, 2K)
        n_freq = ctfs.shape[-1]
        power = references[..., :n_freq] ** 2 + references[..., n_freq:] ** 2
        if references.ndim == 2:
            correlation = stacked @ references.T  # (P, S, O)
            ref_norm_sq = ctfs**2 @ power.T  # (P, O)
        else:
            correlation = stacked @ references.transpose(1, 2)
            ref_norm_sq = torch.einsum("pk,pok->po", ctfs**2, power)
        particle_norm = particles.abs().pow(2).sum(dim=-1).sqrt()
        norm = ref_norm_sq.clamp_min(1e-30).sqrt() * particle_norm[:, None].clamp_min(1e-30)
        return correlation / norm[:, None, :]

    def refine(
        self,
        owner: torch.Tensor,
        rotations: torch.Tensor,
        shifts: torch.Tensor,
        deltas: torch.Tensor,
        offsets: torch.Tensor,
        max_shift_px: float,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Best of the poses ``rotations @ deltas`` and ``shifts + offsets`` (clipped to the
        search disc) for particles ``owner`` (R,), starting from rotations (R, 3, 3) and
        shifts (R, 2). Returns new rotations, shifts and scores (R,)."""
        rotations, shifts, scores = rotations.clone(), shifts.clone(), torch.zeros(len(owner))
        batch = max(1, _SAMPLES_PER_BATCH // (len(deltas) * len(self.band.jx)))
        for start in range(0, len(owner), batch):
            chunk = slice(start, start + batch)
            candidate_rotations = rotations[chunk, None] @ deltas  # (P, L, 3, 3)
            candidate_shifts = _clip_to_disc(shifts[chunk, None] + offsets, max_shift_px)  # (P, M, 2)
            ncc = self.ncc(owner[chunk], self.project(candidate_rotations), candidate_shifts)
            index, shifts[chunk], scores[chunk] = _best(ncc, candidate_shifts)
            rotations[chunk] = candidate_rotations[torch.arange(len(index)), index]
        return rotations, shifts, scores


def _best(ncc: torch.Tensor, shifts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference index (P,), shift (P, 2) and score (P,) of the maximum of ``ncc`` (P, S, O)
    over shifts (S, 2) or (P, S, 2) and references."""
    n_particles, _, n_refs = ncc.shape
    score, flat = ncc.reshape(n_particles, -1).max(dim=1)
    shifts = shifts.expand(n_particles, *shifts.shape[-2:])
    return flat % n_refs, shifts[torch.arange(n_particles), flat // n_refs], score


def _clip_to_disc(shifts: torch.Tensor, radius: float) -> torch.Tensor:
    """Shifts (..., 2) pulled radially onto the disc of ``radius`` where they lie outside it."""
    length = shifts.norm(dim=-1, keepdim=True)
    return shifts * (radius / length.clamp_min(radius))


def assign_poses(
    particles: torch.Tensor,
    ctfs: torch.Tensor,
    reference: torch.Tensor,
    pixel_size_a: float,
    *,
    resolution_a: float,
    max_shift_px: float,
    diameter_px: float,
    symmetry: str | None = None,
    config: PoseSearchConfig = PoseSearchConfig(),
) -> Poses:
    """Orientation and translation of each particle by projection matching (module notes).

    Parameters
    ----------
    particles:
        float32 (N, B, B) particles with protein positive (see :mod:`.extract`).
    ctfs:
        float32 (N, B, B//2+1) their CTFs on the unshifted rfft grid (:func:`.ctf.ctf_stack`).
    reference:
        float32 (B, B, B) map on the particles' grid (same pixel size, centre at B//2).
    pixel_size_a:
        Pixel size of particles and map, Angstrom.
    resolution_a:
        Only frequencies up to 1 / resolution_a are compared (the reference's low-pass), A.
    max_shift_px:
        Largest translation searched, pixels: particles picked farther off-centre are
        aligned on the wrong part of the box.
    diameter_px:
        Particle diameter, pixels: for alignment only, the particles are multiplied by a
        soft disc (edge 4 px) of its radius plus ``max_shift_px``; the global search uses
        frequencies up to ``1 / (global_resolution_over_diameter * diameter)``.
    symmetry:
        Point group of the reference (Cn, Dn about z; O), used to shrink the global grid.
    config:
        Search steps.
    """
    box = particles.shape[-1]
    max_index = min(math.floor(box * pixel_size_a / resolution_a), box // 2 - 1)
    if max_index < 2:
        raise InputError(
            "reference resolution",
            f"{resolution_a} A leaves fewer than 2 Fourier shells in a {box} px box at {pixel_size_a} A/px",
        )
    spectra = centred_rfft2(particles * soft_sphere_mask(box, 2, diameter_px / 2 + max_shift_px, _MASK_EDGE_PX))
    matcher = _Matcher(spectra, ctfs, reference, _Band(box, max_index))
    global_index = min(max(math.floor(box / (config.global_resolution_over_diameter * diameter_px)), 2), max_index)
    global_matcher = _Matcher(spectra, ctfs, reference, _Band(box, global_index))
    n_particles = len(particles)
    started = time.perf_counter()

    # 1. Global search on the coarse band; 2. its best orientations again on the full band,
    # with translations at half the step; the best few poses go on to local refinement.
    grid = coarse_rotations(config.coarse_step_deg, symmetry)
    global_sections, sections = global_matcher.project(grid), matcher.project(grid)
    coarse_shifts = shift_grid(config.shift_step_px, max_shift_px)
    fine_shifts = shift_grid(config.shift_step_px / 2, max_shift_px)
    n_candidates = min(config.n_candidates, len(grid))
    n_refined = min(config.n_refined, n_candidates)
    rotations = torch.zeros((n_particles, n_refined, 3, 3))
    shifts = torch.zeros((n_particles, n_refined, 2))
    batch = max(1, _SCORES_PER_BATCH // (len(coarse_shifts) * len(grid)))
    for start in range(0, n_particles, batch):
        chunk = slice(start, start + batch)
        ncc = global_matcher.ncc(chunk, global_sections, coarse_shifts)
        candidates = ncc.max(dim=1).values.topk(n_candidates, dim=1).indices  # (P, M)
        best_over_shifts, shift_index = matcher.ncc(chunk, sections[candidates], fine_shifts).max(dim=1)
        kept = best_over_shifts.topk(n_refined, dim=1).indices
        rotations[chunk] = grid[candidates.gather(1, kept)]
        shifts[chunk] = fine_shifts[shift_index.gather(1, kept)]
    elapsed = time.perf_counter() - started
    logger.debug("global search, %d particles, %d orientations: %.1f s", n_particles, len(grid), elapsed)

    # 3. Local refinement about each kept pose, the first round on the coarse band; after
    # it, each particle keeps its best pose by the full band's score.
    owner = torch.arange(n_particles).repeat_interleave(n_refined)
    rotations, shifts = rotations.reshape(-1, 3, 3), shifts.reshape(-1, 2)
    previous_step_deg, shift_step = config.coarse_step_deg, config.shift_step_px / 2
    for round_index, step_deg in enumerate(config.local_steps_deg):
        deltas = local_rotations(step_deg, _LOCAL_RADIUS_OVER_STEP * previous_step_deg)
        shift_step = shift_step / 2
        offsets = shift_grid(shift_step, shift_step * math.sqrt(2))  # the 3 x 3 neighbourhood
        round_matcher = global_matcher if round_index == 0 else matcher
        rotations, shifts, scores = round_matcher.refine(owner, rotations, shifts, deltas, offsets, max_shift_px)
        if round_index == 0:
            scores = matcher.refine(owner, rotations, shifts, torch.eye(3)[None], torch.zeros((1, 2)), max_shift_px)[2]
            best = scores.reshape(n_particles, -1).argmax(dim=1) + torch.arange(n_particles) * n_refined
            rotations, shifts, scores, owner = rotations[best], shifts[best], scores[best], owner[best]
        previous_step_deg = step_deg
        elapsed = time.perf_counter() - started
        logger.debug("local round at %.2f deg, %d rotations: %.1f s", step_deg, len(deltas), elapsed)
    return Poses(rotations, shifts, scores)
