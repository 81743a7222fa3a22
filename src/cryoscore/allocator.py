"""Keep the C library's allocator from handing freed tensor memory back to the kernel.

Tiled inference allocates and frees the same activation buffers for every tile (tens of
megabytes each). glibc's malloc serves blocks that large with
``mmap`` and returns them with ``munmap``, or trims them off the top of its heap, so by
default every tile faults its activations in again, page by page.

Two settings fix this, both glibc's ``mallopt``:

* :func:`retain_freed_memory`, for the whole process: heap trimming off, and the mmap
  threshold fixed at glibc's 64-bit maximum (32 MiB), so blocks below it come from the heap
  and are reused once freed;
* :func:`heap_allocations`, a context for the network's forward passes only: no ``mmap`` at
  all (``M_MMAP_MAX`` = 0), so activations above 32 MiB come from the heap too.

Outside the forward passes, a micrograph-sized array (64 MB for 4096 x 4096 float32) that
finds no free block in the heap is mmapped and goes back to the kernel when freed, instead
of extending the heap for good.

The threshold alone left the largest activations mmapped and faulted in again for every
tile; no mmap in the whole process let the heap fragment (resident memory kept rising over a
hundred micrographs); no mmap in the forward passes only (these settings) kept both the page
faults and the memory flat (benchmarks/RESULTS.md, section 3, "The allocator, again").

The cost is that resident memory stays at the largest working set the process has had
instead of shrinking after it: for a run of micrographs of one size, the size of one.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import threading
from typing import Callable, Iterator

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
MMAP_THRESHOLD_BYTES = 32 * 2**20
"""glibc's largest mmap threshold on 64-bit systems (``DEFAULT_MMAP_THRESHOLD_MAX``)."""
NEVER_TRIM_BYTES = 2**31 - 1
DEFAULT_MMAP_MAX = 65536
"""glibc's default ``M_MMAP_MAX`` (``DEFAULT_MMAP_MAX``), restored after :func:`heap_allocations`."""


@functools.cache
def _mallopt() -> Callable[[int, int], int] | None:
    """glibc's ``mallopt``, or None where the C library is not glibc (macOS, musl, Windows)."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc's own symbol: mallopt means what this module says
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


@functools.cache
def retain_freed_memory() -> bool:
    """Turn heap trimming off and fix the mmap threshold at 32 MiB in this process, once.

    Returns True where the C library is glibc and took the settings; False, changing
    nothing, elsewhere.
    """
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, NEVER_TRIM_BYTES))


_heap_only_lock = threading.Lock()
_heap_only_depth = 0


@contextlib.contextmanager
def heap_allocations() -> Iterator[None]:
    """Within: every block, whatever its size, comes from the heap (after
    :func:`retain_freed_memory`), so a forward pass reuses the previous one's freed activations.

    Threads may nest it: mmap comes back when the last of them leaves. Nothing happens
    where the C library is not glibc.
    """
    global _heap_only_depth
    mallopt = _mallopt() if retain_freed_memory() else None
    if mallopt is None:
        yield
        return
    with _heap_only_lock:
        _heap_only_depth += 1
        mallopt(M_MMAP_MAX, 0)
    try:
        yield
    finally:
        with _heap_only_lock:
            _heap_only_depth -= 1
            if _heap_only_depth == 0:
                mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
