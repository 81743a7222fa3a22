"""Figures for the benchmark report, as self-contained SVG and base64 PNG (no plotting library).

Line charts (precision-recall, FSC, power spectra) are drawn as inline SVG so the
report is one HTML file that opens anywhere and stays small.
"""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Sequence

import numpy as np
from PIL import Image

from cryoscore.io.png import to_uint8

PALETTE = ("#444444", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


def radial_power_spectrum(image: np.ndarray, pixel_size_a: float, n_bins: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Rotationally averaged power spectrum of ``image`` (H, W), mean removed.

    Returns (frequencies in 1/Angstrom, (n_bins,) bin centres up to Nyquist; mean power
    per bin, in the image's units squared times pixels). Empty bins are NaN.
    """
    centred = image.astype(np.float64) - image.mean()
    power = np.abs(np.fft.rfft2(centred)) ** 2 / centred.size
    rows = np.fft.fftfreq(image.shape[0])[:, None]
    cols = np.fft.rfftfreq(image.shape[1])[None, :]
    radius = np.sqrt(rows**2 + cols**2)  # cycles per pixel
    edges = np.linspace(0.0, 0.5, n_bins + 1)
    index = np.digitize(radius.ravel(), edges) - 1
    inside = (index >= 0) & (index < n_bins)
    sums = np.bincount(index[inside], weights=power.ravel()[inside], minlength=n_bins)
    counts = np.bincount(index[inside], minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return (edges[:-1] + edges[1:]) / 2 / pixel_size_a, mean


def png_data_uri(image: np.ndarray, *, size_px: int = 256) -> str:
    """A grey-scale ``image`` (H, W), shrunk to at most ``size_px`` across, as a PNG data URI."""
    picture = Image.fromarray(to_uint8(image))
    picture.thumbnail((size_px, size_px), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    return [low + (high - low) * step / (count - 1) for step in range(count)]


def line_chart_svg(
    series: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    y_range: tuple[float, float] | None = None,
    log_y: bool = False,
    width: int = 420,
    height: int = 300,
    hlines: Sequence[float] = (),
) -> str:
    """An SVG line chart of named (x, y) series; non-finite points are skipped.

    ``log_y`` plots log10 of positive y values. ``hlines`` draws dashed horizontal
    reference lines (e.g. FSC 0.143) in data units.
    """
    cleaned = []
    for name, xs, ys in series:
        x = np.asarray(xs, dtype=np.float64)
        y = np.asarray(ys, dtype=np.float64)
        keep = np.isfinite(x) & np.isfinite(y) & ((y > 0) if log_y else True)
        y = np.log10(y[keep]) if log_y else y[keep]
        cleaned.append((name, x[keep], y))
    xs_all = np.concatenate([x for _, x, _ in cleaned]) if cleaned else np.zeros(0)
    ys_all = np.concatenate([y for _, _, y in cleaned]) if cleaned else np.zeros(0)
    x_low, x_high = (float(xs_all.min()), float(xs_all.max())) if xs_all.size else (0.0, 1.0)
    if y_range is not None:
        y_low, y_high = (math.log10(y_range[0]), math.log10(y_range[1])) if log_y else y_range
    else:
        y_low, y_high = (float(ys_all.min()), float(ys_all.max())) if ys_all.size else (0.0, 1.0)
    if x_high <= x_low:
        x_high = x_low + 1.0
    if y_high <= y_low:
        y_high = y_low + 1.0
    left, right, top, bottom = 56, 10, 24, 40
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: float) -> float:
        return left + (x - x_low) / (x_high - x_low) * plot_w

    def py(y: float) -> float:
        return top + (1 - (min(max(y, y_low), y_high) - y_low) / (y_high - y_low)) * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="11" '
             f'font-family="sans-serif">',
             f'<text x="{width / 2}" y="15" text-anchor="middle" font-weight="bold">{html.escape(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>']
    for tick in _ticks(x_low, x_high):
        parts.append(f'<text x="{px(tick):.1f}" y="{top + plot_h + 14}" text-anchor="middle">{tick:.3g}</text>')
    for tick in _ticks(y_low, y_high):
        label = f"{10**tick:.2g}" if log_y else f"{tick:.3g}"
        parts.append(f'<text x="{left - 4}" y="{py(tick) + 4:.1f}" text-anchor="end">{label}</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle">{html.escape(x_label)}</text>')
    parts.append(f'<text x="12" y="{top + plot_h / 2}" text-anchor="middle" '
                 f'transform="rotate(-90 12 {top + plot_h / 2})">{html.escape(y_label)}</text>')
    for level in hlines:
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{py(level):.1f}" y2="{py(level):.1f}" '
                     f'stroke="#bbb" stroke-dasharray="4 3"/>')
    for index, (name, x, y) in enumerate(cleaned):
        colour = PALETTE[index % len(PALETTE)]
        points = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(x, y))
        if points:
            parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        parts.append(f'<text x="{left + plot_w - 4}" y="{top + 14 + 13 * index}" text-anchor="end" '
                     f'fill="{colour}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)
