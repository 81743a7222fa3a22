"""Single-particle 3D reconstruction as a judge of picks (and so of denoisers).

Stages, in data-flow order: ``grid`` (Fourier resampling, masks, the correlation band),
``ctf`` (per-particle CTFs) -> ``extract`` (boxes from the raw micrographs, normalised) ->
``poses`` (projection matching against a low-passed reference) -> ``insert`` (CTF-corrected
Fourier insertion) -> ``fsc`` (half-map and truth FSC, resolution) -> ``pipeline`` (all of
it from micrographs and picks, or from a dataset directory).

Conventions shared by every stage: images and volumes are float32 with axes (y, x) and
(z, y, x); a particle's centre is pixel (B//2, B//2) of its box (voxel (B//2,)*3 of a
volume), as in :mod:`cryoscore.simulate.project`; orientations are RELION Euler angles
(rot, tilt, psi), ZYZ intrinsic, as rotation matrices that left-multiply (x, y, z) column
vectors (:func:`cryoscore.simulate.project.euler_to_matrices`); extracted particles have
their contrast inverted, so that protein is positive, like the maps.
"""
