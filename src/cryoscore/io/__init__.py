"""File input and output: micrographs and stacks (MRC), movies (MRC, TIFF), coordinates.

Readers return numpy float32 arrays and raise :class:`~cryoscore.errors.InputError` for
any file a user can fix; writers are atomic (:func:`~cryoscore.io.atomic.atomic_path`).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "atomic_path": "atomic",
    "ParticleCoordinates": "coords", "read_coordinates": "coords", "write_coordinates": "coords",
    "Movie": "movie", "even_odd_sums": "movie", "open_movie": "movie", "write_movie": "movie",
    "MrcStack": "mrc", "open_mrc_stack": "mrc", "read_half_pair": "mrc", "read_mrc": "mrc", "write_mrc": "mrc",
}
"""Names re-exported here, by submodule; imported on first use, so that ``cryoscore.io.mrc``
does not pay for pandas (coordinates) or tifffile (movies)."""
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
