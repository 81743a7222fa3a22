"""Applying denoisers to micrographs: tiled inference, samplers, and runs over many files."""

DEFAULT_TILE_PX = 1024
"""Default tile core edge in pixels (``--tile``), at the model's working pixel size. The default
network runs at full resolution with 16 channels there, so a tile's activations grow fast with
its size: 1024 px tiles were faster than one 2048 px tile and needed a third of its memory
(benchmarks/RESULTS.md, section 6, "Speed and memory of the new default model")."""

FLATTEN_LOWPASS_A = 20.0
"""The low-pass of a flattened micrograph (``--flatten``, :func:`cryoscore.infer.denoise.flatten_image`),
Angstrom: the low-pass baseline's usual cut-off."""
