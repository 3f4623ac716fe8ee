"""The foreign evaluation family: real LAS excerpts plotted by matplotlib as log tracks, printed and scanned.

Shares no code with the training generator (digitiser.synth and its helpers): other drawing primitives
(matplotlib's Agg), other curve source (`excerpts.npz`, its own windows), other degradations (`scanner`). It is
for evaluation only: never train on it. A scan's choices all come from `np.random.default_rng([FAMILY, seed, i])`.

Files per scan, as `digitise synth` writes them (so `digitise eval DIR` reads them unchanged):
scan_{i:05d}.{png,jpg,tif} (image), .json (calibration), .truth.npz (mask HxW uint8 {0,1,2}, x_frac (300, 2),
values (300, 2); NaN where the LAS has no value; third_x (300,): the third line, NaN where there is none;
features: what the track holds, see `features`; styles: how its lines are drawn, see `line_styles`).
"""
from __future__ import annotations

import io
import json
import logging
import math
import os
from pathlib import Path
import time

import matplotlib
import numpy as np

from foreign import excerpts as _excerpts
from foreign import scanner
from foreign.plot import N_DEPTH, Pen, Track, render, truth_fractions

log = logging.getLogger(__name__)

FAMILY = 0xF0E1       # mixed into every scan's seed: streams disjoint from any other generator's
DEFAULT_SEED = 2718
DPIS = (72, 96, 100, 150, 200, 300)
INKS = {"black": (0.0, 0.0, 0.0), "red": (0.85, 0.1, 0.1), "light red": (1.0, 0.45, 0.45),
        "blue": (0.1, 0.2, 0.85), "green": (0.0, 0.55, 0.15), "magenta": (0.75, 0.1, 0.6),
        "brown": (0.5, 0.3, 0.1), "navy": (0.05, 0.05, 0.4), "orange": (0.95, 0.5, 0.05)}
GRID_INKS = [(0.75, 0.75, 0.75), (0.55, 0.55, 0.55), (0.6, 0.78, 0.6), (0.95, 0.7, 0.55), (0.3, 0.3, 0.3)]
DASHED = ["--", ":", (0, (6, 3)), (0, (2, 2)), (0, (1, 1.5)), (0, (10, 4))]
THIRD = ["-.", (0, (8, 2, 1, 2, 1, 2)), (0, (12, 3, 2, 3)), "-"]


def _fractions(v: np.ndarray, left: float, right: float, log_scale: bool) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        if log_scale:
            return (np.log10(v) - math.log10(left)) / (math.log10(right) - math.log10(left))
        return (v - left) / (right - left)


def _values(f: np.ndarray, left: float, right: float, log_scale: bool) -> np.ndarray:
    if log_scale:
        return 10 ** (math.log10(left) + f * (math.log10(right) - math.log10(left)))
    return left + f * (right - left)


def _scale(rng, ex, k: int, window: np.ndarray) -> tuple[float, float]:
    """The plotted scale of curve k: the log's own, sometimes narrowed to the window's own 3-12% tails so its
    excursions run off scale, along the edge."""
    left, right = (float(v) for v in ex.scales[k])
    if ex.log and k < 2:
        if rng.random() < 0.25:   # one decade less on one side
            left, right = (left * 10, right) if rng.random() < 0.5 else (left, right / 10)
        return left, right
    if rng.random() < 0.3 and np.isfinite(window).sum() > 10:
        q = rng.uniform(3, 12)
        lo, hi = np.nanpercentile(window, [q, 100 - q])
        if hi > lo:
            left, right = (hi, lo) if left > right else (lo, hi)
    return float(f"{left:.4g}"), float(f"{right:.4g}")


def _grid(rng, log_scale: bool, left: float, right: float):
    if log_scale:
        d0, d1 = sorted((math.log10(left), math.log10(right)))
        majors = [(d - d0) / (d1 - d0) for d in range(math.ceil(d0), math.floor(d1) + 1)]
        minors = [(math.log10(m * 10 ** d) - d0) / (d1 - d0) for d in range(math.floor(d0), math.ceil(d1))
                  for m in range(2, 10)]
        if left > right:
            majors, minors = [1 - x for x in majors], [1 - x for x in minors]
        return majors, [x for x in minors if 0 < x < 1]
    n = int(rng.choice([4, 5, 10]))
    minor = [i / (n * 5) for i in range(1, n * 5)] if rng.random() < 0.4 else []
    return [i / n for i in range(n + 1)], minor


def _depth_lines(top: float, bottom: float, h: int, unit: str):
    """Rows of depth lines (minor, major) and their depth numbers."""
    px_per_unit = (h - 1) / (bottom - top)
    steps = [1, 2, 5, 10, 20, 50, 100] if unit == "m" else [5, 10, 20, 50, 100, 200]
    minor = next((s for s in steps if s * px_per_unit >= 6), steps[-1])
    major = minor * (5 if minor in (1, 10, 100) else 10 if minor in (5, 50) else 5)
    d = np.arange(math.ceil(top / minor) * minor, bottom, minor)
    rows = 0.5 + (d - top) * px_per_unit
    is_major = np.isclose(np.mod(d + 1e-9, major), 0, atol=1e-6)
    return rows, is_major, d


def _pens(rng, colour: bool):
    names = list(INKS)
    def ink():
        return INKS[names[rng.integers(len(names))]] if colour else (0.0, 0.0, 0.0)
    width = lambda: float(rng.uniform(1.0, 3.0))  # noqa: E731
    p1 = Pen(ink(), width(), "-")
    p2 = Pen(ink(), width(), DASHED[rng.integers(len(DASHED))])
    if colour and rng.random() < 0.15:   # the case: a thin light curve about as light as the grid
        p1 = Pen(INKS["light red"], 1.0, "-")
    p3 = Pen(ink(), float(rng.uniform(0.8, 2.0)), THIRD[rng.integers(len(THIRD))]) if rng.random() < 0.3 else None
    if p3 is not None and p3.style == "-":
        p3 = Pen(tuple(0.55 + 0.45 * np.asarray(p3.colour)), 1.0, "-")   # a light solid line: a scale mark
    return [p1, p2, p3]


def make_track(rng, ex) -> tuple[Track, dict]:
    """Sample one track from excerpt `ex`; returns it and the calibration dict."""
    dpi = float(rng.choice(DPIS))
    w = int(round(math.exp(rng.uniform(math.log(100), math.log(600)))))
    h = int(round(math.exp(rng.uniform(math.log(300), math.log(3000)))))
    rows_per_sample = math.exp(rng.uniform(math.log(0.8), math.log(5.0)))   # the plot's depth scale
    n = int(np.clip(round(h / rows_per_sample), 120, len(ex.depth)))
    h = int(np.clip(round(n * rows_per_sample), 300, 3000))
    s = int(rng.integers(0, len(ex.depth) - n + 1))
    depth = ex.depth[s:s + n]
    top, bottom = float(depth[0]), float(depth[-1])
    rows = 0.5 + (depth - top) / (bottom - top) * (h - 1)
    scales = [_scale(rng, ex, k, ex.curves[k, s:s + n]) for k in range(3)]
    logs = [ex.log, ex.log, False]
    f = np.stack([_fractions(ex.curves[k, s:s + n].astype(float), *scales[k], logs[k]) for k in range(3)])
    f = np.clip(f, 0.5 / w, 1 - 0.5 / w)           # off scale: along the edge, centred on the edge pixel
    colour = rng.random() < 0.6
    majors, minors = _grid(rng, ex.log, *scales[0])
    d_rows, d_major, d_vals = _depth_lines(top, bottom, h, ex.depth_unit)
    grid_colour = GRID_INKS[rng.integers(len(GRID_INKS))] if colour else (0.55, 0.55, 0.55)
    lw_major = float(rng.uniform(0.6, 2.0))
    t = Track(w=w, h=h, dpi=dpi, f=f, rows=rows, pens=_pens(rng, colour), grid_colour=grid_colour,
              grid_px=(lw_major, lw_major * rng.uniform(0.4, 0.8)), vgrid=(majors, minors),
              depth_rows=(list(d_rows[d_major]), list(d_rows[~d_major])),
              border_px=float(rng.choice([0.0, 1.0, 1.5, 2.0])),
              curve_order=(0, 1) if rng.random() < 0.5 else (1, 0))
    t.labels = _labels(rng, t, d_rows[d_major], d_vals[d_major], ex, scales, colour)
    cal = {"top_depth": top, "bottom_depth": bottom, "depth_unit": ex.depth_unit,
           "curves": [{"name": str(ex.names[k]), "left": scales[k][0], "right": scales[k][1],
                       "scale": "log" if ex.log else "linear", "unit": str(ex.units[k])} for k in (0, 1)]}
    return t, cal


def _labels(rng, t: Track, rows, depths, ex, scales, colour: bool) -> list:
    size = float(rng.uniform(5, 9)) * (100 / t.dpi) ** 0.3
    ink = (0.1, 0.1, 0.1)
    out = []
    if rng.random() < 0.6:      # depth numbers inside the track
        x = float(rng.choice([0.12, 0.5, 0.85]))
        boxed = bool(rng.random() < 0.5)
        out += [(x, float(y), f"{d:g}", size, ink, boxed) for y, d in zip(rows, depths)]
    if rng.random() < 0.5:      # scale labels inside the track, at the top (and sometimes the bottom)
        ends = [12.0] + ([t.h - 12.0] if rng.random() < 0.5 else [])
        for k in (0, 1):
            c = t.pens[k].colour if colour else ink
            for y in ends:
                y = y + 1.6 * size * k
                out += [(0.08, y, f"{scales[k][0]:g}", size, c, False),
                        (0.5, y, str(ex.names[k]), size, c, False),
                        (0.92, y, f"{scales[k][1]:g}", size, c, False)]
    return out


def render_scan(seed: int, i: int, ex_list=None) -> dict:
    """Render scan i of the family seeded with `seed`: dict of image/encoded/ext/mask/x_frac/values/calibration."""
    rng = np.random.default_rng([FAMILY, seed, i])
    ex_list = ex_list if ex_list is not None else _excerpts.load()
    ex = ex_list[int(rng.integers(len(ex_list)))]
    t, cal = make_track(rng, ex)
    rgb, cover = render(t)
    x = truth_fractions(t)
    scan = scanner.scan(rgb, cover, t.curve_order, rng)
    x_frac = scanner.shear_truth(x, scan["shear"], t.h, t.w)
    third = scanner.shear_truth(third_line_fractions(t)[:, None], scan["shear"], t.h, t.w)[:, 0]
    values = np.stack([_values(x_frac[:, k], cal["curves"][k]["left"], cal["curves"][k]["right"], ex.log)
                       for k in (0, 1)], axis=1)
    return {**scan, "x_frac": x_frac, "third_x": third, "values": values, "calibration": cal, "features": features(t),
            "styles": line_styles(t)}


def third_line_fractions(t: Track) -> np.ndarray:
    """(300,) the third line's position (fractions of width) at the depth rows, NaN where the track has none."""
    return truth_fractions(t, (2,))[:, 0] if t.pens[2] is not None else np.full(N_DEPTH, np.nan)


def features(t: Track) -> list[str]:
    """What the track holds that the evaluation reports apart (`digitise eval`'s by_feature): "light pen"
    (curve 1 a 1-px light red line, about as light as the grid in grey), "third line" (a line that is
    neither curve)."""
    light = t.pens[0].colour == INKS["light red"] and t.pens[0].width_px == 1.0
    return [name for name, has in (("light pen", light), ("third line", t.pens[2] is not None)) if has]


def line_styles(t: Track) -> list[str]:
    """How curve 2 and the third line (where drawn) are dashed, as `digitise eval` reports them apart (by_style):
    "curve 2 dash 3.7:1.6", "third line dash-dot 6.4:1.6:1:1.6", ... (visible on:off lengths in pen widths)."""
    return [f"{name} {style_name(p.style)}" for name, p in (("curve 2", t.pens[1]), ("third line", t.pens[2]))
            if p is not None]


def style_name(style) -> str:
    """A matplotlib linestyle by its kind and visible on:off lengths in pen widths ("dot 1:1.65", "solid")."""
    if style == "-":
        return "solid"
    named = {"--": "dashed", ":": "dotted", "-.": "dashdot"}
    seq = matplotlib.rcParams[f"lines.{named[style]}_pattern"] if isinstance(style, str) else style[1]
    kind = "dash-dot" if len(seq) > 2 else "dot" if seq[0] <= 1 else "dash"
    return f"{kind} " + ":".join(f"{v:g}" for v in seq)


def _put(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_dataset(out: str, n: int, seed: int = DEFAULT_SEED) -> list[str]:
    """Render n scans of the family into folder `out`; returns the image paths. Same files for the same seed."""
    if n < 0:
        raise ValueError(f"need n >= 0, got {n}")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    ex_list, paths, t0 = _excerpts.load(), [], time.monotonic()
    for i in range(n):
        s = render_scan(seed, i, ex_list)
        stem = f"scan_{i:05d}"
        buf = io.BytesIO()
        np.savez_compressed(buf, mask=s["mask"], x_frac=s["x_frac"], values=s["values"], third_x=s["third_x"],
                            features=np.array(s["features"], dtype=str), styles=np.array(s["styles"], dtype=str))
        _put(root / f"{stem}.truth.npz", buf.getvalue())
        _put(root / f"{stem}.json", json.dumps(s["calibration"], indent=2).encode())
        _put(root / f"{stem}.{s['ext']}", s["encoded"])
        paths.append(str(root / f"{stem}.{s['ext']}"))
        if (i + 1) % 25 == 0 or i + 1 == n:
            log.info("foreign: %d/%d scans in %s (%.1f scans/s)", i + 1, n, root, (i + 1) / (time.monotonic() - t0))
    return paths
