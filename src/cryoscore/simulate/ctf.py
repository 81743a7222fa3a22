"""Contrast transfer function and electron-optics constants.

The CTF itself comes from torch-ctf; this module fixes the conventions we use
everywhere (RELION's: defocus U/V in micrometres with U along the direction at
``astigmatism_angle_deg`` from the x axis, positive = underfocus) and adds the
B-factor envelope.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch_ctf import calculate_ctf_2d

from cryoscore.fourier import radial_frequency

# Physical constants (CODATA), SI units.
_PLANCK_J_S = 6.62607015e-34
_ELECTRON_MASS_KG = 9.1093837015e-31
_ELEMENTARY_CHARGE_C = 1.602176634e-19
_SPEED_OF_LIGHT_M_S = 299792458.0


def electron_wavelength_a(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Angstrom at an accelerating voltage in kV."""
    volts = voltage_kv * 1e3
    m0, e, c, h = _ELECTRON_MASS_KG, _ELEMENTARY_CHARGE_C, _SPEED_OF_LIGHT_M_S, _PLANCK_J_S
    momentum = math.sqrt(2 * m0 * e * volts * (1 + e * volts / (2 * m0 * c**2)))
    return h / momentum * 1e10


def interaction_constant_rad_per_v_a(voltage_kv: float) -> float:
    """Interaction constant sigma_e in rad / (V * Angstrom).

    The phase shift of the electron wave is ``sigma_e * projected_potential`` with the
    projected potential in V*A (0.000653 rad/(V A) at 300 kV; Kirkland, eq. 5.6).
    """
    volts = voltage_kv * 1e3
    rest_energy_ev = _ELECTRON_MASS_KG * _SPEED_OF_LIGHT_M_S**2 / _ELEMENTARY_CHARGE_C
    wavelength = electron_wavelength_a(voltage_kv)
    return 2 * math.pi / (wavelength * volts) * (rest_energy_ev + volts) / (2 * rest_energy_ev + volts)


@dataclass(frozen=True)
class CtfParams:
    """Microscope and defocus parameters of one micrograph (RELION conventions).

    Attributes
    ----------
    defocus_u_um, defocus_v_um:
        Defocus along the two principal astigmatism axes, micrometres, positive = underfocus.
    astigmatism_angle_deg:
        Angle of the U axis from the image x axis (columns), degrees (rlnDefocusAngle).
    voltage_kv, cs_mm, amplitude_contrast:
        Accelerating voltage (kV), spherical aberration (mm), amplitude contrast fraction.
    bfactor_a2:
        B-factor of the envelope ``exp(-B |k|^2 / 4)``, A^2 (k in 1/A); 0 = no envelope.
    """

    defocus_u_um: float
    defocus_v_um: float
    astigmatism_angle_deg: float = 0.0
    voltage_kv: float = 300.0
    cs_mm: float = 2.7
    amplitude_contrast: float = 0.07
    bfactor_a2: float = 0.0

    def __post_init__(self) -> None:
        if not (self.defocus_u_um > 0 and self.defocus_v_um > 0):
            raise ValueError("defocus must be positive (underfocus)")
        if self.voltage_kv <= 0 or self.cs_mm < 0 or self.bfactor_a2 < 0:
            raise ValueError("voltage must be > 0, Cs and B-factor >= 0")
        if not 0.0 <= self.amplitude_contrast < 1.0:
            raise ValueError("amplitude contrast must lie in [0, 1)")

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def ctf_2d(params: CtfParams, shape: tuple[int, int], pixel_size_a: float, *, rfft: bool = True) -> torch.Tensor:
    """CTF times the B-factor envelope on an unshifted (r)FFT grid, float32, shape (H, W//2+1) if rfft.

    Positive at low frequency (amplitude contrast) for underfocus; the weak-phase image
    is ``1 - 2 * IFFT(ctf * FFT(phase))`` so that particles appear dark, as recorded.
    """
    major_um, minor_um, major_angle_deg = params.defocus_u_um, params.defocus_v_um, params.astigmatism_angle_deg
    if minor_um > major_um:  # the same CTF with its axes swapped: torch-ctf 0.6 gives NaN for a negative astigmatism
        major_um, minor_um, major_angle_deg = minor_um, major_um, major_angle_deg + 90.0
    ctf = calculate_ctf_2d(
        defocus=(major_um + minor_um) / 2,
        astigmatism=(major_um - minor_um) / 2,
        astigmatism_angle=major_angle_deg,
        voltage=params.voltage_kv,
        spherical_aberration=params.cs_mm,
        amplitude_contrast=params.amplitude_contrast,
        phase_shift=0.0,
        pixel_size=pixel_size_a,
        image_shape=shape,
        rfft=rfft,
        fftshift=False,
    ).to(torch.float32)
    if params.bfactor_a2 > 0:
        k = radial_frequency(shape, pixel_size_a, rfft=rfft, backend="torch")
        ctf = ctf * torch.exp(-params.bfactor_a2 * k**2 / 4)
    return ctf
