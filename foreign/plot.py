"""A log track plotted with matplotlib from real curve values, with its exact truth.

The figure is exactly the track: W x H pixels at `dpi`, one axes filling it, data coordinates = display pixels
(x from the left edge, y from the top edge), so column c's centre is x = c + 0.5 and row r's is y = r + 0.5.
Curve values become fractions of the track width by the calibration's own formula, are clipped to the track
(a curve off scale runs along the edge, centred on the edge pixel) and are plotted as the polyline through the
LAS samples; the truth is that polyline read at the 300 depth rows. Each curve is also rendered alone (same
pen, black on white) to give its ink coverage, from which the class mask is taken.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

N_DEPTH = 300


@dataclass
class Pen:
    """A line: colour (RGB 0-1), width in px, matplotlib linestyle (str or (offset, (on, off, ...)) in points)."""
    colour: tuple
    width_px: float
    style: object = "-"


@dataclass
class Track:
    """Everything one plot shows. f: (3, n) curve positions (fractions of width, already clipped, NaN = none);
    rows: (n,) sample rows (display px from the top, row centres at r + 0.5); pens for curve 1, 2, third
    (None = not drawn); grid fractions (vertical lines: major, minor) and depth lines (rows, major flags)."""
    w: int
    h: int
    dpi: float
    f: np.ndarray
    rows: np.ndarray
    pens: list
    paper: tuple = (1.0, 1.0, 1.0)
    grid_colour: tuple = (0.6, 0.6, 0.6)
    grid_px: tuple = (1.0, 0.5)           # major, minor line width in px
    vgrid: tuple = ((), ())
    depth_rows: tuple = ((), ())
    labels: list = field(default_factory=list)   # (x_frac, y_row, text, size_pt, colour, boxed)
    border_px: float = 1.0
    curve_order: tuple = (0, 1)            # drawing order: the later curve is on top


def _figure(t: Track):
    fig = Figure(figsize=(t.w / t.dpi, t.h / t.dpi), dpi=t.dpi, facecolor=t.paper)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, t.w)
    ax.set_ylim(t.h, 0)
    ax.set_axis_off()
    return fig, ax


def _pt(t: Track, px: float) -> float:
    return px * 72.0 / t.dpi


def _draw_curve(ax, t: Track, k: int, colour=None, z: float = 10):
    pen = t.pens[k]
    ax.plot(t.f[k] * t.w, t.rows, color=colour or pen.colour, lw=_pt(t, pen.width_px), ls=pen.style,
            solid_joinstyle="round", dash_capstyle="butt", snap=False, zorder=z, antialiased=True)


def _draw_background(ax, t: Track):
    for fracs, lw in zip(t.vgrid, t.grid_px):
        for x in fracs:
            ax.axvline(x * t.w, color=t.grid_colour, lw=_pt(t, lw), zorder=1)
    for rows, lw in zip(t.depth_rows, t.grid_px):
        for y in rows:
            ax.axhline(y, color=t.grid_colour, lw=_pt(t, lw), zorder=1)
    for x, y, text, size, colour, boxed in t.labels:
        bbox = dict(facecolor=t.paper, edgecolor="none", pad=0.5) if boxed else None
        ax.text(x * t.w, y, text, fontsize=size, color=colour, ha="center", va="center", zorder=3, bbox=bbox)
    if t.border_px > 0:
        for x in (0, t.w):
            ax.axvline(x, color=(0.1, 0.1, 0.1), lw=_pt(t, 2 * t.border_px), zorder=4)  # half shows


def _rgb(fig, t: Track) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    img = np.asarray(canvas.buffer_rgba())[..., :3]
    assert img.shape[:2] == (t.h, t.w), f"figure rendered {img.shape[:2]}, wanted {(t.h, t.w)}"
    return img.copy()


def render(t: Track) -> tuple[np.ndarray, np.ndarray]:
    """Returns (HxWx3 uint8 RGB plot, (2, H, W) float32 ink coverage of curve 1 and 2 alone)."""
    fig, ax = _figure(t)
    _draw_background(ax, t)
    if t.pens[2] is not None:
        _draw_curve(ax, t, 2, z=5)
    for z, k in enumerate(t.curve_order):
        _draw_curve(ax, t, k, z=10 + z)
    rgb = _rgb(fig, t)
    cover = []
    for k in (0, 1):
        fig, ax = _figure(Track(**{**t.__dict__, "paper": (1.0, 1.0, 1.0)}))
        _draw_curve(ax, t, k, colour=(0, 0, 0))
        cover.append(1.0 - _rgb(fig, t)[..., 0].astype(np.float32) / 255.0)
    return rgb, np.stack(cover)


def truth_fractions(t: Track, curves=(0, 1)) -> np.ndarray:
    """(300, len(curves)) positions (fractions of width) of the track's curves (0, 1: curve 1 and 2; 2: the third
    line) at depth rows y_k = k (H - 1) / 299, NaN where the curve has no data there (the polyline is read
    between its two neighbouring samples)."""
    y_k = np.arange(N_DEPTH) * (t.h - 1) / (N_DEPTH - 1) + 0.5      # display y of row centres
    out = np.full((N_DEPTH, len(curves)), np.nan)
    for i, k in enumerate(curves):
        f = t.f[k]
        x = np.interp(y_k, t.rows, f)
        lo = np.clip(np.searchsorted(t.rows, y_k, side="right") - 1, 0, len(f) - 1)
        hi = np.clip(lo + 1, 0, len(f) - 1)
        known = np.isfinite(f[lo]) & np.isfinite(f[hi]) & (y_k >= t.rows[0]) & (y_k <= t.rows[-1])
        out[known, i] = x[known]
    return out
