"""cryoscore.allocator: freed tensor memory is reused instead of faulted in again."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

# Denoise an image four times (the first warms up) and count the page faults of the last
# three: a fresh process each, so both start from the same allocator state.
WORKLOAD = """
import json, resource, sys
import numpy as np
import cryoscore.allocator
mode, size, tile = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if mode == "default":  # what the forward passes would do without cryoscore.allocator
    cryoscore.allocator.retain_freed_memory = lambda: False
from cryoscore.infer.denoise import denoise_image, load_denoiser
denoiser = load_denoiser()
image = np.random.default_rng(0).poisson(20.0, size=(size, size)).astype(np.float32)
denoise_image(denoiser, image, tile_px=tile)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    denoise_image(denoiser, image, tile_px=tile)
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before))
"""


def _page_faults(mode: str, size: int, tile: int) -> int:
    result = subprocess.run([sys.executable, "-c", WORKLOAD, mode, str(size), str(tile)], capture_output=True,
                            text=True, timeout=300,
                            env={"OMP_NUM_THREADS": "1", "PATH": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.slow
@pytest.mark.benchmark
@pytest.mark.skipif(not GLIBC, reason="the settings are glibc's")
@pytest.mark.parametrize(("size", "tile"), [(512, 256), (1024, 1024)])
def test_retained_memory_is_reused_without_page_faults(size, tile):
    """Tiles of 504 px (256 px and the default network's 124 px halo; activations of 16 MB,
    freed and allocated again for each of 4 tiles) and the default 1024 px tile (1272 px with
    its halo, one per pass), whose largest activations (104 MB) exceed glibc's greatest mmap
    threshold: reusing them faults almost none in."""
    default, retained = _page_faults("default", size, tile), _page_faults("retain", size, tile)
    assert retained < default / 4, (default, retained)


# Allocate and free 40 MiB (above the 32 MiB mmap threshold) inside and outside
# heap_allocations, nested as two threads would; print glibc's mmapped bytes while each is held.
# Afterwards a 40 MiB block would reuse the heap's free 40 MiB, so 48 MiB shows mmap is back.
MMAPPED = """
import ctypes, json
from cryoscore.allocator import heap_allocations, retain_freed_memory
class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def mmapped_while_held(mib=40):
    block = libc.malloc(mib * 2**20)
    held = libc.mallinfo2().hblkhd
    libc.free(block)
    return held
assert retain_freed_memory()
before = mmapped_while_held()
with heap_allocations():
    with heap_allocations():
        inner = mmapped_while_held()
    still_inside = mmapped_while_held()
print(json.dumps([before, inner, still_inside, mmapped_while_held(48)]))
"""


@pytest.mark.skipif(not GLIBC, reason="the settings are glibc's")
def test_heap_allocations_keeps_large_blocks_out_of_mmap_until_the_last_context_ends():
    result = subprocess.run([sys.executable, "-c", MMAPPED], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    before, inner, still_inside, after = json.loads(result.stdout)
    assert before >= 40 * 2**20 and after >= 48 * 2**20  # mmapped outside
    assert inner < 2**20 and still_inside < 2**20  # from the heap inside, nested or not


def test_retain_freed_memory_is_applied_once_and_says_whether_it_was():
    from cryoscore.allocator import retain_freed_memory

    first = retain_freed_memory()
    assert retain_freed_memory() is first
    assert first == GLIBC
