"""Figures for the benchmark report, as self-contained SVG and base64 PNG (no plotting library).

Line charts (precision-recall, FSC, power spectra) are drawn as inline SVG so the
report is one HTML file that opens anywhere and stays small.
"""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

from cryoscore.fourier import radial_frequency
from cryoscore.io.png import to_uint8

PALETTE = ("#444444", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")


def radial_power_spectrum(image: np.ndarray, pixel_size_a: float, n_bins: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Rotationally averaged power spectrum of ``image`` (H, W), mean removed.

    Returns (frequencies in 1/Angstrom, (n_bins,) bin centres up to Nyquist; mean power
    per bin, in the image's units squared times pixels). Empty bins are NaN. The zero-frequency
    coefficient (0 once the mean is removed) is left out, so white noise reads flat down to
    the first bin.
    """
    centred = image.astype(np.float64) - image.mean()
    power = np.abs(np.fft.rfft2(centred)) ** 2 / centred.size
    radius = radial_frequency(image.shape)  # cycles per pixel
    edges = np.linspace(0.0, 0.5, n_bins + 1)
    index = np.digitize(radius.ravel(), edges) - 1
    inside = (index >= 0) & (index < n_bins) & (radius.ravel() > 0)
    sums = np.bincount(index[inside], weights=power.ravel()[inside], minlength=n_bins)
    counts = np.bincount(index[inside], minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return (edges[:-1] + edges[1:]) / 2 / pixel_size_a, mean


def scale_bar_nm(width_a: float) -> int:
    """A round scale-bar length in nanometres, about a quarter of an image ``width_a`` Angstrom wide."""
    target_nm = width_a / 10 / 4
    return max((length for length in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if length <= target_nm), default=1)


def png_data_uri(image: np.ndarray, *, size_px: int = 256, bar_px: float | None = None) -> str:
    """A grey-scale ``image`` (H, W), shrunk to at most ``size_px`` across, as a PNG data URI.

    ``bar_px``: draw a scale bar this many pixels of ``image`` long in the bottom-left corner
    (white with a dark outline, so it shows on any background).
    """
    picture = Image.fromarray(to_uint8(image))
    picture.thumbnail((size_px, size_px), Image.Resampling.LANCZOS)
    if bar_px is not None:
        length = bar_px * picture.width / image.shape[1]
        x0, y1 = 0.05 * picture.width, 0.95 * picture.height
        ImageDraw.Draw(picture).rectangle((x0, y1 - 4, x0 + length, y1), fill=255, outline=0)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values from ``low`` to ``high``, 1, 2, 2.5 or 5 times a power of ten apart."""
    raw_step = (high - low) / (count - 1)
    power = 10.0 ** math.floor(math.log10(raw_step))
    step = min((power * factor for factor in (1, 2, 2.5, 5, 10)), key=lambda candidate: abs(candidate - raw_step))
    first = math.ceil(low / step - 1e-9) * step
    return [first + index * step for index in range(int((high - first) / step + 1e-9) + 1)]


DASHES = ("", "6 3", "2 2", "8 3 2 3", "4 4", "1 3")
"""Dash patterns by series (after the first), so curves that coincide stay distinguishable."""


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
    hlines: Sequence[tuple[float, str]] = (),
    x_tick_note: Callable[[float], str] | None = None,
) -> str:
    """An SVG line chart of named (x, y) series; non-finite points are skipped.

    ``log_y`` plots log10 of positive y values; with ``y_range`` too, points below its floor
    are left out (a curve stops there rather than running along the bottom edge). The first
    series is drawn wide and pale under the others, the others with their own dash pattern,
    so curves that coincide all stay visible; the legend sits right of the plot, not over it
    (``width`` is the plot's, the legend's column is added to it).
    ``hlines`` are dashed horizontal reference lines, (level in data units, label).
    ``x_tick_note`` gives a second line under each x tick (e.g. the resolution in Angstrom
    under a spatial frequency).
    """
    cleaned = []
    for name, xs, ys in series:
        x = np.asarray(xs, dtype=np.float64)
        y = np.asarray(ys, dtype=np.float64)
        keep = np.isfinite(x) & np.isfinite(y) & ((y > 0) if log_y else True)
        if log_y and y_range is not None:
            keep &= y >= y_range[0]
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
    left, top, bottom = 64, 24, 40 + (14 if x_tick_note else 0)
    plot_w, plot_h = width - left - 20, height - top - bottom  # 20 px for half the last x tick label
    legend_x = width
    width += int(20 + 6.5 * max((len(name) for name, _, _ in cleaned), default=0))  # the legend's column

    def px(x: float) -> float:
        return left + (x - x_low) / (x_high - x_low) * plot_w

    def py(y: float) -> float:
        return top + (1 - (min(max(y, y_low), y_high) - y_low) / (y_high - y_low)) * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="11" '
             f'font-family="sans-serif">',
             f'<text x="{left + plot_w / 2}" y="15" text-anchor="middle" font-weight="bold">{html.escape(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>']
    for tick in _ticks(x_low, x_high):
        parts.append(f'<text x="{px(tick):.1f}" y="{top + plot_h + 14}" text-anchor="middle">{tick:.3g}</text>')
        if x_tick_note is not None:
            parts.append(f'<text x="{px(tick):.1f}" y="{top + plot_h + 27}" text-anchor="middle" fill="#555">'
                         f"{html.escape(x_tick_note(tick))}</text>")
    y_ticks = [float(tick) for tick in range(math.ceil(y_low), math.floor(y_high) + 1)] if log_y else []
    for tick in y_ticks if len(y_ticks) >= 2 else _ticks(y_low, y_high):
        label = f"{10**tick:.2g}" if log_y else f"{tick:.3g}"
        parts.append(f'<text x="{left - 4}" y="{py(tick) + 4:.1f}" text-anchor="end">{label}</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle">{html.escape(x_label)}</text>')
    parts.append(f'<text x="12" y="{top + plot_h / 2}" text-anchor="middle" '
                 f'transform="rotate(-90 12 {top + plot_h / 2})">{html.escape(y_label)}</text>')
    for level, label in hlines:
        level_y = math.log10(level) if log_y else level
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{py(level_y):.1f}" y2="{py(level_y):.1f}" '
                     f'stroke="#999" stroke-dasharray="4 3"/>')
        parts.append(f'<text x="{left + plot_w - 3}" y="{py(level_y) - 3:.1f}" text-anchor="end" fill="#666">'
                     f"{html.escape(label)}</text>")
    for index, (name, x, y) in enumerate(cleaned):
        colour = PALETTE[index % len(PALETTE)]
        style = ('stroke-width="4" stroke-opacity="0.45"' if index == 0 else
                 f'stroke-width="1.5" stroke-dasharray="{DASHES[(index - 1) % len(DASHES)]}"')
        points = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(x, y))
        if points:
            parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" {style}/>')
        row = top + 10 + 15 * index
        parts.append(f'<line x1="{legend_x}" x2="{legend_x + 12}" y1="{row - 4}" y2="{row - 4}" stroke="{colour}" '
                     f"{style}/>")
        parts.append(f'<text x="{legend_x + 16}" y="{row}" fill="{colour}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)
