"""Keep the C library's allocator from handing freed tensor memory back to the kernel.

Tiled inference allocates and frees the same few activation buffers (2 to 20 MB each for
tiles of 1024 px) for every tile. glibc's malloc serves blocks that large with ``mmap``
and returns them with ``munmap``, or trims them off the top of its heap, so by default
every tile faults its activations in again, page by page: on two 4096 x 4096 micrographs
through ``cryoscore denoise`` that was 9-10 s of kernel time against 1.2 s with the
settings below, and 19-21 s against 13-16 s of wall time (2 cores, 2026-12-01).

:func:`retain_freed_memory` fixes the mmap threshold at glibc's 64-bit maximum (32 MiB; the
buffers then come from the heap) and turns heap trimming off, so freed buffers are reused.
The cost is that resident memory stays at the largest working set the process has had
instead of shrinking after it: for a run of micrographs of one size, the size of one.
"""

from __future__ import annotations

import ctypes
import functools

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 2**20
"""glibc's largest mmap threshold on 64-bit systems (``DEFAULT_MMAP_THRESHOLD_MAX``)."""
NEVER_TRIM_BYTES = 2**31 - 1


@functools.cache
def retain_freed_memory() -> bool:
    """Apply the settings of the module docstring to this process, once.

    Returns True where the C library is glibc and took them; False, changing nothing,
    elsewhere (macOS, musl, Windows).
    """
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc's own symbol: mallopt means what this module says
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, NEVER_TRIM_BYTES))
