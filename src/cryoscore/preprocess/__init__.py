"""From what the microscope recorded to what denoising and picking start from.

- :func:`~cryoscore.preprocess.ctf.estimate_ctf`: a micrograph's CTF (defocus, astigmatism)
  from its Thon rings; :func:`~cryoscore.preprocess.ctf.estimate_ctf_files` over MRC files,
  written by :func:`~cryoscore.io.ctf_star.write_ctf_star` as RELION micrograph STAR.
"""

from cryoscore.preprocess.ctf import CtfEstimate, CtfSearch, estimate_ctf, estimate_ctf_files

__all__ = ["CtfEstimate", "CtfSearch", "estimate_ctf", "estimate_ctf_files"]
