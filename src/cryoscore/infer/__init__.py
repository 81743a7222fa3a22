"""Applying denoisers to micrographs: tiled inference, samplers, and runs over many files."""

DEFAULT_TILE_PX = 1024
"""Default tile core edge in pixels (``--tile``), at the model's working pixel size. The default
network runs at full resolution with 16 channels there, so a tile's activations grow fast with
its size: a 4096 x 4096 micrograph at 1.5 A/px (2048 x 2048 working pixels) took 5.2-5.7 s with a
peak of 1.5 GB of resident memory in 1024 px tiles (1272 px with the 124 px halo), against
8.0-10.0 s and 4.7 GB in one 2048 px tile (2 CPU cores, another job running;
benchmarks/RESULTS.md, section 6)."""
