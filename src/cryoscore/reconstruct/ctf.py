"""Per-particle CTFs: parameters from coordinate files, values on a particle box's grid."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

from cryoscore.io.coords import ParticleCoordinates
from cryoscore.simulate.ctf import CtfParams, ctf_2d


def particle_ctfs(coords: ParticleCoordinates, micrograph_ctf: CtfParams) -> list[CtfParams]:
    """The CTF of each particle of ``coords`` (one per row), RELION conventions.

    Per-particle defocus (rlnDefocusU/V in Angstrom, rlnDefocusAngle in degrees) is used
    where the coordinates carry it; otherwise every particle gets ``micrograph_ctf``. The
    optics (voltage, Cs, amplitude contrast, B-factor) always come from ``micrograph_ctf``.
    """
    if coords.defocus_u_a is None or coords.defocus_v_a is None:
        return [micrograph_ctf] * len(coords)
    angles = coords.defocus_angle_deg
    return [
        dataclasses.replace(
            micrograph_ctf,
            defocus_u_um=float(coords.defocus_u_a[index]) * 1e-4,
            defocus_v_um=float(coords.defocus_v_a[index]) * 1e-4,
            astigmatism_angle_deg=micrograph_ctf.astigmatism_angle_deg if angles is None else float(angles[index]),
        )
        for index in range(len(coords))
    ]


def ctf_stack(params: Sequence[CtfParams], box_px: int, pixel_size_a: float) -> torch.Tensor:
    """CTFs (with B-factor envelope) on the unshifted rfft grid of a box, float32 (N, box, box//2+1).

    ``ctf_2d`` is evaluated once per distinct parameter set (usually once per micrograph).
    """
    cache: dict[CtfParams, torch.Tensor] = {}
    for item in params:
        if item not in cache:
            cache[item] = ctf_2d(item, (box_px, box_px), pixel_size_a, rfft=True)
    if not params:
        return torch.zeros((0, box_px, box_px // 2 + 1), dtype=torch.float32)
    return torch.stack([cache[item] for item in params])
