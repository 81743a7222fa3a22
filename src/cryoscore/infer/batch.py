"""Denoise many micrographs: in this process, on a local Dask cluster, or on an existing one.

One code path handles a micrograph wherever it runs (:func:`denoise_micrograph`): read,
denoise, write atomically, and return a :class:`JobRecord`. :func:`run_jobs` maps such a
job over the inputs, either in this process (one worker, no scheduler) or on a
``dask.distributed`` cluster: a :class:`~distributed.LocalCluster` of single-threaded worker
processes on the loopback interface, or the cluster behind ``--scheduler ADDRESS``.

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
of float32 round-off, on that thread count (:func:`run_jobs`).
"""

from __future__ import annotations

import contextlib
import functools
import glob
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from cryoscore.errors import InputError
from cryoscore.infer import DEFAULT_TILE_PX
from cryoscore.infer.sampler import SamplerConfig
from cryoscore.io.atomic import check_output_directory
from cryoscore.progress import progress as show_progress

STATUSES = ("ok", "skipped", "failed")


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


@dataclass(frozen=True)
class DenoiseJob:
    """One micrograph: its input file and the files it writes (``std_output`` only with ``write_std``)."""

    source: Path
    output: Path
    std_output: Path | None = None

    @property
    def outputs(self) -> tuple[Path, ...]:
        return (self.output,) if self.std_output is None else (self.std_output, self.output)


@dataclass(frozen=True)
class JobRecord:
    """What happened to one micrograph: ``status`` is ``ok``, ``skipped`` (already done) or
    ``failed``, with ``error`` the one-line reason; ``seconds`` is the wall time it took;
    ``details`` what the job wants to report beyond that (JSON-ready; e.g. a pick count)."""

    name: str
    status: str
    seconds: float
    error: str | None = None
    details: dict[str, Any] | None = None


def expand_inputs(inputs: Sequence[Path]) -> list[Path]:
    """Input micrographs: each path as given, a directory's ``*.mrc`` (sorted), or a quoted
    glob pattern's matches (sorted); InputError for a directory or pattern matching nothing."""
    expanded: list[Path] = []
    for path in inputs:
        if path.is_dir():
            found = sorted(path.glob("*.mrc"))
        elif not path.exists() and glob.has_magic(str(path)):
            found = sorted(Path(name) for name in glob.glob(str(path)))
        else:
            found = [path]
        if not found:
            raise InputError(path, "no .mrc files found")
        expanded.extend(found)
    return expanded


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


def remove_stale_parts(output: Path) -> None:
    """Delete temporary files a killed writer of ``output`` left: ``.STEM.XXXXXXXX.partSUFFIX``, the
    8 characters being :func:`tempfile.mkstemp`'s (see :func:`~cryoscore.io.atomic.atomic_path`)."""
    pattern = f".{glob.escape(output.stem)}.{'?' * 8}.part{glob.escape(output.suffix)}"
    for stale in output.parent.glob(pattern):
        stale.unlink(missing_ok=True)


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


MAX_PIXEL_MAGNITUDE = 1e30
"""Largest pixel magnitude a micrograph may have: the denoiser and the pickers sum over the image in
float32 (largest value 3.4e38), so a 4096 x 4096 micrograph (1.7e7 pixels) of values near 1e30 is
still summed without overflow. Real micrographs (counts, or normalised) are many decades below."""


def check_micrograph_data(source: Path, image: np.ndarray, *, min_px: int = 2, measure_noise: bool = False,
                          what: str = "") -> None:
    """InputError naming ``source`` for an image (H, W) that cannot be processed: smaller than
    ``min_px`` pixels on a side, with pixels beyond :data:`MAX_PIXEL_MAGNITUDE`, or, with
    ``measure_noise``, without pixel-to-pixel variation
    (constant over every 2 x 2 block, where neighbour sub-sampling measures no noise: a blank
    or upsampled image). ``what`` qualifies the image in the message (``" after --bin 2"``)."""
    rows, columns = image.shape
    if min(rows, columns) < min_px:
        raise InputError(source, f"the image is {rows} x {columns} pixels{what}; need at least {min_px} x {min_px}")
    magnitude = max(float(image.max()), -float(image.min()))
    if magnitude > MAX_PIXEL_MAGNITUDE:
        raise InputError(source, f"pixel values reach {magnitude:.3g}, more than {MAX_PIXEL_MAGNITUDE:.0e}: float32 "
                         "sums over the micrograph would overflow; rescale it (or is the MRC mode wrong?)")
    if not measure_noise:
        return
    cells = image[: rows - rows % 2, : columns - columns % 2].reshape(rows // 2, 2, columns // 2, 2)
    if not np.any(cells != cells[:, :1, :, :1]):
        if image.min() == image.max():
            raise InputError(source, f"every pixel is {image.flat[0]:g}{what}: a blank image has no noise to measure")
        raise InputError(source, f"no pixel-to-pixel noise{what} (every 2 x 2 block is constant: an upsampled "
                         "or synthetic image?); the model needs the noise to set its scale")


def _denoise_array(image: np.ndarray, pixel_size_a: float,
                   settings: DenoiseSettings) -> tuple[np.ndarray, np.ndarray | None]:
    """The denoised image (H, W) and, with a sampler, its per-pixel std map (H, W), input units.

    ``image`` is the micrograph after any binning; a pixel that averages b x b pixels has
    1/b^2 of their noise variance, as if it summed b^2 times the halves (``halves_in_image``).
    """
    from cryoscore.filters import lowpass_filter
    from cryoscore.infer.denoise import denoise_image, sample_image

    if settings.lowpass_a is not None:
        return lowpass_filter(image, pixel_size_a, settings.lowpass_a, kind=settings.lowpass_kind), None
    denoiser = cached_denoiser(settings.model, settings.device, settings.precision)
    halves = settings.halves * settings.bin_factor**2
    tiling = {"pixel_size_a": pixel_size_a, "halves_in_image": halves, "tile_px": settings.tile_px,
              "batch_size": settings.tile_batch}
    if settings.sampler is None:
        return denoise_image(denoiser, image, **tiling), None
    return sample_image(denoiser, image, settings.sampler, **tiling)


def set_torch_threads(threads: int | None) -> None:
    """Use ``threads`` torch intra-op threads in this process from now on; None leaves them as they are."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def denoise_micrograph(job: DenoiseJob, settings: DenoiseSettings, torch_threads: int | None = None) -> JobRecord:
    """Denoise one micrograph with ``torch_threads`` threads (:func:`set_torch_threads`) and write its
    outputs atomically, unless they are already complete. The process that runs it, this one or
    a Dask worker, keeps freed tensor memory for the next tile and the next micrograph
    (:mod:`cryoscore.allocator`, applied by the denoiser's forward passes).

    Returns a :class:`JobRecord`; an :class:`InputError` (unreadable input, NaN pixels, ...)
    becomes a ``failed`` record, other exceptions (bugs) propagate.
    """
    from cryoscore.filters import bin_image
    from cryoscore.io.mrc import read_mrc, write_mrc

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
        image, pixel_size_a = read_mrc(job.source, pixel_size_a=settings.pixel_size_a)
        image, pixel_size_a = bin_image(image, settings.bin_factor), pixel_size_a * settings.bin_factor
        check_micrograph_data(job.source, image, measure_noise=settings.lowpass_a is None,
                              what=f" after --bin {settings.bin_factor}" if settings.bin_factor > 1 else "")
        result, std = _denoise_array(image, pixel_size_a, settings)
        if job.std_output is not None:
            write_mrc(job.std_output, std, pixel_size_a, float16=settings.float16)
        write_mrc(job.output, result, pixel_size_a, float16=settings.float16)
    except InputError as error:
        return JobRecord(name, "failed", time.perf_counter() - start, str(error))
    return JobRecord(name, "ok", time.perf_counter() - start)


def _cluster_client(stack: contextlib.ExitStack, workers: int, scheduler: str | None):
    """A Dask client, closed with ``stack``: to ``scheduler``, or to a new LocalCluster of ``workers``
    single-threaded processes on the loopback interface (closed with ``stack`` too)."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        try:
            return stack.enter_context(Client(scheduler, timeout="20s"))
        except (OSError, TimeoutError) as error:
            raise InputError("--scheduler", f"cannot connect to {scheduler} ({error})") from None
    cluster = stack.enter_context(LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                               host="127.0.0.1", dashboard_address=None))
    return stack.enter_context(Client(cluster))


def _run_on_cluster(function: Callable[..., JobRecord], jobs: Sequence[Any], workers: int, scheduler: str | None,
                    torch_threads: int | None, **kwargs: Any) -> Iterator[tuple[int, JobRecord]]:
    """(index in ``jobs``, record) for each job, in the order they finish on the cluster."""
    from distributed import KilledWorker, as_completed

    with contextlib.ExitStack() as stack:
        client = _cluster_client(stack, workers, scheduler)
        futures = client.map(function, jobs, pure=False, torch_threads=torch_threads or 1, **kwargs)
        index = {future.key: number for number, future in enumerate(futures)}
        for future in as_completed(futures):
            number = index[future.key]
            try:
                record = future.result()
            except KilledWorker:
                source = jobs[number].source
                record = JobRecord(source.name, "failed", 0.0, f"{source}: the worker died (out of memory?)")
            future.release()
            yield number, record


READ_AHEAD_CHUNK_BYTES = 8 * 2**20
"""Bytes per read of the read-ahead thread (the buffer it reads into and discards)."""


def _read_through(path: Path) -> None:
    """Read ``path`` to its end and discard the bytes, leaving the file in the page cache;
    nothing when it cannot be read (the job itself reports an unreadable input)."""
    buffer = bytearray(READ_AHEAD_CHUNK_BYTES)
    try:
        with open(path, "rb", buffering=0) as file:
            while file.readinto(buffer):
                pass
    except OSError:
        pass


def read_ahead(path: Path) -> threading.Thread:
    """Start reading ``path`` into the operating system's page cache in a background thread,
    and return the thread; the job that reads the file later then finds it in memory.

    The thread holds the GIL only between reads, so it overlaps with torch's computation.
    (``posix_fadvise(WILLNEED)``, which asks the kernel to do the same, is capped at the
    device's read-ahead window: 8 MiB of a 64 MiB micrograph, measured on Linux 6.18.)
    """
    thread = threading.Thread(target=_read_through, args=(path,), name=f"read-ahead {path.name}", daemon=True)
    thread.start()
    return thread


def _reading_ahead(jobs: Sequence[Any]) -> Iterator[tuple[int, Any]]:
    """(index, job) for each job, having asked for the next job's input to be read ahead, so
    that reading it (from a network file system, say) overlaps with computing this one."""
    for number, job in enumerate(jobs):
        if number + 1 < len(jobs):
            read_ahead(jobs[number + 1].source)
        yield number, job


def run_jobs(function: Callable[..., JobRecord], jobs: Sequence[Any], *, workers: int | None = None,
             scheduler: str | None = None, torch_threads: int | None = None, progress: bool = True,
             desc: str = "denoise", report: Callable[[JobRecord], None] | None = None,
             **kwargs: Any) -> list[JobRecord]:
    """``function(job, torch_threads=T, **kwargs)`` for every job; returns the records in the order of ``jobs``.

    With neither ``workers`` nor ``scheduler`` the jobs run one after another in this
    process with T = ``torch_threads`` (None: torch's default, all cores), each next input
    read into the page cache by a background thread while the current job computes
    (:func:`read_ahead`). Otherwise they run on a Dask cluster (see :func:`_cluster_client`),
    each with T = ``torch_threads`` or 1: the parallelism comes from the workers, one
    micrograph per Dask thread. ``function``, the
    jobs (which have a ``source`` path) and ``kwargs`` must be importable and picklable for
    the cluster. ``report`` is called with each record as it arrives; ``desc`` labels the
    progress (a bar on a terminal, a line every 30 s elsewhere: :func:`cryoscore.progress.progress`).

    On the CPU the result of a job depends on T (oneDNN blocks its convolutions by thread
    count; float32 round-off differs), never on the number of workers: ``workers=1`` and
    ``workers=N`` give identical bits, and an in-process run with all cores differs from
    them only by round-off (about 1e-6 relative).
    """
    if workers is not None and workers < 1:
        raise InputError("--workers", f"must be >= 1, got {workers}")
    if torch_threads is not None and torch_threads < 1:
        raise InputError("--threads", f"must be >= 1, got {torch_threads}")
    if workers is None and scheduler is None:
        results: Iterable[tuple[int, JobRecord]] = (
            (number, function(job, torch_threads=torch_threads, **kwargs))
            for number, job in _reading_ahead(jobs))
    else:
        results = _run_on_cluster(function, jobs, workers or 1, scheduler, torch_threads, **kwargs)
    records: list[JobRecord | None] = [None] * len(jobs)
    for number, record in show_progress(results, total=len(jobs), desc=desc, unit="mic", enabled=progress):
        records[number] = record
        if report is not None:
            report(record)
    return records


def summary_line(records: Sequence[JobRecord], verb: str = "denoised") -> str:
    """``"denoised X, skipped Y (already done), failed Z"``."""
    counts = Counter(record.status for record in records)
    return f"{verb} {counts['ok']}, skipped {counts['skipped']} (already done), failed {counts['failed']}"


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
                        report: Callable[[JobRecord], None] | None = None) -> list[JobRecord]:
    """Denoise every input (files, directories of ``*.mrc``, glob patterns) into ``output_dir``.

    The model and the options are checked here, before any job starts (InputError); then
    :func:`run_jobs` runs :func:`denoise_micrograph` for each micrograph. Returns one record per
    micrograph, in input order.
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
    check_output_directory(output_dir)
    jobs = plan_denoise_jobs(expand_inputs(inputs), output_dir, write_std=settings.write_std)
    if scheduler is None:
        resolve_device(settings.device)
    if settings.lowpass_a is None:
        denoiser = cached_denoiser(settings.model, settings.device if scheduler is None else "cpu",
                                   settings.precision)
        check_tile(settings.tile_px, denoiser.model.net.receptive_field_px, denoiser.model.net.required_multiple)
        if settings.sampler is not None:
            denoiser.check_can_sample()
    return run_jobs(denoise_micrograph, jobs, workers=workers, scheduler=scheduler, torch_threads=torch_threads,
                    progress=progress, report=report, settings=settings)
