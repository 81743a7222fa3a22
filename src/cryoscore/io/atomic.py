"""Atomic file writes: write to a temporary file beside the target, then rename.

A reader never sees a half-written output, and a crash leaves at most a stray
temporary file whose name starts with ``.`` and ends with ``.part``. The output gets the
permissions a plainly created file would (0666 less the umask), not the owner-only 0600 of
the temporary file, so that colleagues and processing accounts can read it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


def _creation_mode() -> int:
    """0666 less this process's umask: the mode ``open(..., "w")`` gives a new file."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


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
