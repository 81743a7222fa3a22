"""Pick directories scored against truth directories: ``cryoscore score``.

Reads one coordinate file per micrograph on each side (STAR, BOX or CSV, matched by name),
takes each micrograph's particle diameter and pixel size from what the picker or the
simulator recorded (``pick.json``, ``manifest.json``) or from the caller, and matches them
with :func:`cryoscore.metrics.picking.match_picks`, which defines every statistic.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from cryoscore.errors import InputError
from cryoscore.io.coords import read_coordinates
from cryoscore.io.layout import MANIFEST_NAME, read_manifest, write_json
from cryoscore.metrics.picking import MatchResult, match_picks, pool_matches

#: The file a picker writes beside its coordinate files, recording the scale it used.
PICK_JSON_NAME = "pick.json"
_COORDINATE_SUFFIXES = (".star", ".box", ".csv")
#: Keys tried, in order, for the particle diameter (Angstrom) in pick.json or manifest.json.
_DIAMETER_KEYS = ("diameter_a", "particle_diameter_a")
_PIXEL_SIZE_KEYS = ("pixel_size_a",)


@dataclasses.dataclass(frozen=True, eq=False)
class PickingScore:
    """Picks of a set of micrographs judged against their ground truth.

    Attributes
    ----------
    micrographs:
        Micrograph name -> its :class:`MatchResult`, sorted by name.
    pooled:
        All micrographs pooled (:func:`pool_matches`).
    radius_fraction:
        The matching radius in particle diameters.
    diameter_a, pixel_size_a:
        Micrograph name -> particle diameter (Angstrom) and pixel size (Angstrom per pixel).
    """

    micrographs: dict[str, MatchResult]
    pooled: MatchResult
    radius_fraction: float
    diameter_a: dict[str, float]
    pixel_size_a: dict[str, float]

    def diameter_px(self, name: str) -> float:
        """Particle diameter on micrograph ``name``, pixels."""
        return self.diameter_a[name] / self.pixel_size_a[name]

    def radius_px(self, name: str) -> float:
        """Matching radius on micrograph ``name``, pixels."""
        return self.radius_fraction * self.diameter_px(name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``radius_fraction``, ``pooled`` and ``micrographs`` (name -> summary).

        Each summary is :meth:`MatchResult.to_dict`; a micrograph's also records
        ``diameter_a``, ``pixel_size_a`` and ``radius_px``.
        """
        micrographs = {}
        for name, result in self.micrographs.items():
            micrographs[name] = {
                "diameter_a": self.diameter_a[name],
                "pixel_size_a": self.pixel_size_a[name],
                "radius_px": self.radius_px(name),
                **result.to_dict(),
            }
        return {"radius_fraction": self.radius_fraction, "pooled": self.pooled.to_dict(), "micrographs": micrographs}

    def table(self) -> str:
        """A fixed-width text table: one row per micrograph, then the pooled row."""
        rows = [*self.micrographs.items(), ("pooled", self.pooled)]
        width = max(len("micrograph"), *(len(name) for name, _ in rows))
        header = (
            f"{'micrograph':<{width}}  {'picks':>6} {'truth':>6} {'threshold':>10} {'kept':>6} {'TP':>6} "
            f"{'precision':>9} {'recall':>7} {'F1':>6} {'AP':>6} {'centre_px':>9} {'centre_d':>8}"
        )
        lines = [header, "-" * len(header)]
        for name, result in rows:
            if name == "pooled":
                lines.append("-" * len(header))
            lines.append(
                f"{name:<{width}}  {result.n_picks:>6} {result.n_truth:>6} {_cell(result.threshold, '.4g', 10)} "
                f"{result.selected_at_best:>6} {result.true_positives_at_best:>6} "
                f"{_cell(result.precision, '.3f', 9)} {_cell(result.recall, '.3f', 7)} {_cell(result.f1, '.3f', 6)} "
                f"{_cell(result.average_precision, '.3f', 6)} {_cell(result.centring_error_px, '.2f', 9)} "
                f"{_cell(result.centring_error_diameters, '.3f', 8)}"
            )
        return "\n".join(lines)


def _cell(value: float | None, spec: str, width: int) -> str:
    """``value`` formatted right-aligned in ``width`` characters; ``-`` for None."""
    return f"{'-' if value is None else format(value, spec):>{width}}"


def _coordinate_files(directory: Path) -> dict[str, Path]:
    """Stem -> coordinate file (.star, .box, .csv; hidden files skipped) of ``directory``."""
    if not directory.is_dir():
        raise InputError(directory, "not a directory")
    files: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix.lower() not in _COORDINATE_SUFFIXES or path.name.startswith(".") or not path.is_file():
            continue
        if path.stem in files:
            raise InputError(path, f"same micrograph name as {files[path.stem].name}; keep one file per micrograph")
        files[path.stem] = path
    return files


def _read_json(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(path, f"not valid JSON ({error})") from None
    if not isinstance(content, dict):
        raise InputError(path, "expected a JSON object")
    return content


def _recorded_scales(picks_dir: Path, truth_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The files that may record the diameter and pixel size, most specific first, with their content.

    ``picks_dir/pick.json`` (the picker's record) and, when ``truth_dir`` is the
    ``coordinates/`` folder of a dataset, the dataset's manifest.json.
    """
    sources = []
    pick_json = picks_dir / PICK_JSON_NAME
    if pick_json.is_file():
        sources.append((pick_json, _with_per_micrograph_values(_read_json(pick_json))))
    dataset = truth_dir.resolve().parent
    if truth_dir.resolve().name == "coordinates" and (dataset / MANIFEST_NAME).is_file():
        sources.append((dataset / MANIFEST_NAME, read_manifest(dataset)))
    return sources


def _with_per_micrograph_values(content: dict[str, Any]) -> dict[str, Any]:
    """``content`` (a pick.json) with each value its ``micrographs`` list records per micrograph
    (``{"input": ..., "output": "NAME.star", "pixel_size_a": 1.85, ...}``, as ``cryoscore pick``
    writes it) also as a dict keyed by the output's stem, the form :func:`_recorded_value` reads;
    values recorded at the top level are kept as they are."""
    entries = content.get("micrographs")
    if not isinstance(entries, list):
        return content
    merged = dict(content)
    for key in (*_DIAMETER_KEYS, *_PIXEL_SIZE_KEYS):
        if key in content:
            continue
        per_micrograph = {Path(str(entry.get("output") or entry.get("input"))).stem: entry[key]
                          for entry in entries if isinstance(entry, dict) and key in entry}
        if per_micrograph:
            merged[key] = per_micrograph
    return merged


def _recorded_value(source: Path, content: dict[str, Any], keys: tuple[str, ...], name: str) -> float | None:
    """The first of ``keys`` in ``content`` for micrograph ``name``: a number, or a dict keyed by name.

    A dict key may be the micrograph name or a file name with that stem. None when absent.
    """
    for key in keys:
        value = content.get(key)
        if isinstance(value, dict):
            value = next((item for label, item in value.items() if label == name or Path(label).stem == name), None)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise InputError(source, f"{key} must be a positive number, got {value!r}")
        return float(value)
    return None


def _scale(
    explicit: float | None,
    option: str,
    keys: tuple[str, ...],
    sources: list[tuple[Path, dict[str, Any]]],
    names: list[str],
    picks_dir: Path,
) -> dict[str, float]:
    """Name -> value: ``explicit`` when given, else the first source recording it; InputError if none does."""
    if explicit is not None:
        if not (math.isfinite(explicit) and explicit > 0):
            raise InputError(option, f"must be a positive number, got {explicit}")
        return dict.fromkeys(names, float(explicit))
    values = {}
    for name in names:
        found = (_recorded_value(source, content, keys, name) for source, content in sources)
        value = next((item for item in found if item is not None), None)
        if value is None:
            raise InputError(
                picks_dir,
                f"no {keys[0]} for micrograph {name} in {PICK_JSON_NAME} or a dataset {MANIFEST_NAME}; "
                "pass --diameter and --pixel-size",
            )
        values[name] = value
    return values


def score_directories(
    picks_dir: str | os.PathLike,
    truth_dir: str | os.PathLike,
    *,
    radius_fraction: float = 0.5,
    diameter_a: float | None = None,
    pixel_size_a: float | None = None,
) -> PickingScore:
    """Score the picks in ``picks_dir`` against the true centres in ``truth_dir``.

    Files are paired by name: ``NAME.star`` (or ``.box`` / ``.csv``, read with
    :func:`~cryoscore.io.coords.read_coordinates`) in each. Scores are the picks' figure of
    merit (rlnAutopickFigureOfMerit, the CSV ``score`` column); files without one are
    unranked. A truth file without a picks file counts as zero picks (all misses).

    The matching radius is ``radius_fraction * diameter_a / pixel_size_a`` pixels. Each of
    ``diameter_a`` (Angstrom) and ``pixel_size_a`` (Angstrom per pixel) is, in order of
    precedence: the argument; ``picks_dir/pick.json`` (``diameter_a`` or
    ``particle_diameter_a``, and ``pixel_size_a``, each a number, a dict micrograph name
    -> number, or recorded per micrograph in its ``micrographs`` list as ``cryoscore pick``
    writes it; a name missing from a dict falls through); the ``manifest.json`` of the
    dataset whose ``coordinates/`` folder ``truth_dir`` is (``particle_diameter_a``,
    ``pixel_size_a``).

    Raises InputError for a picks file without a truth file (naming it), no common names,
    ranked and unranked picks files mixed, a missing diameter or pixel size, or an
    unreadable file.
    """
    picks_dir, truth_dir = Path(picks_dir), Path(truth_dir)
    if not (math.isfinite(radius_fraction) and radius_fraction > 0):
        raise InputError("--radius-fraction", f"must be a positive number, got {radius_fraction}")
    picks_files, truth_files = _coordinate_files(picks_dir), _coordinate_files(truth_dir)
    for name, path in picks_files.items():
        if name not in truth_files:
            raise InputError(path, f"no ground-truth file {name}.star/.box/.csv in {truth_dir}")
    if not picks_files:
        raise InputError(picks_dir, f"no coordinate files named like those in {truth_dir}")
    names = sorted(truth_files)
    sources = _recorded_scales(picks_dir, truth_dir)
    diameters = _scale(diameter_a, "--diameter", _DIAMETER_KEYS, sources, names, picks_dir)
    pixel_sizes = _scale(pixel_size_a, "--pixel-size", _PIXEL_SIZE_KEYS, sources, names, picks_dir)
    picks = {name: read_coordinates(path) for name, path in picks_files.items()}
    unranked = [picks_files[name] for name, coords in picks.items() if len(coords) and coords.figure_of_merit is None]
    if unranked and len(unranked) < sum(1 for coords in picks.values() if len(coords)):
        raise InputError(unranked[0], "has no scores (figure of merit) while other picks files have them")
    micrographs = {}
    for name in names:
        truth = read_coordinates(truth_files[name])
        diameter_px = diameters[name] / pixel_sizes[name]
        coords = picks.get(name)
        micrographs[name] = match_picks(
            np.zeros((0, 2)) if coords is None else np.stack([coords.x_px, coords.y_px], axis=1),
            None if coords is None else coords.figure_of_merit,
            np.stack([truth.x_px, truth.y_px], axis=1),
            radius_fraction * diameter_px,
            diameter_px=diameter_px,
        )
    return PickingScore(
        micrographs=micrographs,
        pooled=pool_matches(list(micrographs.values())),
        radius_fraction=float(radius_fraction),
        diameter_a=diameters,
        pixel_size_a=pixel_sizes,
    )


def write_score_json(path: str | os.PathLike, score: PickingScore) -> None:
    """Write :meth:`PickingScore.to_dict` to ``path`` as indented JSON, atomically."""
    write_json(path, score.to_dict())
