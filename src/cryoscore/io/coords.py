"""Particle coordinates on one micrograph: RELION STAR, EMAN ``.box`` and CSV files.

Coordinates are in pixels of the micrograph: ``x_px`` is the column index and ``y_px``
the row index of the data array returned by :func:`~cryoscore.io.mrc.read_mrc`, with
the centre of the first pixel at 0 (RELION's convention for rlnCoordinateX/Y).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import starfile

from cryoscore import __version__
from cryoscore.errors import InputError
from cryoscore.io.atomic import atomic_path
from cryoscore.io.mrc import check_readable

_SUFFIXES = (".star", ".box", ".csv")
_REQUIRED = ("x_px", "y_px")

#: ParticleCoordinates field -> its RELION columns (several for an (N, k) field).
_STAR_COLUMNS = {
    "x_px": ("rlnCoordinateX",),
    "y_px": ("rlnCoordinateY",),
    "figure_of_merit": ("rlnAutopickFigureOfMerit",),
    "angles_deg": ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"),
    "defocus_u_a": ("rlnDefocusU",),
    "defocus_v_a": ("rlnDefocusV",),
    "defocus_angle_deg": ("rlnDefocusAngle",),
}
_CSV_COLUMNS: dict[str, tuple[str, ...]] = {"x_px": ("x",), "y_px": ("y",), "figure_of_merit": ("score",)}


@dataclasses.dataclass(frozen=True, eq=False)
class ParticleCoordinates:
    """Particle centres on one micrograph, with optional per-particle annotations.

    Every field is converted to a read-only float64 array (a copy) and must be finite.

    Attributes
    ----------
    x_px, y_px:
        (N,) centre column and row in pixels; the first pixel's centre is 0.
    figure_of_merit:
        (N,) picker score (rlnAutopickFigureOfMerit), or None.
    angles_deg:
        (N, 3) Euler angles (rot, tilt, psi) in degrees (rlnAngleRot/Tilt/Psi), or None.
    defocus_u_a, defocus_v_a:
        (N,) defocus along the major/minor astigmatism axes in Angstrom
        (rlnDefocusU/V), or None.
    defocus_angle_deg:
        (N,) astigmatism angle in degrees (rlnDefocusAngle), or None.
    """

    x_px: np.ndarray
    y_px: np.ndarray
    figure_of_merit: np.ndarray | None = None
    angles_deg: np.ndarray | None = None
    defocus_u_a: np.ndarray | None = None
    defocus_v_a: np.ndarray | None = None
    defocus_angle_deg: np.ndarray | None = None

    def __post_init__(self) -> None:
        n_particles = len(np.atleast_1d(self.x_px))
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None and field.name not in _REQUIRED:
                continue
            array = np.array(value, dtype=np.float64)
            expected = (n_particles, 3) if field.name == "angles_deg" else (n_particles,)
            if array.shape != expected:
                raise ValueError(f"{field.name} must have shape {expected}, got {array.shape}")
            n_bad = array.size - np.count_nonzero(np.isfinite(array))
            if n_bad:
                raise ValueError(f"{field.name} has {n_bad} NaN or infinite values")
            array.flags.writeable = False
            object.__setattr__(self, field.name, array)

    def __len__(self) -> int:
        return self.x_px.shape[0]

    def scoring_at_least(self, threshold: float | None) -> "ParticleCoordinates":
        """The particles whose figure of merit is >= ``threshold``, every annotation kept
        (all of them when ``threshold`` is None; ValueError if there are no scores)."""
        if threshold is None:
            return self
        if self.figure_of_merit is None:
            raise ValueError("these coordinates have no figure of merit to threshold")
        return self.take(self.figure_of_merit >= threshold)

    def take(self, index: np.ndarray) -> "ParticleCoordinates":
        """The particles selected by ``index`` (a boolean mask or integer indices), every field kept."""
        fields: dict[str, Any] = {field.name: None if getattr(self, field.name) is None
                                  else getattr(self, field.name)[index] for field in dataclasses.fields(self)}
        return ParticleCoordinates(**fields)


def _format(path: Path) -> str:
    """The lower-case suffix of a coordinate file; InputError unless .star, .box or .csv."""
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        known = ", ".join(_SUFFIXES)
        raise InputError(path, f"unsupported coordinate format {path.suffix!r}; use one of {known}")
    return suffix


def _check_box_size(path: Path, box_size_px: int) -> None:
    if not box_size_px > 0:
        raise InputError(path, f"box size must be a positive number of pixels, got {box_size_px}")


def _fields_from_table(
    path: Path, table: pd.DataFrame, columns: dict[str, tuple[str, ...]]
) -> dict[str, np.ndarray]:
    """Numeric arrays for the fields whose ``columns`` are all in ``table``; x and y required."""
    duplicated = table.columns[table.columns.duplicated()]
    if len(duplicated):
        raise InputError(path, f"column {duplicated[0]} appears twice")
    fields = {}
    for field, names in columns.items():
        missing = [name for name in names if name not in table.columns]
        if missing and field in _REQUIRED:
            raise InputError(path, f"missing column {missing[0]}")
        if missing:
            continue
        try:
            values = table[list(names)].apply(pd.to_numeric).to_numpy(dtype=np.float64)
        except (ValueError, TypeError) as err:
            raise InputError(path, f"non-numeric values in {', '.join(names)}") from err
        fields[field] = values[:, 0] if len(names) == 1 else values
    return fields


def _table_from_fields(
    coords: ParticleCoordinates, columns: dict[str, tuple[str, ...]]
) -> pd.DataFrame:
    """The present fields of ``coords`` as a table with the given column names."""
    table: dict[str, np.ndarray] = {}
    for field, names in columns.items():
        value = getattr(coords, field)
        if value is not None:
            table.update(zip(names, np.reshape(value, (len(coords), len(names))).T))
    return pd.DataFrame(table)


def _read_star(path: Path) -> dict[str, np.ndarray]:
    try:
        blocks = starfile.read(path, always_dict=True)
    except ValueError as err:
        raise InputError(path, f"not a readable STAR file ({err})") from err
    tables = [
        block if isinstance(block, pd.DataFrame) else pd.DataFrame([block])
        for block in blocks.values()
        if "rlnCoordinateX" in block
    ]
    if len(tables) != 1:
        raise InputError(path, f"expected one data block with rlnCoordinateX, found {len(tables)}")
    table = tables[0]
    if "rlnMicrographName" in table and table["rlnMicrographName"].nunique() > 1:
        raise InputError(
            path,
            f"holds particles of {table['rlnMicrographName'].nunique()} micrographs; "
            "expected the coordinates of one",
        )
    return _fields_from_table(path, table, _STAR_COLUMNS)


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    try:
        table = pd.read_csv(path)
    except ValueError as err:  # pandas' ParserError, EmptyDataError, UnicodeDecodeError
        raise InputError(path, f"not a readable CSV file ({err})") from err
    return _fields_from_table(path, table, _CSV_COLUMNS)


def _read_box(path: Path, box_size_px: int | None) -> dict[str, np.ndarray]:
    """EMAN box file: one "x_corner y_corner width height" line per particle."""
    try:
        lines = path.read_text().splitlines()
    except ValueError as err:  # UnicodeDecodeError
        raise InputError(path, "not a text file") from err
    rows = []
    for line_number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            x_corner, y_corner, width, height = map(float, line.split()[:4])
        except ValueError as err:
            raise InputError(
                path, f"line {line_number}: expected numbers x_corner y_corner width height"
            ) from err
        rows.append((x_corner, y_corner, width, height))
    boxes = np.array(rows, dtype=np.float64).reshape(-1, 4)
    corners, sizes = boxes[:, :2], boxes[:, 2:]
    if box_size_px is not None and np.any(sizes != box_size_px):
        raise InputError(path, f"box sizes in the file differ from the expected {box_size_px} px")
    centres = corners + sizes / 2
    return {"x_px": centres[:, 0], "y_px": centres[:, 1]}


def read_coordinates(
    path: str | os.PathLike, *, box_size_px: int | None = None
) -> ParticleCoordinates:
    """Read particle coordinates from a ``.star``, ``.box`` or ``.csv`` file (by suffix).

    - ``.star``: RELION; the one data block holding rlnCoordinateX (an unnamed block or
      one of several), with rlnCoordinateY and any of rlnAutopickFigureOfMerit,
      rlnAngleRot/Tilt/Psi (all three, else the angles are left out), rlnDefocusU/V/Angle.
      An empty loop gives zero particles.
    - ``.box``: EMAN; whitespace-separated x_corner y_corner width height, in pixels;
      the centre is corner + size / 2 (rows are not flipped). When ``box_size_px`` is
      given, every box in the file must have that width and height.
    - ``.csv``: a header line with ``x,y`` and optionally ``score`` (figure of merit).

    Raises InputError for an unreadable, malformed or incomplete file.
    """
    path = Path(path)
    suffix = _format(path)
    if box_size_px is not None:
        _check_box_size(path, box_size_px)
    check_readable(path)
    if suffix == ".star":
        fields = _read_star(path)
    elif suffix == ".csv":
        fields = _read_csv(path)
    else:
        fields = _read_box(path, box_size_px)
    try:
        return ParticleCoordinates(**fields)
    except ValueError as err:
        raise InputError(path, str(err)) from err


def coordinate_file(directory: str | os.PathLike, stem: str) -> Path | None:
    """``directory/STEM.star``, ``.box`` or ``.csv``, the first that exists, or None."""
    for suffix in _SUFFIXES:
        candidate = Path(directory) / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def read_picks(path: str | os.PathLike, threshold: float | None = None) -> ParticleCoordinates:
    """The picks of ``path`` (:func:`read_coordinates`) whose figure of merit is at least
    ``threshold`` (all of them when None); InputError naming the file if a threshold is given
    and the file has no figure of merit."""
    coordinates = read_coordinates(path)
    if threshold is not None and coordinates.figure_of_merit is None:
        raise InputError(path, "has no rlnAutopickFigureOfMerit column to apply the threshold to")
    return coordinates.scoring_at_least(threshold)


def picks_for_micrographs(micrographs: Sequence[Path], picks_dir: str | os.PathLike,
                          threshold: float | None = None) -> list[ParticleCoordinates]:
    """The picks of each micrograph, in order: ``picks_dir/NAME.star`` (or .box/.csv) for
    ``NAME.mrc`` (:func:`read_picks`); InputError naming ``picks_dir`` when one is missing."""
    picks = []
    for path in micrographs:
        found = coordinate_file(picks_dir, path.stem)
        if found is None:
            raise InputError(picks_dir, f"no picks for {path.name} (expected {path.stem}.star, .box or .csv)")
        picks.append(read_picks(found, threshold))
    return picks


def stamp_star_version(path: Path) -> None:
    """Swap starfile's "# Created ... at TIME on DATE" line for RELION's version line.

    Keeps the file a function of its content only, so equal inputs give equal files.
    """
    lines = path.read_text().splitlines(keepends=True)
    if lines and lines[0].startswith("# Created by the starfile"):
        lines[0] = f"# version 30001, written by cryoscore {__version__}\n"
    path.write_text("".join(lines))


def write_coordinates(
    path: str | os.PathLike, coords: ParticleCoordinates, *, box_size_px: int | None = None
) -> None:
    """Write ``coords`` atomically as ``.star``, ``.box`` or ``.csv`` (by suffix).

    - ``.star``: one unnamed loop block (``data_``), like RELION's per-micrograph
      coordinate files: rlnCoordinateX/Y plus the columns of the optional fields present.
    - ``.box``: EMAN lines x_corner y_corner width height with boxes of ``box_size_px``
      pixels centred on the particles; ``box_size_px`` is required.
    - ``.csv``: columns x, y and score (the figure of merit) when present.

    Values are written with 6 decimals (STAR, box) or exactly (CSV).
    """
    path = Path(path)
    suffix = _format(path)
    if suffix == ".box":
        if box_size_px is None:
            raise InputError(path, "writing a .box file needs a box size; pass --box-size")
        _check_box_size(path, box_size_px)
    with atomic_path(path) as tmp:
        if suffix == ".star":
            starfile.write(_table_from_fields(coords, _STAR_COLUMNS), tmp)
            stamp_star_version(tmp)
        elif suffix == ".csv":
            _table_from_fields(coords, _CSV_COLUMNS).to_csv(tmp, index=False)
        else:
            centres = np.stack([coords.x_px, coords.y_px], axis=1)
            sizes = np.full_like(centres, box_size_px)
            np.savetxt(tmp, np.hstack([centres - sizes / 2, sizes]), fmt="%.6f", delimiter="\t")
