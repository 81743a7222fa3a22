"""Pick particles on micrograph files and write one RELION coordinate file per micrograph.

::

    OUTDIR/NAME.star    rlnCoordinateX/Y and rlnAutopickFigureOfMerit, best first
    OUTDIR/pick.json    picker, its settings, pixel size and pick count per micrograph, version

``NAME`` is the input file's stem, so ``micrographs/mic_0001.mrc`` gives ``mic_0001.star``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from cryoscore import __version__
from cryoscore.errors import InputError
from cryoscore.io.coords import ParticleCoordinates, write_coordinates
from cryoscore.io.layout import write_json
from cryoscore.io.mrc import check_pixel_size, open_mrc_stack, read_mrc
from cryoscore.pick.blob import pick_blobs
from cryoscore.pick.template import DEFAULT_ANGULAR_STEP_DEG, pick_template
from cryoscore.simulate.ctf import CtfParams
from cryoscore.simulate.volume import load_specimen

logger = logging.getLogger(__name__)

PICKERS = ("blob", "template")
PICK_RECORD_NAME = "pick.json"


def _check_options(
    inputs: Sequence[Path],
    diameter_a: float,
    picker: str,
    reference: str | None,
    pixel_size_a: float | None,
    max_picks: int | None,
) -> None:
    """InputError for options that cannot work, before any file is read."""
    if picker not in PICKERS:
        raise InputError("--picker", f"unknown picker {picker!r}; choose one of {', '.join(PICKERS)}")
    if not diameter_a > 0:
        raise InputError("--diameter", f"particle diameter must be a positive number of Angstrom, got {diameter_a}")
    if pixel_size_a is not None:
        check_pixel_size("--pixel-size", pixel_size_a)
    if max_picks is not None and max_picks < 1:
        raise InputError("--max-picks", f"must be at least 1, got {max_picks}")
    if picker == "template" and reference is None:
        raise InputError("--reference", "template picking needs a reference: an MRC map or an atomic model")
    if not inputs:
        raise InputError("micrographs", "no input micrographs given")
    seen: dict[str, Path] = {}
    for path in inputs:
        if path.stem in seen:
            raise InputError(path, f"has the same name as {seen[path.stem]}; both would write {path.stem}.star")
        seen[path.stem] = path


def _check_micrograph(path: Path, pixel_size_a: float | None) -> float:
    """The pixel size (Angstrom) of ``path``, a readable 2D MRC image, else InputError; reads the header only."""
    with open_mrc_stack(path, pixel_size_a=pixel_size_a) as stack:
        if len(stack) != 1:
            raise InputError(path, f"expected a 2D micrograph but the file holds a stack of {len(stack)} sections")
        return stack.pixel_size_a


def pick_micrographs(
    inputs: Sequence[Path],
    output_dir: Path,
    diameter_a: float,
    *,
    picker: str = "blob",
    reference: str | None = None,
    ctf: CtfParams | None = None,
    pixel_size_a: float | None = None,
    angular_step_deg: float = DEFAULT_ANGULAR_STEP_DEG,
    max_picks: int | None = None,
    threshold: float | None = None,
    progress: bool = True,
) -> list[Path]:
    """Pick every micrograph in ``inputs`` and write ``output_dir/NAME.star`` and ``pick.json``.

    Parameters
    ----------
    inputs:
        2D MRC micrographs, particles darker than the background; distinct file stems.
    output_dir:
        Created if missing; outputs are written atomically.
    diameter_a:
        Particle diameter, Angstrom.
    picker:
        ``"blob"`` (:func:`~cryoscore.pick.blob.pick_blobs`, reference-free) or
        ``"template"`` (:func:`~cryoscore.pick.template.pick_template`).
    reference:
        Template picking only: an MRC map, an atomic model (PDB/mmCIF) or a built-in
        specimen name, loaded with :func:`~cryoscore.simulate.volume.load_specimen` at each
        micrograph's pixel size.
    ctf:
        Template picking only: the CTF applied to the templates, the same for every
        micrograph; None makes CTF-free templates, suited to phase-flipped micrographs and
        a low-resolution approximation for raw ones.
    pixel_size_a:
        Angstrom per pixel for every input; None reads each file's header.
    angular_step_deg:
        Template picking only: step of the orientation grid, degrees.
    max_picks, threshold:
        Passed to the picker: at most this many picks per micrograph; minimum score in
        robust noise standard deviations (None keeps every local maximum above 0).
    progress:
        Show a progress bar (on a terminal only).

    Returns
    -------
    The STAR files written, in the order of ``inputs``.

    Raises InputError (naming the file or option) for unusable options, an unreadable or
    non-2D MRC file, a file without a pixel size, a reference that cannot be loaded, or two
    inputs with the same stem. Every input is checked before anything is written.
    """
    inputs = [Path(path) for path in inputs]
    output_dir = Path(output_dir)
    _check_options(inputs, diameter_a, picker, reference, pixel_size_a, max_picks)
    pixel_sizes = {_check_micrograph(path, pixel_size_a) for path in inputs}
    references: dict[float, np.ndarray] = {}  # pixel size -> the reference sampled at it
    if picker == "template":  # loaded, and so checked, before anything is written
        references = {pixel_a: load_specimen(reference, pixel_a).volume_v for pixel_a in pixel_sizes}

    def pick(image: np.ndarray, pixel_a: float) -> ParticleCoordinates:
        if picker == "blob":
            return pick_blobs(image, pixel_a, diameter_a, max_picks=max_picks, threshold=threshold)
        return pick_template(
            image, pixel_a, diameter_a, references[pixel_a], ctf,
            angular_step_deg=angular_step_deg, max_picks=max_picks, threshold=threshold,
        )

    outputs, records = [], []
    # disable=None: a progress bar on a terminal only, never mixed into redirected output.
    for path in tqdm(inputs, desc="pick", unit="mic", disable=None if progress else True):
        image, pixel_a = read_mrc(path, pixel_size_a=pixel_size_a)
        coordinates = pick(image, pixel_a)
        output = output_dir / f"{path.stem}.star"
        write_coordinates(output, coordinates)
        outputs.append(output)
        records.append(
            {"input": str(path), "output": output.name, "pixel_size_a": pixel_a, "n_picks": len(coordinates)}
        )
        logger.info("%s: %d picks", path, len(coordinates))
    record: dict[str, Any] = {
        "cryoscore_version": __version__,
        "picker": picker,
        "diameter_a": diameter_a,
        "threshold": threshold,
        "max_picks": max_picks,
    }
    if picker == "template":
        record["reference"] = reference
        record["ctf"] = None if ctf is None else ctf.to_dict()
        record["angular_step_deg"] = angular_step_deg
    record["micrographs"] = records
    write_json(output_dir / PICK_RECORD_NAME, record)
    return outputs
