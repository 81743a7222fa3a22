"""Pictures for people: micrographs side by side in one PNG (Pillow)."""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from cryoscore.io.atomic import atomic_path


def to_uint8(image: np.ndarray, *, low_percentile: float = 0.5, high_percentile: float = 99.5) -> np.ndarray:
    """Stretch a float image (H, W) to 0-255 between two percentiles (robust to outliers)."""
    low, high = np.percentile(image, [low_percentile, high_percentile])
    scaled = (image - low) / max(high - low, np.finfo(np.float32).tiny)
    return (np.clip(scaled, 0, 1) * 255).astype(np.uint8)


def write_panels_png(
    path: str | os.PathLike,
    panels: Sequence[tuple[str, np.ndarray]],
    *,
    circles_rc: np.ndarray | None = None,
    circle_radius_px: float = 0.0,
    caption: str | None = None,
    columns: int | None = None,
) -> None:
    """Write titled grey-scale panels (each (H, W), same shape) side by side as one PNG.

    ``circles_rc`` (n, 2) row/col pixel positions are outlined on every panel, e.g. the
    true particle centres; ``caption`` is a line under the panels saying what they show
    (what the circles are, say); ``columns``: panels per row (default: all in one row).
    Written atomically.
    """
    title_height, gap = 18, 6
    caption_height = 18 if caption else 0
    height, width = panels[0][1].shape
    columns = len(panels) if columns is None else max(1, min(columns, len(panels)))
    rows = -(-len(panels) // columns)
    cell_height = height + title_height
    sheet = Image.new("L", (columns * (width + gap) - gap, rows * (cell_height + gap) - gap + caption_height),
                      color=255)
    draw = ImageDraw.Draw(sheet)
    for index, (title, image) in enumerate(panels):
        left, top = (index % columns) * (width + gap), (index // columns) * (cell_height + gap)
        sheet.paste(Image.fromarray(to_uint8(image)), (left, top + title_height))
        draw.text((left + 4, top + 3), title, fill=0)
        for row, col in np.asarray(circles_rc if circles_rc is not None else np.empty((0, 2))):
            r = circle_radius_px
            draw.ellipse((left + col - r, top + title_height + row - r, left + col + r, top + title_height + row + r),
                         outline=255)
    if caption:
        draw.text((4, rows * (cell_height + gap) - gap + 3), caption, fill=0)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
