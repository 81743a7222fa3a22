"""Applying denoisers to micrographs: tiled inference, samplers, and runs over many files."""

DEFAULT_TILE_PX = 2048
"""Default tile core edge in pixels (``--tile``). With the default model's 243 px halo a 2048 px
core makes 2560 x 2560 tiles: a 4096 x 4096 micrograph took 3.7-5.0 s in 4 of them (3.7-4.1 s
once a process had warmed up) against 4.7-5.6 s in 16 tiles of 1024 px (2 CPU cores;
benchmarks/RESULTS.md, section 3), for a peak of about 1.4 GB of resident memory through the
CLI instead of 0.8 GB. A whole 4096 px tile was slower again (4.4-5.4 s)."""
