"""File input and output: micrographs and stacks (MRC), movies (MRC, TIFF), coordinates.

Readers return numpy float32 arrays and raise :class:`~cryoscore.errors.InputError` for
any file a user can fix; writers are atomic (:func:`~cryoscore.io.atomic.atomic_path`).
"""

from __future__ import annotations

from cryoscore.io.atomic import atomic_path
from cryoscore.io.coords import ParticleCoordinates, read_coordinates, write_coordinates
from cryoscore.io.movie import Movie, even_odd_sums, open_movie, write_movie
from cryoscore.io.mrc import MrcStack, open_mrc_stack, read_half_pair, read_mrc, write_mrc

__all__ = [
    "Movie",
    "MrcStack",
    "ParticleCoordinates",
    "atomic_path",
    "even_odd_sums",
    "open_movie",
    "open_mrc_stack",
    "read_coordinates",
    "read_half_pair",
    "read_mrc",
    "write_coordinates",
    "write_movie",
    "write_mrc",
]
