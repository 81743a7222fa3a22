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
from cryoscore.allocator import retain_freed_memory
mode, size, tile = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if mode == "retain":
    assert retain_freed_memory()
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
@pytest.mark.skipif(not GLIBC, reason="the settings are glibc's")
@pytest.mark.parametrize(("size", "tile"), [(512, 256), (2048, 2048)])
def test_retained_memory_is_reused_without_page_faults(size, tile):
    """Tiles of 768 px (activations of a few MB, freed and allocated again for each of 4
    tiles) and the default 2560 px tile, whose largest activations (52 MB) exceed glibc's
    greatest mmap threshold: reusing them faults almost none in."""
    default, retained = _page_faults("default", size, tile), _page_faults("retain", size, tile)
    assert retained < default / 4, (default, retained)


def test_retain_freed_memory_is_applied_once_and_says_whether_it_was():
    from cryoscore.allocator import retain_freed_memory

    first = retain_freed_memory()
    assert retain_freed_memory() is first
    assert first == GLIBC
