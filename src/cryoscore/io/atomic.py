"""Atomic file writes: write to a temporary file beside the target, then rename.

A reader never sees a half-written output, and a crash leaves at most a stray
temporary file whose name starts with ``.`` and ends with ``.part``. The output gets the
permissions a plainly created file would (0666 less the umask), not the owner-only 0600 of
the temporary file, so that colleagues and processing accounts can read it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from pathlib import Path
from typing import Iterator

from cryoscore.errors import InputError


def _umask_from_proc() -> int | None:
    """This process's umask as Linux reports it (``Umask:`` in /proc/self/status, since Linux 4.7);
    None where that line is not available."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


@functools.lru_cache(maxsize=1)
def _umask_by_setting_it() -> int:
    """The umask read the only portable way, by setting it and back; done once per process, since
    another thread creating a file in between would get the temporary umask."""
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _creation_mode() -> int:
    """0666 less this process's umask: the mode ``open(..., "w")`` gives a new file.

    The umask is read without changing it (:func:`_umask_from_proc`), so read-ahead and Dask
    threads creating files meanwhile are not affected; elsewhere it is set and restored once.
    """
    umask = _umask_from_proc()
    if umask is None:
        umask = _umask_by_setting_it()
    return 0o666 & ~umask


def check_output_directory(path: str | os.PathLike) -> Path:
    """``path`` as a Path, after checking that it is or can become a directory this process writes in.

    Checks, without creating anything, that ``path`` is not an existing non-directory and that
    its nearest existing ancestor is a writable directory (so ``-o afile/sub``, with ``afile`` a
    regular file, is refused before any work). Raises :class:`InputError` naming ``path``.
    """
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise InputError(path, "output path exists and is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise InputError(path, "output directory is not writable")
        return path
    ancestor = path.absolute().parent
    while not ancestor.exists() and not ancestor.is_symlink() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(path, f"cannot create the output directory: {ancestor} is not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(path, f"cannot create the output directory: {ancestor} is not writable")
    return path


def check_output_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path, after checking that it is not a directory and that its directory
    can be written in (:func:`check_output_directory`); InputError naming ``path`` otherwise."""
    path = Path(path)
    if path.is_dir():
        raise InputError(path, "output file is a directory")
    try:
        check_output_directory(path.parent)
    except InputError as error:
        raise InputError(path, error.problem) from None
    return path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in ``target``'s directory; rename it onto ``target`` on success.

    The temporary file keeps ``target``'s suffix so libraries that choose a format from
    the file name (tifffile, starfile) behave. On an exception the temporary file is
    removed and ``target`` is left as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.stem}.", suffix=f".part{target.suffix}", dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, _creation_mode())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
