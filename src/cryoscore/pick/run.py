"""Pick particles on micrograph files and write one RELION coordinate file per micrograph.

::

    OUTDIR/NAME.star    rlnCoordinateX/Y and rlnAutopickFigureOfMerit, best first
    OUTDIR/pick.json    picker, its settings, pixel size and pick count per micrograph, versions,
                        the command line
    OUTDIR/picker.pt    the learned picker trained for this run (unless saved elsewhere), + picker.json

``NAME`` is the input file's stem, so ``micrographs/mic_0001.mrc`` gives ``mic_0001.star``.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from cryoscore.errors import InputError
from cryoscore.io.atomic import check_output_directory
from cryoscore.io.coords import read_coordinates, write_coordinates
from cryoscore.io.mrc import check_pixel_size, open_mrc_stack, read_mrc
from cryoscore.jobs import JobRecord, check_micrograph_data, job_entry, run_jobs, set_torch_threads, write_run_record
from cryoscore.pick.blob import pick_blobs
from cryoscore.pick.learned import LearnedPicker, load_picker, save_picker
from cryoscore.pick.learned_training import PickerTraining, train_picker
from cryoscore.pick.template import DEFAULT_ANGULAR_STEP_DEG, pick_template
from cryoscore.simulate.ctf import CtfParams
from cryoscore.simulate.volume import load_specimen

logger = logging.getLogger(__name__)

PICKERS = ("blob", "template", "learned")
PICK_RECORD_NAME = "pick.json"
#: Where a learned picker trained by :func:`pick_micrographs` goes when no other path is given.
TRAINED_PICKER_NAME = "picker.pt"
_COORDINATE_SUFFIXES = (".star", ".box", ".csv")


def _check_options(
    inputs: Sequence[Path],
    diameter_a: float | None,
    picker: str,
    reference: str | None,
    pixel_size_a: float | None,
    max_picks: int | None,
) -> None:
    """InputError for options that cannot work, before any file is read."""
    if picker not in PICKERS:
        raise InputError("--picker", f"unknown picker {picker!r}; choose one of {', '.join(PICKERS)}")
    if diameter_a is None:
        if picker != "learned":  # a learned picker reuses its model's
            raise InputError("--diameter", "give the particle diameter in Angstrom")
    elif not diameter_a > 0:
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


def _readable_pixel_sizes(inputs: Sequence[Path], pixel_size_a: float | None) -> set[float]:
    """The pixel sizes of the inputs whose headers can be read; the others fail in their own job."""
    pixel_sizes = set()
    for path in inputs:
        try:
            pixel_sizes.add(_check_micrograph(path, pixel_size_a))
        except InputError:
            continue
    return pixel_sizes


@dataclass(frozen=True)
class PickSettings:
    """How every micrograph of a run is picked; sent to each worker with each job (see
    :func:`pick_micrographs` for the meaning of each field)."""

    diameter_a: float
    picker: str = "blob"
    reference: str | None = None
    ctf: CtfParams | None = None
    pixel_size_a: float | None = None
    angular_step_deg: float = DEFAULT_ANGULAR_STEP_DEG
    max_picks: int | None = None
    threshold: float | None = None
    model: str | None = None
    device: str = "cpu"


@dataclass(frozen=True)
class PickJob:
    """One micrograph to pick and the STAR file it writes."""

    source: Path
    output: Path


@functools.lru_cache(maxsize=4)
def _reference_volume(reference: str, pixel_size_a: float) -> np.ndarray:
    """The template reference sampled at ``pixel_size_a``, loaded once per process and pixel size."""
    return load_specimen(reference, pixel_size_a).volume_v


@functools.lru_cache(maxsize=2)
def _learned_picker(model: str, device: str) -> LearnedPicker:
    """The picker saved at ``model``, loaded once per process and device."""
    return load_picker(model, device)


def coordinate_file(directory: Path, stem: str) -> Path:
    """``directory/stem.star`` (or ``.box``, ``.csv``, first found); InputError naming the micrograph if none."""
    for suffix in _COORDINATE_SUFFIXES:
        candidate = directory / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    raise InputError(directory, f"no coordinate file {stem}.star, {stem}.box or {stem}.csv for micrograph {stem}")


def train_picker_from_files(
    micrographs: Sequence[Path],
    coordinates_dir: Path,
    diameter_a: float,
    *,
    pixel_size_a: float | None = None,
    training: PickerTraining = PickerTraining(),
    device: str = "cpu",
) -> LearnedPicker:
    """Train a learned picker on MRC micrographs annotated by the coordinate files of ``coordinates_dir``.

    Each micrograph ``NAME.mrc`` needs ``coordinates_dir/NAME.star`` (RELION), ``NAME.box``
    (EMAN) or ``NAME.csv`` (x, y columns), in its pixels. ``pixel_size_a`` None reads each
    header. Raises InputError, naming the file, for a missing or unreadable micrograph or
    coordinate file, or when no micrograph has an annotated particle.
    """
    if not micrographs:
        raise InputError("--train-micrographs", "no training micrographs given")
    if not coordinates_dir.is_dir():
        raise InputError(coordinates_dir, "coordinate directory not found")
    files = [(path, coordinate_file(coordinates_dir, path.stem)) for path in micrographs]  # all checked first
    images, coordinates, pixel_sizes = [], [], []
    for path, coordinates_path in files:
        _check_micrograph(path, pixel_size_a)
        image, pixel_a = read_mrc(path, pixel_size_a=pixel_size_a)
        images.append(image)
        coordinates.append(read_coordinates(coordinates_path))
        pixel_sizes.append(pixel_a)
    if not any(len(found) for found in coordinates):
        raise InputError(coordinates_dir, "the training coordinate files hold no particle")
    return train_picker(images, coordinates, pixel_sizes, diameter_a, training=training,
                        names=[path.stem for path in micrographs], device=device)


def pick_micrograph(job: PickJob, settings: PickSettings, torch_threads: int | None = None) -> JobRecord:
    """Pick one micrograph and write its STAR file atomically; the record's details hold the
    pixel size and the pick count. An InputError (a file that cannot be read, is not a 2D
    image, or is smaller than one particle) becomes a ``failed`` record, as in
    :func:`cryoscore.infer.batch.denoise_micrograph`; the other micrographs go on."""
    set_torch_threads(torch_threads)
    start = time.perf_counter()
    try:
        coordinates, pixel_a = _pick_one(job, settings)
    except InputError as error:
        return JobRecord(job.source.name, "failed", time.perf_counter() - start, str(error))
    logger.info("%s: %d picks", job.source, len(coordinates))
    return JobRecord(job.source.name, "ok", time.perf_counter() - start,
                     details={"pixel_size_a": pixel_a, "n_picks": len(coordinates)})


def _pick_one(job: PickJob, settings: PickSettings) -> tuple[Any, float]:
    """Read, check, pick and write one micrograph; (its picks, its pixel size)."""
    _check_micrograph(job.source, settings.pixel_size_a)
    image, pixel_a = read_mrc(job.source, pixel_size_a=settings.pixel_size_a)
    diameter_px = settings.diameter_a / pixel_a
    check_micrograph_data(job.source, image, min_px=max(2, math.ceil(diameter_px)),
                          what=f" (a {settings.diameter_a:g} A particle is {diameter_px:.0f} pixels across)")
    if settings.picker == "blob":
        coordinates = pick_blobs(image, pixel_a, settings.diameter_a, max_picks=settings.max_picks,
                                 threshold=settings.threshold)
    elif settings.picker == "learned":
        coordinates = _learned_picker(settings.model, settings.device).pick(
            image, pixel_a, threshold=settings.threshold, max_picks=settings.max_picks)
    else:
        coordinates = pick_template(
            image, pixel_a, settings.diameter_a, _reference_volume(settings.reference, pixel_a), settings.ctf,
            angular_step_deg=settings.angular_step_deg, max_picks=settings.max_picks, threshold=settings.threshold,
        )
    write_coordinates(job.output, coordinates)
    return coordinates, pixel_a


def _prepare_learned_picker(
    output_dir: Path,
    diameter_a: float | None,
    model: Path | None,
    train_micrographs: Sequence[Path] | None,
    train_coordinates: Path | None,
    save_model: Path | None,
    pixel_size_a: float | None,
    training: PickerTraining,
    device: str,
) -> tuple[Path, LearnedPicker]:
    """The learned picker's file and the picker: loaded from ``model``, or trained and saved
    (to ``save_model``, else ``output_dir/picker.pt``). InputError for conflicting options."""
    if model is not None:
        if train_micrographs or train_coordinates is not None or save_model is not None:
            raise InputError("--model", "give a trained picker or training data (--train-micrographs, "
                                        "--train-coordinates, --save-model), not both")
        loaded = load_picker(model, device)
        if diameter_a is not None and not math.isclose(diameter_a, loaded.diameter_a, rel_tol=1e-6):
            raise InputError(model, f"was trained for {loaded.diameter_a:g} A particles, not the {diameter_a:g} A "
                                    "given with --diameter")
        return model, loaded
    if not train_micrographs or train_coordinates is None:
        raise InputError("--picker learned", "needs --model PICKER.pt, or --train-micrographs and "
                                             "--train-coordinates to train one")
    if diameter_a is None or not diameter_a > 0:
        raise InputError("--diameter", "training a picker needs the particle diameter in Angstrom (> 0)")
    destination = save_model if save_model is not None else output_dir / TRAINED_PICKER_NAME
    if destination.suffix != ".pt":
        raise InputError(destination, "picker file name must end in .pt")
    trained = train_picker_from_files([Path(path) for path in train_micrographs], train_coordinates, diameter_a,
                                      pixel_size_a=pixel_size_a, training=training, device=device)
    save_picker(destination, trained)
    return destination, trained


def pick_micrographs(
    inputs: Sequence[Path],
    output_dir: Path,
    diameter_a: float | None,
    *,
    picker: str = "blob",
    reference: str | None = None,
    ctf: CtfParams | None = None,
    pixel_size_a: float | None = None,
    angular_step_deg: float = DEFAULT_ANGULAR_STEP_DEG,
    max_picks: int | None = None,
    threshold: float | None = None,
    progress: bool = True,
    workers: int | None = None,
    scheduler: str | None = None,
    torch_threads: int | None = None,
    report: Callable[[JobRecord], None] | None = None,
    model: Path | None = None,
    train_micrographs: Sequence[Path] | None = None,
    train_coordinates: Path | None = None,
    save_model: Path | None = None,
    training: PickerTraining = PickerTraining(),
    device: str = "cpu",
    command_line: Sequence[str] | None = None,
) -> list[JobRecord]:
    """Pick every micrograph in ``inputs`` and write ``output_dir/NAME.star`` and ``pick.json``.

    Parameters
    ----------
    inputs:
        2D MRC micrographs, particles darker than the background; distinct file stems.
    output_dir:
        Created if missing; outputs are written atomically.
    diameter_a:
        Particle diameter, Angstrom; for the learned picker with a ``model``, None takes
        the model's (and any other value is an error).
    picker:
        ``"blob"`` (:func:`~cryoscore.pick.blob.pick_blobs`, reference-free),
        ``"template"`` (:func:`~cryoscore.pick.template.pick_template`) or ``"learned"``
        (:mod:`cryoscore.pick.learned`, a trained network).
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
        robust noise standard deviations, or logit for the learned picker (None keeps
        every local maximum: above 0 for blob and template, all for the learned picker).
    progress:
        Show a progress bar (on a terminal only).
    workers, scheduler, torch_threads:
        Where the micrographs are picked, as for ``cryoscore denoise``
        (:func:`cryoscore.jobs.run_jobs`): in this process by default, on a local
        Dask cluster of ``workers`` processes, or on the cluster at ``scheduler``.
    report:
        Called with each micrograph's record as it arrives (e.g. to print failures at once).
    model:
        Learned picker only: a picker file from an earlier run (``--save-model``) to reuse.
    train_micrographs, train_coordinates, training:
        Learned picker only, instead of ``model``: MRC micrographs and the directory of
        their coordinate files (``NAME.star``, ``.box`` or ``.csv``), and how to train
        (:class:`~cryoscore.pick.learned_training.PickerTraining`). Training runs in this process.
    save_model:
        Where the trained picker is saved (``.pt`` plus a ``.json`` sidecar); default
        ``output_dir/picker.pt``.
    device:
        Learned picker only: ``"cpu"`` or ``"cuda"``.
    command_line:
        The command that asked for the run, recorded in ``pick.json`` (None: a call from Python).

    Returns
    -------
    One :class:`~cryoscore.jobs.JobRecord` per input, in the order of ``inputs``:
    ``ok`` (its STAR file written) or ``failed`` with the reason, as ``cryoscore denoise``
    does. ``pick.json`` (:func:`~cryoscore.jobs.write_run_record`) records the versions, the
    command line and the picker's settings, and lists every input with its ``status`` (and
    ``error`` where it failed).

    Raises InputError (naming the file or option), before anything is written, for unusable
    options, an output directory that cannot be created, a reference that cannot be loaded,
    or two inputs with the same stem. A micrograph that cannot be used (unreadable, not 2D,
    no pixel size, smaller than a particle) fails on its own and the others go on.
    """
    inputs = [Path(path) for path in inputs]
    output_dir = check_output_directory(output_dir)
    _check_options(inputs, diameter_a, picker, reference, pixel_size_a, max_picks)
    if picker == "template":  # loaded, and so checked, before anything is written
        for pixel_a in _readable_pixel_sizes(inputs, pixel_size_a):
            _reference_volume(reference, pixel_a)
    learned_record: dict[str, Any] = {}
    if picker == "learned":
        model_path, learned = _prepare_learned_picker(output_dir, diameter_a, model, train_micrographs,
                                                      train_coordinates, save_model, pixel_size_a, training, device)
        diameter_a = learned.diameter_a
        learned_record = {"model": str(model_path), "device": device, "model_record": learned.record}
    assert diameter_a is not None, "_check_options requires it unless a learned picker brings its own"
    settings = PickSettings(diameter_a, picker, reference, ctf, pixel_size_a, angular_step_deg, max_picks, threshold,
                            str(learned_record["model"]) if learned_record else None, device)
    jobs = [PickJob(path, output_dir / f"{path.stem}.star") for path in inputs]
    results = run_jobs(pick_micrograph, jobs, workers=workers, scheduler=scheduler, torch_threads=torch_threads,
                       progress=progress, desc="pick", report=report, settings=settings)
    record: dict[str, Any] = {
        "picker": picker,
        "diameter_a": diameter_a,
        "threshold": threshold,
        "max_picks": max_picks,
    }
    if picker == "template":
        record["reference"] = reference
        record["ctf"] = None if ctf is None else ctf.to_dict()
        record["angular_step_deg"] = angular_step_deg
    record.update(learned_record)
    record["micrographs"] = [job_entry(job.source, job.output, result) for job, result in zip(jobs, results)]
    write_run_record(output_dir / PICK_RECORD_NAME, record, command_line)
    return results
