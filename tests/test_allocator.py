"""cryoscore.allocator: freed tensor memory is reused instead of faulted in again."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

# Denoise a 512 x 512 image four times (the first warms up) and count the page faults of
# the last three: a fresh process each, so both start from the same allocator state.
WORKLOAD = """
import json, resource, sys
import numpy as np
from cryoscore.allocator import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
from cryoscore.infer.denoise import denoise_image, load_denoiser
denoiser = load_denoiser()
image = np.random.default_rng(0).poisson(20.0, size=(512, 512)).astype(np.float32)
denoise_image(denoiser, image, tile_px=256)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    denoise_image(denoiser, image, tile_px=256)
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before))
"""


def _page_faults(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", WORKLOAD, mode], capture_output=True, text=True, timeout=300,
                            env={"OMP_NUM_THREADS": "1", "PATH": ""})
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.slow
@pytest.mark.skipif(not GLIBC, reason="the settings are glibc's")
def test_retained_memory_is_reused_without_page_faults():
    default, retained = _page_faults("default"), _page_faults("retain")
    # A 256 px tile with its 243 px halo is 768 x 768: tens of MB of activations, freed and
    # allocated again for each of its 4 tiles; reusing them faults almost none in.
    assert retained < default / 4, (default, retained)


def test_retain_freed_memory_is_applied_once_and_says_whether_it_was():
    from cryoscore.allocator import retain_freed_memory

    first = retain_freed_memory()
    assert retain_freed_memory() is first
    assert first == GLIBC
