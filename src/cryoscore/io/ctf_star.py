"""Per-micrograph CTF parameters in RELION micrograph STAR files (as CTFFIND, RELION and
cryoSPARC's exports write them).

Written as RELION 3.1+ does: a ``data_optics`` block (voltage, Cs, amplitude contrast, pixel
size) and a ``data_micrographs`` block with one row per micrograph (rlnMicrographName,
rlnDefocusU/V in Angstrom, rlnDefocusAngle in degrees, rlnCtfMaxResolution in Angstrom,
rlnCtfFigureOfMerit). Read from that layout or from RELION 3.0's single block with the optics
on every row. Micrographs are keyed by the stem of rlnMicrographName, as coordinate files are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Sequence

import pandas as pd
import starfile

from cryoscore.errors import InputError
from cryoscore.io.atomic import atomic_path
from cryoscore.io.coords import stamp_star_version
from cryoscore.io.mrc import check_readable
from cryoscore.simulate.ctf import CtfParams

_OPTICS_COLUMNS = {"rlnVoltage": "voltage_kv", "rlnSphericalAberration": "cs_mm",
                   "rlnAmplitudeContrast": "amplitude_contrast"}


@dataclass(frozen=True)
class MicrographCtf:
    """The CTF of one micrograph: ``name`` (the micrograph file name as written), ``params``,
    and the fit's resolution (Angstrom) and figure of merit where known."""

    name: str
    params: CtfParams
    fit_resolution_a: float | None = None
    figure_of_merit: float | None = None


def write_ctf_star(path: str | os.PathLike, micrographs: Sequence[MicrographCtf], pixel_size_a: float) -> None:
    """Write ``micrographs`` atomically as a RELION 3.1 micrograph STAR file, one optics group
    per distinct (voltage, Cs, amplitude contrast)."""
    path = Path(path)
    if not micrographs:
        raise ValueError("no micrographs to write")
    optics_keys = list(dict.fromkeys((m.params.voltage_kv, m.params.cs_mm, m.params.amplitude_contrast)
                                     for m in micrographs))
    optics = pd.DataFrame({
        "rlnOpticsGroupName": [f"opticsGroup{index + 1}" for index in range(len(optics_keys))],
        "rlnOpticsGroup": list(range(1, len(optics_keys) + 1)),
        "rlnMicrographPixelSize": [pixel_size_a] * len(optics_keys),
        "rlnVoltage": [key[0] for key in optics_keys],
        "rlnSphericalAberration": [key[1] for key in optics_keys],
        "rlnAmplitudeContrast": [key[2] for key in optics_keys],
    })
    rows = pd.DataFrame({
        "rlnMicrographName": [m.name for m in micrographs],
        "rlnOpticsGroup": [optics_keys.index((m.params.voltage_kv, m.params.cs_mm, m.params.amplitude_contrast)) + 1
                           for m in micrographs],
        "rlnDefocusU": [m.params.defocus_u_um * 1e4 for m in micrographs],
        "rlnDefocusV": [m.params.defocus_v_um * 1e4 for m in micrographs],
        "rlnDefocusAngle": [m.params.astigmatism_angle_deg for m in micrographs],
        "rlnCtfAstigmatism": [abs(m.params.defocus_u_um - m.params.defocus_v_um) * 1e4 for m in micrographs],
        "rlnCtfMaxResolution": [m.fit_resolution_a if m.fit_resolution_a is not None else float("nan")
                                for m in micrographs],
        "rlnCtfFigureOfMerit": [m.figure_of_merit if m.figure_of_merit is not None else float("nan")
                                for m in micrographs],
    })
    with atomic_path(path) as tmp:
        starfile.write({"optics": optics, "micrographs": rows}, tmp, float_format="%.6f")
        stamp_star_version(tmp)


def read_ctf_star(path: str | os.PathLike) -> dict[str, CtfParams]:
    """Each micrograph's CtfParams, keyed by the stem of its rlnMicrographName.

    Raises InputError naming the file if it is not a STAR file with rlnMicrographName and
    rlnDefocusU/V columns, or lacks the optics (voltage, Cs, amplitude contrast) of a row.
    """
    path = Path(path)
    check_readable(path)
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as error:  # starfile raises whatever its parser meets
        raise InputError(path, f"not a readable STAR file ({error})") from None
    tables = {name: block for name, block in blocks.items() if isinstance(block, pd.DataFrame)}
    micrographs = next((table for table in tables.values()
                        if {"rlnMicrographName", "rlnDefocusU", "rlnDefocusV"} <= set(table.columns)), None)
    if micrographs is None:
        raise InputError(path, "no table with rlnMicrographName, rlnDefocusU and rlnDefocusV")
    optics = tables.get("optics")
    if optics is not None and "rlnOpticsGroup" in micrographs.columns and "rlnOpticsGroup" in optics.columns:
        micrographs = micrographs.merge(optics.drop(columns=[c for c in optics.columns if c in micrographs.columns
                                                             and c != "rlnOpticsGroup"]),
                                        on="rlnOpticsGroup", how="left")
    missing = [column for column in _OPTICS_COLUMNS if column not in micrographs.columns]
    if missing:
        raise InputError(path, f"no {', '.join(missing)} for the micrographs (neither in their rows nor in data_optics)")
    result = {}
    try:
        for row in micrographs.itertuples(index=False):
            values = row._asdict()
            result[PurePath(str(values["rlnMicrographName"])).stem] = CtfParams(
                defocus_u_um=float(values["rlnDefocusU"]) / 1e4,
                defocus_v_um=float(values["rlnDefocusV"]) / 1e4,
                astigmatism_angle_deg=float(values.get("rlnDefocusAngle", 0.0)),
                **{field: float(values[column]) for column, field in _OPTICS_COLUMNS.items()})
    except (TypeError, ValueError) as error:
        raise InputError(path, f"bad CTF values ({error})") from None
    return result


def micrograph_ctfs(path: str | os.PathLike, names: Sequence[str]) -> list[CtfParams]:
    """The CTF of each micrograph of ``names`` (stems), in their order, from the STAR file
    ``path`` (:func:`read_ctf_star`); InputError naming the file if any of them has none."""
    ctfs = read_ctf_star(path)
    missing = [name for name in names if name not in ctfs]
    if missing:
        raise InputError(path, f"no CTF for micrograph(s) {', '.join(missing[:3])}" + (" ..." if len(missing) > 3 else ""))
    return [ctfs[name] for name in names]
