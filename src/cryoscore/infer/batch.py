"""Denoise many micrographs: one job per micrograph, run by :func:`cryoscore.jobs.run_jobs`.

One code path handles a micrograph wherever it runs (:func:`denoise_micrograph`): read,
denoise, write atomically, and return a :class:`~cryoscore.jobs.JobRecord`; the job runner
runs it in this process, on a local Dask cluster or on an existing one.

The run is resumable and failure-tolerant:

* outputs are written atomically (:func:`cryoscore.io.atomic.atomic_path`), so a killed run
  leaves complete outputs and at most stray hidden ``.NAME.*.part.mrc`` files, which the
  next run deletes;
* a micrograph whose outputs exist and read back as valid MRC images of its shape is
  skipped (``overwrite`` recomputes it);
* a micrograph that fails with an :class:`~cryoscore.errors.InputError` (a corrupt input,
  say), or whose worker dies, is recorded as failed and the others go on.

Results do not depend on the number of workers: each micrograph is computed by the same
deterministic function, whichever process runs it, with one torch thread per micrograph on
a cluster unless ``torch_threads`` says otherwise. On the CPU they do depend, at the level
of float32 round-off, on that thread count (:func:`~cryoscore.jobs.run_jobs`).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from cryoscore.errors import InputError
from cryoscore.infer import DEFAULT_TILE_PX
from cryoscore.infer.sampler import SamplerConfig
from cryoscore.io.atomic import check_output_directory
from cryoscore.jobs import (
    JobRecord,
    check_micrograph_data,
    expand_inputs,
    job_entry,
    remove_stale_parts,
    run_jobs,
    set_torch_threads,
    write_run_record,
)

if TYPE_CHECKING:
    from cryoscore.infer.denoise import TrainedDenoiser

DENOISE_RECORD_NAME = "denoise.json"
"""The run record written into the output folder (:func:`denoise_micrographs`)."""


@dataclass(frozen=True)
class DenoiseSettings:
    """How every micrograph of a run is denoised; sent to each worker with each job.

    Attributes
    ----------
    model:
        Model file from ``cryoscore train``; None for the shipped default model.
    lowpass_a:
        Low-pass at this resolution (Angstrom) instead of a model; None to use the model.
    lowpass_kind:
        ``"gaussian"`` or ``"butterworth"``.
    halves:
        Frame halves an input holds: 2 for full sums, 1 for even/odd sums.
    pixel_size_a:
        Angstrom per pixel, overriding the headers; None reads them.
    tile_px:
        Tile edge for inference, pixels.
    sampler:
        None for the one-step estimate, else the stochastic sampler's settings.
    write_std:
        Also write ``NAME_std.mrc``, the samples' per-pixel standard deviation.
    float16:
        Write mode-12 (float16) MRC instead of float32.
    device:
        ``"cpu"`` or ``"cuda"``; None picks CUDA where the worker has it.
    overwrite:
        Recompute micrographs whose outputs are already complete.
    precision:
        Forward-pass arithmetic, ``"fp32"``, ``"bf16"`` or ``"fp16"``; None: bf16 on a GPU,
        fp32 on the CPU.
    tile_batch:
        Tiles per forward pass (more fill a GPU better; 1 is best on a CPU).
    bin_factor:
        Block-average each micrograph over ``bin_factor`` x ``bin_factor`` pixels before
        denoising (speed over detail: ``bin_factor``^2 fewer pixels to denoise); the
        output has that many times the pixel size.
    flatten_lowpass_a:
        Write the micrograph minus the model's estimate of its background, low-passed at this
        resolution (Angstrom; :func:`~cryoscore.infer.denoise.flatten_image`) instead of the
        estimate itself; None writes the estimate.
    auto_flatten_diameter_a:
        With a particle diameter (Angstrom) and ``flatten_lowpass_a``: flatten only if the model's estimate
        of these micrographs is mostly its background at the particles' scales, else write the estimate;
        one choice for the run, made on a sample of them (:func:`choose_flatten`, ``--flatten auto``).
    """

    model: str | None = None
    lowpass_a: float | None = None
    lowpass_kind: str = "gaussian"
    halves: int = 2
    pixel_size_a: float | None = None
    tile_px: int = DEFAULT_TILE_PX
    sampler: SamplerConfig | None = None
    write_std: bool = False
    float16: bool = False
    device: str | None = None
    overwrite: bool = False
    precision: str | None = None
    tile_batch: int = 1
    bin_factor: int = 1
    flatten_lowpass_a: float | None = None
    auto_flatten_diameter_a: float | None = None


@dataclass(frozen=True)
class DenoiseJob:
    """One micrograph: its input file and the files it writes (``std_output`` only with ``write_std``)."""

    source: Path
    output: Path
    std_output: Path | None = None

    @property
    def outputs(self) -> tuple[Path, ...]:
        return (self.output,) if self.std_output is None else (self.std_output, self.output)


def plan_denoise_jobs(inputs: Sequence[Path], output_dir: Path, *, write_std: bool) -> list[DenoiseJob]:
    """One job per input, writing ``output_dir/NAME.mrc`` (and ``NAME_std.mrc``); InputError when an
    output would overwrite its input or two outputs would share a name."""
    jobs = []
    for path in inputs:
        output = output_dir / path.name
        if output.resolve() == path.resolve():
            raise InputError(output, "output would overwrite its input; choose another -o")
        std_output = output.with_name(f"{output.stem}_std{output.suffix}") if write_std else None
        jobs.append(DenoiseJob(path, output, std_output))
    written = [output for job in jobs for output in job.outputs]
    if len(set(written)) != len(written):
        raise InputError(output_dir, "two outputs would have the same file name (inputs named alike, or NAME_std.mrc)")
    return jobs


@functools.lru_cache(maxsize=1)
def cached_denoiser(model: str | None, device: str | None, precision: str | None = None):
    """The :class:`~cryoscore.infer.denoise.TrainedDenoiser` for ``model`` on ``device`` at
    ``precision``, loaded once per process (each worker keeps the last one it loaded)."""
    from cryoscore.infer.denoise import load_denoiser, resolve_device

    return load_denoiser(model, resolve_device(device), precision)


def is_complete(output: Path, shape: tuple[int, int]) -> bool:
    """Whether ``output`` is a readable, finite 2D MRC image of ``shape`` (rows, columns)."""
    from cryoscore.io.mrc import read_mrc

    if not output.is_file():
        return False
    try:
        return read_mrc(output)[0].shape == shape
    except InputError:
        return False


def _input_shape(source: Path, pixel_size_a: float | None) -> tuple[int, int]:
    """(H, W) of a 2D MRC micrograph, from its header; InputError for anything else."""
    from cryoscore.io.mrc import open_mrc_stack

    with open_mrc_stack(source, pixel_size_a=pixel_size_a) as stack:
        if len(stack) != 1:
            raise InputError(source, f"expected a 2D micrograph but the file holds a stack of {len(stack)} sections")
        return stack.shape[1:]


def _model_options(pixel_size_a: float, settings: DenoiseSettings) -> dict[str, Any]:
    """The keyword arguments of :mod:`cryoscore.infer.denoise`'s functions for an image at ``pixel_size_a``
    (after any binning: a pixel that averages b x b pixels has 1/b^2 of their noise variance, as if it
    summed b^2 times the halves)."""
    return {"pixel_size_a": pixel_size_a, "halves_in_image": settings.halves * settings.bin_factor**2,
            "tile_px": settings.tile_px, "batch_size": settings.tile_batch}


def _denoise_array(image: np.ndarray, pixel_size_a: float,
                   settings: DenoiseSettings) -> tuple[np.ndarray, np.ndarray | None]:
    """The denoised image (H, W) and, with a sampler, its per-pixel std map (H, W), input units.
    ``image`` is the micrograph after any binning."""
    from cryoscore.filters import lowpass_filter
    from cryoscore.infer.denoise import denoise_image, flatten_image, sample_image

    if settings.lowpass_a is not None:
        return lowpass_filter(image, pixel_size_a, settings.lowpass_a, kind=settings.lowpass_kind), None
    denoiser = cached_denoiser(settings.model, settings.device, settings.precision)
    options = _model_options(pixel_size_a, settings)
    if settings.flatten_lowpass_a is not None:
        return flatten_image(denoiser, image, lowpass_a=settings.flatten_lowpass_a, **options), None
    if settings.sampler is None:
        return denoise_image(denoiser, image, **options), None
    return sample_image(denoiser, image, settings.sampler, **options)


def _read_binned(source: Path, settings: DenoiseSettings) -> tuple[np.ndarray, float]:
    """The micrograph in ``source`` after ``--bin`` and its pixel size (Angstrom); InputError when it cannot
    be read or holds no usable data."""
    from cryoscore.filters import bin_image
    from cryoscore.io.mrc import read_mrc

    image, pixel_size_a = read_mrc(source, pixel_size_a=settings.pixel_size_a)
    image, pixel_size_a = bin_image(image, settings.bin_factor), pixel_size_a * settings.bin_factor
    check_micrograph_data(source, image, measure_noise=settings.lowpass_a is None,
                          what=f" after --bin {settings.bin_factor}" if settings.bin_factor > 1 else "")
    return image, pixel_size_a


AUTO_FLATTEN_SAMPLE = 5
"""How many micrographs of a run, spread over its inputs, ``--flatten auto`` measures before choosing."""


def choose_flatten(jobs: Sequence[DenoiseJob], settings: DenoiseSettings,
                   denoiser: TrainedDenoiser) -> tuple[DenoiseSettings, dict[str, Any]]:
    """``--flatten auto``: the settings with the choice made (``flatten_lowpass_a`` kept or set to None,
    ``auto_flatten_diameter_a`` None), and what it was made on, for the run record.

    Measures :func:`~cryoscore.infer.denoise.background_strength` on up to :data:`AUTO_FLATTEN_SAMPLE`
    micrographs spread over ``jobs`` (those that cannot be read are left to fail in their own job) and
    flattens when :func:`~cryoscore.infer.denoise.should_flatten` says so; none readable, no flattening.
    """
    from cryoscore.infer.denoise import background_strength, should_flatten

    assert settings.auto_flatten_diameter_a is not None, "choose_flatten is for --flatten auto"
    spread = np.linspace(0, len(jobs) - 1, min(AUTO_FLATTEN_SAMPLE, len(jobs))).round().astype(int)
    strengths = {}
    for job in (jobs[i] for i in sorted(set(spread))):
        try:
            image, pixel_size_a = _read_binned(job.source, settings)
        except InputError:
            continue
        strengths[job.source.name] = round(background_strength(
            denoiser, image, diameter_a=settings.auto_flatten_diameter_a, **_model_options(pixel_size_a, settings)), 4)
    flatten = bool(strengths) and should_flatten(list(strengths.values()))
    chosen = replace(settings, auto_flatten_diameter_a=None,
                     flatten_lowpass_a=settings.flatten_lowpass_a if flatten else None)
    return chosen, {"diameter_a": settings.auto_flatten_diameter_a, "background_strengths": strengths,
                    "flattened": flatten}


def denoise_micrograph(job: DenoiseJob, settings: DenoiseSettings, torch_threads: int | None = None) -> JobRecord:
    """Denoise one micrograph with ``torch_threads`` threads (:func:`set_torch_threads`) and write its
    outputs atomically, unless they are already complete. The process that runs it, this one or
    a Dask worker, keeps freed tensor memory for the next tile and the next micrograph
    (:mod:`cryoscore.allocator`, applied by the denoiser's forward passes).

    Returns a :class:`JobRecord`; an :class:`InputError` (unreadable input, NaN pixels, ...)
    becomes a ``failed`` record, other exceptions (bugs) propagate.
    """
    from cryoscore.io.mrc import write_mrc

    set_torch_threads(torch_threads)
    start = time.perf_counter()
    name = job.source.name
    try:
        for output in job.outputs:
            remove_stale_parts(output)
        rows, columns = _input_shape(job.source, settings.pixel_size_a)
        shape = (rows // settings.bin_factor, columns // settings.bin_factor)
        if not settings.overwrite and all(is_complete(output, shape) for output in job.outputs):
            return JobRecord(name, "skipped", time.perf_counter() - start)
        image, pixel_size_a = _read_binned(job.source, settings)
        result, std = _denoise_array(image, pixel_size_a, settings)
        if job.std_output is not None:
            assert std is not None, "a std map is written only with a sampler, which makes one"
            write_mrc(job.std_output, std, pixel_size_a, float16=settings.float16)
        write_mrc(job.output, result, pixel_size_a, float16=settings.float16)
    except InputError as error:
        return JobRecord(name, "failed", time.perf_counter() - start, str(error))
    return JobRecord(name, "ok", time.perf_counter() - start)


def minimum_tile_px(halo_px: int, multiple: int) -> int:
    """The smallest ``--tile`` accepted: the halo (the network's receptive-field radius) rounded up to
    the network's size multiple. Each tile is computed with ``halo_px`` of context on every side, so a
    tile of this size already costs about 9 times its own area; a 10 px tile with a 243 px halo would
    cost about 2500 times."""
    return -(-halo_px // multiple) * multiple


def check_tile(tile_px: int, halo_px: int, multiple: int) -> None:
    """InputError for a tile edge so small that the halo around each tile makes the run take for ever."""
    smallest = minimum_tile_px(halo_px, multiple)
    if tile_px < smallest:
        overhead = ((tile_px + 2 * halo_px) / tile_px) ** 2
        raise InputError("--tile", f"{tile_px} px tiles each need {halo_px} px of context on every side "
                         f"(about {overhead:.0f} times the work); use --tile {smallest} or more")


def denoise_micrographs(inputs: Sequence[Path], output_dir: Path, settings: DenoiseSettings, *, workers: int | None = None,
                        scheduler: str | None = None, torch_threads: int | None = None, progress: bool = True,
                        report: Callable[[JobRecord], None] | None = None,
                        command_line: Sequence[str] | None = None) -> list[JobRecord]:
    """Denoise every input (files, directories of ``*.mrc``, glob patterns) into ``output_dir``.

    The model and the options are checked here, before any job starts (InputError); then
    :func:`run_jobs` runs :func:`denoise_micrograph` for each micrograph. Returns one record per
    micrograph, in input order, and writes them to ``output_dir/denoise.json`` with the
    settings, the model used and ``command_line`` (:func:`~cryoscore.jobs.write_run_record`).
    """
    from cryoscore.infer.denoise import resolve_device

    if settings.model is not None and settings.lowpass_a is not None:
        raise InputError("options", "give --model MODEL or --lowpass A, not both")
    if settings.tile_px < 1:
        raise InputError("--tile", "must be >= 1 pixel")
    if settings.tile_batch < 1:
        raise InputError("--tile-batch", f"must be >= 1, got {settings.tile_batch}")
    if settings.bin_factor < 1:
        raise InputError("--bin", f"must be >= 1, got {settings.bin_factor}")
    if settings.lowpass_a is not None and settings.sampler is not None:
        raise InputError("--lowpass", "the low-pass baseline has no sampler or uncertainty")
    if settings.flatten_lowpass_a is not None and (settings.lowpass_a is not None or settings.sampler is not None):
        raise InputError("--flatten", "subtracts a model's background estimate; it does not go with --lowpass, "
                         "--sampler sde or --uncertainty")
    if settings.auto_flatten_diameter_a is not None and settings.flatten_lowpass_a is None:
        raise InputError("--diameter", "is used only by --flatten auto")
    check_output_directory(output_dir)
    jobs = plan_denoise_jobs(expand_inputs(inputs), output_dir, write_std=settings.write_std)
    if scheduler is None:
        resolve_device(settings.device)
    if settings.lowpass_a is not None:
        model = f"low-pass {settings.lowpass_a:g} A ({settings.lowpass_kind})"
    else:
        denoiser = cached_denoiser(settings.model, settings.device if scheduler is None else "cpu",
                                   settings.precision)
        check_tile(settings.tile_px, denoiser.model.net.receptive_field_px, denoiser.model.net.required_multiple)
        if settings.sampler is not None:
            denoiser.check_can_sample()
        model = denoiser.source
    chosen: dict[str, Any] = {}
    if settings.auto_flatten_diameter_a is not None:
        settings, chosen["flatten_auto"] = choose_flatten(jobs, settings, denoiser)
    records = run_jobs(denoise_micrograph, jobs, workers=workers, scheduler=scheduler, torch_threads=torch_threads,
                       progress=progress, report=report, settings=settings)
    write_run_record(output_dir / DENOISE_RECORD_NAME,
                     {"denoiser": model, "settings": settings, **chosen,
                      "micrographs": [job_entry(job.source, job.output, record) for job, record in zip(jobs, records)]},
                     command_line)
    return records
