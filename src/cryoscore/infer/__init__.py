"""Applying denoisers to micrographs: the non-learned baselines, later tiling and samplers."""
