"""A physical cryo-EM micrograph simulator with exact ground truth.

Stages, in data-flow order: ``volume`` (specimen potential) -> ``ctf`` -> ``project``
(Fourier slice projection) -> ``micrograph`` (particles and phase contrast) ->
``background`` (ice) -> ``dose`` (frames, drift, Poisson counts) -> ``dataset``
(whole micrographs written as a dataset directory).
"""
