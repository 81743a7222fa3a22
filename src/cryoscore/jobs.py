"""Run a stage over many micrographs: in this process, on a local Dask cluster, or on an existing one.

A job is a picklable function ``function(job, torch_threads=T, **settings) -> JobRecord``
that handles one input wherever it runs (:func:`cryoscore.infer.batch.denoise_micrograph`,
:func:`cryoscore.pick.run.pick_micrograph`). :func:`run_jobs` maps it over the inputs,
either in this process (one worker, no scheduler; the next input read ahead into the page
cache) or on a ``dask.distributed`` cluster: a :class:`~distributed.LocalCluster` of
single-threaded worker processes on the loopback interface, or the cluster behind
``--scheduler ADDRESS``. A job that fails with an :class:`~cryoscore.errors.InputError` (a
corrupt input, say), or whose worker dies, is recorded as failed and the others go on.
Also here: what every stage needs to take its inputs (:func:`expand_inputs`,
:func:`check_micrograph_data`), to resume after a kill (:func:`remove_stale_parts`) and to
leave a run record in its output folder (:func:`write_run_record`: versions, time, command
line, settings and one entry per micrograph).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import glob
import importlib.metadata
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from cryoscore import __version__
from cryoscore.errors import InputError
from cryoscore.io.layout import write_json
from cryoscore.progress import progress as show_progress


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


def remove_stale_parts(output: Path) -> None:
    """Delete temporary files a killed writer of ``output`` left: ``.STEM.XXXXXXXX.partSUFFIX``, the
    8 characters being :func:`tempfile.mkstemp`'s (see :func:`~cryoscore.io.atomic.atomic_path`)."""
    pattern = f".{glob.escape(output.stem)}.{'?' * 8}.part{glob.escape(output.suffix)}"
    for stale in output.parent.glob(pattern):
        stale.unlink(missing_ok=True)


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


def set_torch_threads(threads: int | None) -> None:
    """Use ``threads`` torch intra-op threads in this process from now on; None leaves them as they are."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


PARENT_POLL_S = 1.0
"""Seconds between a pool worker's checks that the process which started it is still alive."""


def _exit_when_orphaned(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_S)
    os._exit(1)


def start_pool_worker(threads: int, parent_pid: int) -> None:
    """Initializer of a single-purpose worker process started by ``parent_pid``: use ``threads``
    torch threads (:func:`set_torch_threads`), and exit within :data:`PARENT_POLL_S` seconds of
    that parent's death. A ``ProcessPoolExecutor`` worker otherwise outlives a parent killed by
    SIGTERM until its current job ends (minutes of a picker's training on every core), since
    only a signal to the whole process group (Ctrl-C) reaches it too."""
    set_torch_threads(threads)
    threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), name="exit with parent", daemon=True).start()


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
    records: dict[int, JobRecord] = {}
    for number, record in show_progress(results, total=len(jobs), desc=desc, unit="mic", enabled=progress):
        records[number] = record
        if report is not None:
            report(record)
    return [records[number] for number in range(len(jobs))]


def summary_line(records: Sequence[JobRecord], verb: str = "denoised") -> str:
    """``"denoised X, skipped Y (already done), failed Z"``."""
    counts = Counter(record.status for record in records)
    return f"{verb} {counts['ok']}, skipped {counts['skipped']} (already done), failed {counts['failed']}"


def job_entry(source: Path, output: Path, record: JobRecord) -> dict[str, Any]:
    """One input's entry in a run record: its path, the output's file name, the job's status and
    seconds, and its details (a failed job's worker may have died before reporting any) or error."""
    entry: dict[str, Any] = {"input": str(source), "output": output.name, "status": record.status,
                             "seconds": round(record.seconds, 3)}
    if record.status == "failed":
        return {**entry, "error": record.error}
    return {**entry, **(record.details or {})}


def write_run_record(path: Path, content: dict[str, Any], command_line: Sequence[str] | None) -> None:
    """Write a stage's run record to ``path`` (JSON, atomically): cryoscore's and torch's versions,
    the UTC time, ``command_line`` (None when the stage was called from Python) and then
    ``content``, whose dataclass values (settings objects) are written as dicts (``dataclasses.asdict``)."""
    header = {"cryoscore_version": __version__, "torch_version": importlib.metadata.version("torch"),
              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command_line": None if command_line is None else list(command_line)}
    body = {key: dataclasses.asdict(value) if dataclasses.is_dataclass(value) and not isinstance(value, type) else value
            for key, value in content.items()}
    write_json(path, {**header, **body})
