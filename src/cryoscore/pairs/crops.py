"""Matching training crops from half pairs, identically augmented."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from cryoscore.pairs.halves import HalfPair


def dihedral(image: np.ndarray, transform: int) -> np.ndarray:
    """One of the 8 symmetries of the square (0-3: rotations by 90 degrees, 4-7: the same, flipped)."""
    turned = np.rot90(image, k=transform % 4, axes=(-2, -1))
    return np.flip(turned, axis=-1) if transform >= 4 else turned


def random_crop_pairs(
    pairs: Sequence[HalfPair], crop_px: int, n_crops: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``n_crops`` (source, target) crops, each (n_crops, 1, crop_px, crop_px) float32.

    Each crop comes from a random micrograph at a random position; source and target are
    the same region of the two halves with the same random flip/rotation, and which half
    is the source is itself random (so the network never learns a half's quirks).
    """
    if not pairs:
        raise ValueError("no half pairs to crop from")
    if crop_px > min(min(pair.even.shape) for pair in pairs):
        raise ValueError(f"crop of {crop_px} px exceeds the smallest micrograph")
    sources = np.empty((n_crops, 1, crop_px, crop_px), dtype=np.float32)
    targets = np.empty_like(sources)
    for index in range(n_crops):
        pair = pairs[int(rng.integers(len(pairs)))]
        row = rng.integers(pair.even.shape[0] - crop_px + 1)
        col = rng.integers(pair.even.shape[1] - crop_px + 1)
        transform = int(rng.integers(8))
        halves = [dihedral(half[row : row + crop_px, col : col + crop_px], transform) for half in (pair.even, pair.odd)]
        if rng.integers(2):
            halves.reverse()
        sources[index, 0], targets[index, 0] = halves
    return sources, targets
