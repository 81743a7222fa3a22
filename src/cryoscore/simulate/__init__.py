"""A physical cryo-EM micrograph simulator with exact ground truth.

Stages, in data-flow order: ``specimen`` (what a particle's potential is), ``procedural``
and ``volume`` (where it comes from: built-in shapes, maps, atomic models) -> ``ctf`` -> ``project``
(Fourier slice projection) -> ``micrograph`` (particles and phase contrast) ->
``background`` (ice) -> ``dose`` (frames, drift, Poisson counts) -> ``dataset``
(whole micrographs written as a dataset directory).
"""
