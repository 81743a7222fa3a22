"""Particle picking, the downstream judge of a denoiser (DESIGN.md section 3).

- :func:`pick_blobs`: reference-free Difference-of-Gaussians picker, the primary judge;
- :func:`pick_template`: cross-correlation with CTF-modulated projections of a reference;
- :func:`pick_micrographs`: either picker over MRC files, writing RELION STAR files.

Both pickers return :class:`~cryoscore.io.coords.ParticleCoordinates` in the original
pixel frame with the score as ``figure_of_merit`` (robust noise standard deviations),
best first.
"""

from cryoscore.pick.blob import pick_blobs
from cryoscore.pick.run import PICKERS, pick_micrographs
from cryoscore.pick.template import pick_template

__all__ = ["PICKERS", "pick_blobs", "pick_micrographs", "pick_template"]
