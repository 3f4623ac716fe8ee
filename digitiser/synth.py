"""Synthetic scanned well-log tracks with exact ground truth, to train and evaluate the segmenter.

A scan is one track image (H rows x W columns; the image is the track) with two curves: curve 1
solid, curve 2 dashed or dotted, over a linear or logarithmic grid with depth lines, on tinted paper,
with annotations, blur, noise, specks, JPEG artefacts, page skew, or thresholded to a 1-bit CCITT G4
TIFF. Curve shapes come from real logs (`curve_shapes`) or random layered beds.

Generator versions: `render_scan(seed, version=N)`, `VERSIONS` says what each adds, `digitise synth --version N`
renders a set; every version is frozen, byte-identical for a seed (pinned digests in the tests). Version 1 is the
default of `digitise synth` (the held-out eval set) and of training recipes stages 1-6; recipes name the others
`render_scan_broad`, `render_scan_v3` ... `render_scan_v6`. `render_scan_broad` (version 2, "breadth",
issue 18 step 4; recipe stage7) draws the same scan and adds what the foreign evaluation family showed the
segmenter had not seen: a third line that is neither curve (dash-dot, dash-dot-dot, long dash or a light
thin solid pen; labelled background) in about a third of the tracks, no dash-dot curve 2 (that is the third
line's style), thin 1-px light colour pens (as light as the grid once in grey), and more colour scans (JPEG
on colour, then grey). Its extra randomness comes from its own stream (`default_rng([seed, 18])`).
`render_scan_v3` (version 3, recipe stage10) is version 2 without the light solid third line.
`render_scan_v4` (version 4, recipe stage11) is version 1 (the shipped weights' own) with near-straight curves:
in about a third of the tracks one curve (sometimes both) varies over only 0.4-6% of the track width, as a
real log does on a scale much wider than its values (a caliper in gauge hole, a resistivity on a 0.2-2000
log scale). The foreign family fails such curves 61% of the time (curve 1 spanning < 3% of the width: 11 of
18), the segmenter taking a straight line for a grid line. Its extra randomness has its own stream
(`default_rng([seed, 19])`), so every other pixel of a version 4 scan is its version 1 scan's.
`render_scan_v5` (version 5, recipe stage24) is version 4 with rough curves: in about a third of the tracks the
pair is a window of real logs as logged (`curve_shapes.rough_pair`: the raw bank, no smoothing or resampling)
plotted at 0.5-2 image rows per sample, so a curve crosses much of the track between neighbouring rows, as a
real log printed at a compressed depth scale does. The foreign family's floor comes from such curves (a third
of its scans; the own family had 2 of 300). Its extra randomness has its own stream (`default_rng([seed, 24])`);
a rough track's later draws (grid, file type, ...) differ from its version 4 scan's, as its curves are resampled
with other numbers. Recipes stage24 and stage25 measured it (no gain on rough foreign curves, model card).
`render_scan_v6` (version 6, recipe long1) draws everything versions 3, 4 and 5 add, for a long run, and half of
its thin light pens in tints (light red, pink, light blue, ...), which stay light in grey: the foreign family's
1-px light red curve scans 29-54 grey levels under the paper (10th percentile, median) on its labelled pixels,
fainter than 97% of version 5's curves.
`render_scan_v7` (version 7, recipes stage37, stage38, stage47) is version 6 dashed as plotting programs dash: half of
its curve 2s and dash-dot third lines take a program's pattern in pen widths (PROGRAM_DASHES, PROGRAM_DASHDOTS),
and the long-dash third line (a long-dashed curve 2 with the other label) is a dash-dot. `render_scan_v8`
(version 8, recipes stage39-stage46) adds fine dotted curve 2s (FINE_DOTS, 1-1.4 px pens). Both draw their extra
choices from their own stream (`default_rng([seed, 37])`): the same tracks, curves and truth as version 6.
`render_scan_v9` (version 9, recipes stage48, stage49) is version 8 with the minor grid lines dotted in a third
of the tracks (labelled background, as every grid line): version 8 taught fine dots as curve 2 wherever they are,
and its segmenters followed the broken minor grid of 1-bit scans. Its choice has its own stream
(`default_rng([seed, 48])`): the same tracks, curves and truth as version 8.

Ground truth is exact by construction: each curve is drawn as the polyline through one centreline
point per row, in final-image coordinates (the page skew is the horizontal shear
`x_image = x_paper + skew * (y - (H - 1) / 2)` applied to curves and grid alike), so `x_frac` is read
off that polyline at rows `y_k = k * (H - 1) / 299`, as `(x + 0.5) / W` (CONVENTIONS.md). Curves
running off the scale are clipped at the track (and image) edge, and their truth with them.
"""
import concurrent.futures
import contextlib
from dataclasses import dataclass
import functools
import io
import json
import logging
from pathlib import Path
import time

import cv2
import numpy as np

from contracts import N_DEPTH
from contracts.files import atomic_write
from digitiser import curve_shapes, g4tiff, strokes
from digitiser import synth_paper as paper
from digitiser.scale import to_values
from digitiser.synth_paper import STYLES  # noqa: F401 (re-exported: synth.STYLES)


log = logging.getLogger(__name__)

HEIGHT_RANGE = (300, 4000)      # px, random sizes are log-uniform in these ranges
WIDTH_RANGE = (100, 800)
_STYLE_P = {"gray": 0.45, "color": 0.25, "bilevel": 0.25, "clean": 0.05}
_STYLE_P_BROAD = {"gray": 0.35, "color": 0.35, "bilevel": 0.25, "clean": 0.05}
P_THIRD = 0.33                  # breadth: chance a track has a third line (not a curve, labelled background)
P_NARROW = 0.33                 # version 4: chance a track has a near-straight curve
NARROW_SPAN = (0.004, 0.06)     # ... whose 5-95% span is log-uniform in this range (fractions of width)
P_ROUGH = 0.3                   # version 5: chance a track's curves are real logs as logged, at a compressed scale
P_LIGHT_PEN = 0.2               # breadth: chance one curve is a thin light pen (1-1.4 px, light colour / grey)
# light pens: BGR inks whose grey (0.299 R + 0.587 G + 0.114 B) is 76-150, e.g. pure red 76, orange 151
# (each channel is kept >= 60 under the paper's, so on a tinted paper the grey may drop to ~45); a 1-1.4 px
# anti-aliased stroke covers about half of each of its pixels, so in grey it reads about as light as the grid
_LIGHT_INKS = [(0, 0, 255), (0, 0, 230), (40, 40, 240), (0, 128, 255), (0, 170, 0), (255, 0, 255), (200, 120, 0),
               (30, 30, 200)]
# version 6 also draws tints (light red, pink, light blue, ...): light in grey as well, about as faint as a 1-px pen of
# them prints and scans (in grey 45-110 levels under the paper at full coverage, half that on a 1-px stroke's pixels)
_PASTEL_INKS = [(115, 115, 255), (180, 105, 255), (255, 170, 110), (130, 215, 130), (90, 180, 255), (230, 140, 200)]
PASTEL_CONTRAST = 45.0          # ... at least this many grey levels under the paper, so the mask never labels no ink
_EXT_P = {"gray": {"png": 0.4, "jpg": 0.4, "tif": 0.2}, "color": {"png": 0.25, "jpg": 0.75},
          "bilevel": {"tif": 1.0}, "clean": {"png": 1.0}}
MASK_COVERAGE = 0.3             # a pixel belongs to a curve when its pen covers at least this fraction
BILEVEL_COVERAGE = 0.25         # ... or, in 1-bit scans, this fraction and the pixel came out black
# Version 7: line styles as plotting programs define them, visible (on, off, ...) lengths in multiples of the pen
# width: matplotlib ("--", ":", "-."), Windows GDI pens (PS_DASH, PS_DOT, PS_DASHDOT, PS_DASHDOTDOT; px at a 1-px
# pen), ISO 128-20 (dashed, long dash, long dash-dot), Office presets (sysDash, dash, lgDash, sysDot,
# dashDot, lgDashDot, lgDashDotDot). Curve 2 takes the dashes, the third line the dash-dots.
P_PROGRAM_STYLE = 0.5           # version 7: chance curve 2 / a dash-dot third line takes a program's style
PROGRAM_DASHES = [(3.7, 1.6), (1.0, 1.65), (18, 6), (3, 3), (12, 3), (24, 3), (3, 1), (4, 3), (8, 3), (1, 1)]
PROGRAM_DASHDOTS = [(6.4, 1.6, 1, 1.6), (9, 6, 3, 6), (9, 3, 3, 3, 3, 3), (24, 3, 1, 3), (4, 3, 1, 3),
                    (8, 3, 1, 3), (8, 3, 1, 3, 1, 3)]
# Version 8: P_FINE_DOTS of curve 2s are a fine dotted line, a 1-1.4 px pen in one of FINE_DOTS (pen widths):
# matplotlib's ":" at 1 px (dots 2.65 px apart) is refused at 0% by every segmenter trained on versions 1-7, at
# 1.5 px read everywhere; versions 1-7 draw dots at least 1.8 px long and 3.3 px apart.
P_FINE_DOTS = 0.3
FINE_DOTS = [(1, 1), (1, 1.5), (1, 1.65), (1, 2), (1, 3), (2, 2)]
# Version 9: P_DOTTED_GRID of tracks draw their minor grid lines dotted (dots DOTTED_GRID_ON px long, DOTTED_GRID_OFF
# apart), labelled background: a segmenter trained on version 8 reads fine dots as curve 2 wherever they are,
# and followed the broken minor grid lines of 1-bit scans as curve 2 (own scans 246, 276: model card).
P_DOTTED_GRID = 0.3
DOTTED_GRID_ON, DOTTED_GRID_OFF = (0.8, 2.0), (1.0, 4.0)


@dataclass
class SynthScan:
    """One synthetic scan and its ground truth.

    image: HxW uint8 grayscale, or HxWx3 uint8 BGR for coloured inks; exactly what decoding `encoded` gives.
    mask: HxW uint8 in {0, 1, 2}: pixels whose ink belongs to curve 1 / curve 2 (0 in dash gaps; where the
        curves overlap, the one drawn on top wins).
    x_frac: (300, 2) float64 centreline of curve 1 and 2 at depth point k (row k * (H - 1) / 299), as a
        fraction of track width (column c's centre at (c + 0.5) / W).
    calibration: contract calibration dict (depths, names, left/right, scale, units) consistent with x_frac.
    values: (300, 2) float64 curve values in calibration units at the depth points.
    ext: "png" | "jpg" | "tif".
    encoded: the image file bytes (bi-level scans: 1-bit CCITT G4 TIFF).
    third: generator version 2 only: (H,) float64 centreline column per row of the third line (not a curve,
        background in the mask), or None where the scan has none.
    """
    image: np.ndarray
    mask: np.ndarray
    x_frac: np.ndarray
    calibration: dict
    values: np.ndarray
    ext: str
    encoded: bytes
    third: np.ndarray | None = None


def _log_uniform_int(rng, lo, hi) -> int:
    return int(round(np.exp(rng.uniform(np.log(lo), np.log(hi)))))


def _skew(look: paper.Look, h: int, w: int) -> float:
    """Horizontal shear from the page skew, capped so the page drifts at most 12 % of the width."""
    s = float(np.tan(np.radians(look.skew_deg)))
    cap = 0.12 * w / max(h - 1, 1) * 2
    return float(np.clip(s, -cap, cap))


def _centrelines(f: np.ndarray, h: int, w: int, skew: float, rng: np.random.Generator) -> np.ndarray:
    """(2, H) centreline columns per row in final-image pixel coordinates, clipped at the edges."""
    rows = np.arange(h, dtype=np.float64)
    x = np.clip(curve_shapes.resample_rows(f, h, rng) * w - 0.5, 0.0, w - 1.0)  # the pen stops at the track edge
    return np.clip(x + skew * (rows - (h - 1) / 2), 0.0, w - 1.0)          # ... the skewed page at the image edge


def _dash_pattern(pen: float, rng: np.random.Generator, dashdot: bool = True) -> np.ndarray:
    """Dash pattern [on, off, ...] in px of arc length; gaps are widened by the pen so they stay visible.
    dashdot False (generator version 2): no dash-dot, the third line's style."""
    kind = rng.choice(["dash", "long", "dot", "dashdot"], p=[0.4, 0.2, 0.25, 0.15] if dashdot else
                      [0.47, 0.235, 0.295, 0.0])
    gap = rng.uniform(2.0, 8.0) + pen
    if kind == "dash":
        return np.array([rng.uniform(4, 14), gap])
    if kind == "long":
        return np.array([rng.uniform(14, 30), gap])
    if kind == "dot":
        return np.array([rng.uniform(0.8, 2.0), rng.uniform(1.5, 5.0) + pen])
    return np.array([rng.uniform(8, 20), gap, rng.uniform(0.8, 2.0), gap])


def _program_pattern(styles: list, pen: float, rng: np.random.Generator) -> np.ndarray:
    """One of `styles` (visible lengths in pen widths) as a stroke pattern in px of arc length: the square pen
    reaches pen / 2 past each end of an 'on' stretch, so a dash is drawn pen shorter and a gap pen longer."""
    visible = np.array(styles[int(rng.integers(len(styles)))], np.float64) * pen
    visible[0::2] = np.maximum(visible[0::2] - pen, 0.5)
    visible[1::2] += pen
    return visible


def _pen_skips(h: int, rng: np.random.Generator) -> np.ndarray | None:
    """(H,) bool rows where the pen left ink; None for an unbroken stroke."""
    if rng.random() > 0.12:
        return None
    keep = np.ones(h, bool)
    n_skips = rng.poisson(h / 250) + 1
    for y, n in zip(rng.integers(0, h, n_skips), rng.integers(1, 8, n_skips)):
        keep[y:y + n] = False
    return keep


def _alpha_rows(alpha: float, floor: float, h: int, rng: np.random.Generator) -> np.ndarray:
    """(H,) float32 ink opacity along the stroke: faint strokes fade in and out, down to `floor`."""
    if alpha >= 0.8:
        return np.full(h, alpha, np.float32)
    wave = np.interp(np.arange(h), np.linspace(0, h - 1, 12), rng.uniform(0.6, 1.4, 12))
    return np.clip(alpha * wave, floor, 1.0).astype(np.float32)


def _depths(h: int, unit: str, rng: np.random.Generator) -> tuple[float, float, float]:
    """top, bottom depth and depth-line step at a plotting scale between 1:200 and 1:2000 at 200 dpi
    (3-40 px/m, 1-12 px/ft), with depth lines at least 4 px apart."""
    ppu = float(np.exp(rng.uniform(np.log(3), np.log(40)) if unit == "m" else rng.uniform(0, np.log(12))))
    steps = [0.5, 1.0, 2.0, 5.0, 10.0, 20.0] if unit == "m" else [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0]
    i = next(i for i, st in enumerate(steps) if st * ppu >= 4)
    if rng.random() < 0.3 and i + 1 < len(steps) and steps[i + 1] * ppu <= 16:
        i += 1
    top = float(np.round(rng.uniform(50, 3000), 1))
    return top, float(np.round(top + (h - 1) / ppu, 4)), steps[i]


def _draw_curves(img, x, look, rng, min_pen=1.0, pens=(None, None), dashdot=True, styles_rng=None,
                 fine_dots=False):
    """Draw both curves in random order over img (CxHxW, in place); pens[k], when not None, replaces curve
    k's random pen width (after it is drawn, so the random stream is the same); with `styles_rng` (version 7)
    curve 2 takes a plotting program's dash style P_PROGRAM_STYLE of the time (drawn from that stream); with
    `fine_dots` too (version 8) it is a fine dotted line instead P_FINE_DOTS of the time.

    Returns the mask and [(class, flat pixel indices, coverage)] in drawing order.
    """
    _, h, w = img.shape
    mask = np.zeros((h, w), np.uint8)
    drawn = []
    for k in ([0, 1] if rng.random() < 0.5 else [1, 0]):
        pen = min_pen + (4.0 - min_pen) * rng.random() ** 1.5
        pen = pen if pens[k] is None else pens[k]
        pattern = None if k == 0 else _dash_pattern(pen, rng, dashdot)
        if k == 1 and styles_rng is not None:
            if styles_rng.random() < P_PROGRAM_STYLE:
                pattern = _program_pattern(PROGRAM_DASHES, pen, styles_rng)
            if fine_dots and styles_rng.random() < P_FINE_DOTS:
                pen = float(styles_rng.uniform(1.0, 1.4))
                pattern = _program_pattern(FINE_DOTS, pen, styles_rng)
        idx, cov = strokes.stroke_pixels(x[k], w, pen, pattern=pattern, phase=rng.uniform(0, 60),
                                         keep_rows=_pen_skips(h, rng))
        alpha = _alpha_rows(look.curve_alpha[k], look.alpha_floor[k], h, rng)[idx // w]
        paper.composite_sparse(img, idx, cov * alpha, look.curve_inks[k])
        mask.ravel()[idx[cov >= MASK_COVERAGE]] = k + 1
        drawn.append((k + 1, idx, cov))
    return mask, drawn


def _light_pen(look: paper.Look, style: str, rng: np.random.Generator, pastel: bool = False
               ) -> tuple[int, float] | None:
    """Breadth: make one curve (curve 1 mostly) a thin pen in a light ink, in place on `look`; with `pastel`
    (version 6) half of them in a tint. Returns (curve index, pen width px) or None. 1-bit scans keep their
    dark inks (a light pen would not survive the threshold)."""
    if style == "bilevel" or rng.random() >= P_LIGHT_PEN:
        return None
    k = 0 if rng.random() < 0.7 else 1
    if pastel and rng.random() < 0.5:
        ink = _pastel_ink(look, rng)
    elif look.channels == 3:
        ink = np.minimum(np.array(_LIGHT_INKS[int(rng.integers(len(_LIGHT_INKS)))], np.float32), look.paper - 60.0)
    else:
        ink = np.minimum(np.full(1, rng.uniform(70, 150), np.float32), look.paper - 60.0)   # >= 60 levels under
    look.curve_inks = [ink if i == k else c for i, c in enumerate(look.curve_inks)]
    look.curve_alpha = [1.0 if i == k else a for i, a in enumerate(look.curve_alpha)]
    return k, float(rng.uniform(1.0, 1.4))


def _luminance(c: np.ndarray) -> float:
    return float(np.dot(c[::-1], [0.299, 0.587, 0.114])) if len(c) == 3 else float(c[0])


def _pastel_ink(look: paper.Look, rng: np.random.Generator) -> np.ndarray:
    """A tint (colour scans) or a light grey, darkened toward black only as far as PASTEL_CONTRAST asks."""
    if look.channels == 3:
        ink = np.array(_PASTEL_INKS[int(rng.integers(len(_PASTEL_INKS)))], np.float32)
    else:
        ink = np.full(1, rng.uniform(140, 200), np.float32)
    contrast = _luminance(look.paper) - _luminance(ink)
    if contrast < PASTEL_CONTRAST:
        ink = look.paper - (look.paper - ink) * PASTEL_CONTRAST / max(contrast, 1.0)
    return np.clip(ink, 0, 255).astype(np.float32)


def _third_pattern(kind: str, pen: float, rng: np.random.Generator) -> np.ndarray | None:
    """Dash pattern of the third line: dash-dot, dash-dot-dot, long dash with long gaps, or solid (None)."""
    gap = rng.uniform(3.0, 8.0) + pen
    dot = rng.uniform(0.8, 2.0)
    if kind == "dashdot":
        return np.array([rng.uniform(8, 24), gap, dot, gap])
    if kind == "dashdotdot":
        return np.array([rng.uniform(10, 24), gap, dot, gap, dot, gap])
    if kind == "longdash":
        return np.array([rng.uniform(24, 50), rng.uniform(10, 20) + pen])
    return None


def _third_kind(rng: np.random.Generator, allow_light: bool) -> str:
    """The third line's style. A light thin solid pen only where allowed: never in version 3, nor where it
    would not be lighter than every solid curve of the scan (bi-level, or a curve drawn with a light pen)."""
    kind = str(rng.choice(["dashdot", "dashdotdot", "longdash", "light"], p=[0.45, 0.15, 0.15, 0.25]))
    return "dashdot" if kind == "light" and not allow_light else kind


def _third_line(img, h, w, skew, look, style, rng, light_curve=False, light_third=True, styles_rng=None
                ) -> np.ndarray:
    """Breadth: draw a third line (another curve shape, not one of the two curves) over img in place, under
    the curves. Its pixels are not in the mask (background). Returns its (H,) centreline columns.
    With `styles_rng` (version 7) it is never a long dash (which is a long-dashed curve 2, labelled the other
    way), but a dash-dot, P_PROGRAM_STYLE of the time in a plotting program's style."""
    f3 = curve_shapes.sample_pair(rng, h).f[int(rng.integers(2))][None]
    x3 = _centrelines(f3, h, w, skew, rng)[0]
    kind = _third_kind(rng, allow_light=light_third and style != "bilevel" and not light_curve)
    light = kind == "light"
    pen = float(rng.uniform(1.0, 1.8)) if light else 1.0 + 2.5 * rng.random() ** 1.5
    pattern = _third_pattern(kind, pen, rng)
    if styles_rng is not None and kind != "light" and (kind == "longdash" or styles_rng.random() < P_PROGRAM_STYLE):
        pattern = _program_pattern(PROGRAM_DASHDOTS, pen, styles_rng)
    idx, cov = strokes.stroke_pixels(x3, w, pen, pattern=pattern, phase=rng.uniform(0, 60))
    if look.channels == 3:
        ink = np.array(_CURVE_INKS_ALL[int(rng.integers(len(_CURVE_INKS_ALL)))], np.float32)
    else:
        ink = np.full(1, rng.uniform(0, 110 if style != "bilevel" else 60), np.float32)
    alpha = rng.uniform(0.35, 0.6) if light else rng.uniform(0.8, 1.0)
    paper.composite_sparse(img, idx, cov * alpha, ink)
    return x3


_CURVE_INKS_ALL = paper._CURVE_INKS + _LIGHT_INKS


def _encode(img: np.ndarray, style: str, drawn, mask, rng) -> tuple[np.ndarray, np.ndarray, str, bytes]:
    """Final image, mask, extension and file bytes of a uint8 HxW / HxWx3 image; bi-level scans are
    thresholded here and their mask keeps only curve pixels that came out black."""
    ext = str(rng.choice(list(_EXT_P[style]), p=list(_EXT_P[style].values())))
    if style == "bilevel":
        ink = img < rng.uniform(120, 180)
        mask = np.zeros_like(mask)
        for k, idx, cov in drawn:
            sel = idx[cov >= BILEVEL_COVERAGE]
            mask.ravel()[sel[ink.ravel()[sel]]] = k
        return np.where(ink, 0, 255).astype(np.uint8), mask, ext, g4tiff.write_g4_tiff(ink)
    if ext == "jpg":
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 92))])
        assert ok, "JPEG encoding failed"
        return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED), mask, ext, buf.tobytes()
    params = [cv2.IMWRITE_PNG_COMPRESSION, 1] if ext == "png" else \
        [cv2.IMWRITE_TIFF_COMPRESSION, cv2.IMWRITE_TIFF_COMPRESSION_LZW]
    ok, buf = cv2.imencode("." + ext, img, params)
    assert ok, f"{ext} encoding failed"
    return img, mask, ext, buf.tobytes()


@dataclass(frozen=True)
class _Version:
    """What a generator version adds to version 1 (the module doc says why each exists)."""
    breadth: bool = False        # a third line, thin light pens, more colour (versions 2, 3, 6)
    light_third: bool = True     # with breadth: the third line may be a light thin solid pen (version 2 only)
    narrow: bool = False         # near-straight curves (versions 4-6)
    rough: bool = False          # real logs as logged at a compressed scale (versions 5, 6)
    pastel: bool = False         # half the light pens in tints (version 6)
    program_styles: bool = False  # plotting programs' dash styles; no long-dash third line (version 7)
    fine_dots: bool = False      # with program_styles: fine dotted curve 2s (version 8)
    dotted_grid: bool = False    # minor grid lines dotted in P_DOTTED_GRID of the tracks (version 9)


VERSIONS = {1: _Version(), 2: _Version(breadth=True), 3: _Version(breadth=True, light_third=False),
            4: _Version(narrow=True), 5: _Version(narrow=True, rough=True),
            6: _Version(breadth=True, light_third=False, narrow=True, rough=True, pastel=True),
            7: _Version(breadth=True, light_third=False, narrow=True, rough=True, pastel=True, program_styles=True),
            8: _Version(breadth=True, light_third=False, narrow=True, rough=True, pastel=True, program_styles=True,
                        fine_dots=True),
            9: _Version(breadth=True, light_third=False, narrow=True, rough=True, pastel=True, program_styles=True,
                        fine_dots=True, dotted_grid=True)}


def render_scan(seed: int, *, height: int | None = None, width: int | None = None,
                style: str | None = None, version: int = 1) -> SynthScan:
    """Render one synthetic scan; deterministic for its arguments.

    Args:
        seed: any non-negative int.
        height, width: image size in px; random (log-uniform in HEIGHT_RANGE / WIDTH_RANGE) when None.
        style: one of STYLES ("gray", "color", "bilevel", "clean"); random when None.
        version: generator version, a key of VERSIONS (module doc); each is frozen, byte for byte.
    """
    if version not in VERSIONS:
        raise ValueError(f"generator version {version!r} unknown: one of {sorted(VERSIONS)}")
    v = VERSIONS[version]
    rng = np.random.default_rng(seed)
    rng_b = np.random.default_rng([seed, 18]) if v.breadth else None
    style_p = _STYLE_P_BROAD if v.breadth else _STYLE_P
    style = str(rng.choice(list(style_p), p=list(style_p.values()))) if style is None else style
    h = height if height is not None else _log_uniform_int(rng, *HEIGHT_RANGE)
    w = width if width is not None else _log_uniform_int(rng, *WIDTH_RANGE)
    if h < 32 or w < 16:
        raise ValueError(f"scan size {h}x{w} too small: need height >= 32 and width >= 16 px")
    look = paper.sample_look(style, rng)
    pens = [None, None]
    light = _light_pen(look, style, rng_b, v.pastel) if v.breadth else None
    if light is not None:
        pens[light[0]] = light[1]
    pair = curve_shapes.sample_pair(rng, h)
    if v.rough:
        pair = _rough_curves(pair, h, np.random.default_rng([seed, 24]))
    if v.narrow:
        _narrow_curves(pair.f, np.random.default_rng([seed, 19]))
    skew = _skew(look, h, w)
    x = _centrelines(pair.f, h, w, skew, rng)
    top, bottom, step = _depths(h, pair.depth_unit, rng)
    hlines = paper.depth_lines(top, bottom, step, h)
    img = paper.paper(h, w, look, rng)
    grid = paper.grid_layer(h, w, paper.vertical_grid(pair.curves[0], pair.log_grid, rng), hlines, skew,
                            _grid_dots(np.random.default_rng([seed, 48])) if v.dotted_grid else None)
    text = paper.text_layer(h, w, look, hlines, rng, grid)
    paper.composite(img, grid, look.grid_ink, look.grid_alpha)
    if look.n_notes or look.depth_numbers:
        paper.composite_sparse(img, *paper.sparse(text), look.text_ink)
    third = None
    rng_styles = np.random.default_rng([seed, 37]) if v.program_styles else None
    if v.breadth and rng_b.random() < P_THIRD:
        third = _third_line(img, h, w, skew, look, style, rng_b, light_curve=light is not None,
                            light_third=v.light_third, styles_rng=rng_styles)
    mask, drawn = _draw_curves(img, x, look, rng, 1.5 if style == "bilevel" else 1.0, pens, dashdot=not v.breadth,
                               styles_rng=rng_styles, fine_dots=v.fine_dots)
    if look.speckle > 0:
        idx, a = paper.sparse(paper.speckle(h, w, look, rng))
        paper.composite_sparse(img, idx, a * 0.9, np.zeros(look.channels, np.float32))
    image, mask, ext, encoded = _encode(paper.scan_effects(img, look, rng), style, drawn, mask, rng)

    y_k = np.arange(N_DEPTH) * (h - 1) / (N_DEPTH - 1)
    x_frac = np.stack([(np.interp(y_k, np.arange(h), xk) + 0.5) / w for xk in x], axis=1)
    calibration = {"top_depth": top, "bottom_depth": bottom, "depth_unit": pair.depth_unit,
                   "curves": pair.curves}
    values = np.stack([to_values(x_frac[:, k], c["left"], c["right"], c.get("scale", "linear"))
                       for k, c in enumerate(pair.curves)], axis=1)
    return SynthScan(image, mask, x_frac, calibration, values, ext, encoded, third)


def _grid_dots(rng: np.random.Generator) -> tuple[float, float, float] | None:
    """Version 9: (on, off, phase) px of a dotted minor grid in P_DOTTED_GRID of the tracks, else None."""
    if rng.random() >= P_DOTTED_GRID:
        return None
    on, off = rng.uniform(*DOTTED_GRID_ON), rng.uniform(*DOTTED_GRID_OFF)
    return on, off, rng.uniform(0, on + off)


def _narrow_curves(f: np.ndarray, rng: np.random.Generator) -> None:
    """Version 4: squeeze one curve (a fifth of the time both) about its median to a 5-95% span drawn from
    NARROW_SPAN, keeping it inside the track (in place)."""
    if rng.random() >= P_NARROW:
        return
    ks = [0, 1] if rng.random() < 0.2 else [int(rng.integers(2))]
    for k in ks:
        mid = float(np.median(f[k]))
        span = max(float(np.percentile(f[k], 95) - np.percentile(f[k], 5)), 1e-6)
        target = float(np.exp(rng.uniform(*np.log(NARROW_SPAN))))
        f[k] = np.clip(mid, 0.03, 0.97) + (f[k] - mid) * min(1.0, target / span)


def _rough_curves(pair: curve_shapes.CurvePair, h: int, rng: np.random.Generator) -> curve_shapes.CurvePair:
    """Version 5: in P_ROUGH of the tracks, the pair is replaced by one from the raw bank (`rough_pair`)."""
    if rng.random() >= P_ROUGH:
        return pair
    return curve_shapes.rough_pair(rng, h) or pair


# Each version by name, as a training recipe's `data_source` names it ("digitiser.synth:render_scan_v6").
def render_scan_broad(seed: int, **kw) -> SynthScan:
    """Generator version 2 ("breadth", recipe stage7)."""
    return render_scan(seed, **kw, version=2)


def render_scan_v3(seed: int, **kw) -> SynthScan:
    """Generator version 3 (recipe stage10): version 2 whose third line is never a light thin solid pen.
    Version 2 taught opposite labels for a faint solid line (a light third line is background, a light curve
    pen is a curve), and the stage-7 weights refused faint solid curves."""
    return render_scan(seed, **kw, version=3)


def render_scan_v4(seed: int, **kw) -> SynthScan:
    """Generator version 4 (recipe stage11): version 1 with near-straight curves in a third of the tracks."""
    return render_scan(seed, **kw, version=4)


def render_scan_v5(seed: int, **kw) -> SynthScan:
    """Generator version 5 (recipe stage24): version 4 with rough curves in P_ROUGH of the tracks."""
    return render_scan(seed, **kw, version=5)


def render_scan_v6(seed: int, **kw) -> SynthScan:
    """Generator version 6 (recipe long1): versions 3, 4 and 5 at once, half of its light pens in tints."""
    return render_scan(seed, **kw, version=6)


def render_scan_v7(seed: int, **kw) -> SynthScan:
    """Generator version 7 (recipe stage37): version 6 with plotting programs' dash styles for curve 2 and the
    third line, and no long-dash third line (see PROGRAM_DASHES)."""
    return render_scan(seed, **kw, version=7)


def render_scan_v8(seed: int, **kw) -> SynthScan:
    """Generator version 8 (recipes stage39, stage40): version 7 with fine dotted curve 2s (FINE_DOTS)."""
    return render_scan(seed, **kw, version=8)


def render_scan_v9(seed: int, **kw) -> SynthScan:
    """Generator version 9 (recipes stage48, stage49): version 8 with dotted minor grids in P_DOTTED_GRID of tracks."""
    return render_scan(seed, **kw, version=9)


def digitisable_scans(digitiser, n: int, *, tries: int, height: int, width: int, style: str = "clean") -> list:
    """The first n rendered scans (seeds 0, 1, ... tries - 1) in which `digitiser` (a predictor.Digitiser)
    finds both curves: for tests and benchmarks that measure serving, not how far the model generalises.
    Returns fewer than n when `tries` seeds are not enough; the caller says so."""
    import contracts
    from digitiser.imageio import decode_scan
    from digitiser.tracing import CurveNotFound
    found = []
    for seed in range(tries):
        scan = render_scan(seed, height=height, width=width, style=style)
        decoded = decode_scan(scan.encoded)
        try:
            digitiser.finish(decoded, contracts.Calibration.from_dict(scan.calibration),
                             digitiser.segment_scans([decoded])[0])
        except CurveNotFound:
            continue
        found.append(scan)
        if len(found) == n:
            break
    return found


def scan_seed(seed: int, i: int) -> int:
    """Seed of scan i of a data set made with `seed` (independent streams via SeedSequence)."""
    if seed < 0 or i < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, i={i}")
    return int(np.random.SeedSequence([seed, i]).generate_state(1, np.uint64)[0])


def _write_scan(root: Path, seed: int, version: int, i: int) -> str:
    """Render scan i of the data set and write its three files; returns the image path."""
    scan = render_scan(scan_seed(seed, i), version=version)
    stem = f"scan_{i:05d}"
    buf = io.BytesIO()
    np.savez_compressed(buf, mask=scan.mask, x_frac=scan.x_frac, values=scan.values)
    atomic_write(root / f"{stem}.truth.npz", buf.getvalue())
    atomic_write(root / f"{stem}.json", json.dumps(scan.calibration, indent=2).encode())
    image_path = root / f"{stem}.{scan.ext}"
    atomic_write(image_path, scan.encoded)   # last: an image on disk always has its sidecar and truth
    return str(image_path)


def write_dataset(out: str, n: int, seed: int, workers: int = 1, version: int = 1) -> list[str]:
    """Render n scans of generator `version` into folder `out` (created if needed).

    Writes scan_{i:05d}.{ext} (image), scan_{i:05d}.json (calibration sidecar) and scan_{i:05d}.truth.npz
    (mask HxW uint8, x_frac (300, 2) float64, values (300, 2) float64); scan i uses scan_seed(seed, i),
    so the files are the same whatever `workers` (processes rendering in parallel) is.
    Returns the image paths, in order.
    """
    if n < 0 or workers < 1:
        raise ValueError(f"need n >= 0 and workers >= 1, got n={n}, workers={workers}")
    if version not in VERSIONS:
        raise ValueError(f"generator version {version!r} unknown: one of {sorted(VERSIONS)}")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    write = functools.partial(_write_scan, root, seed, version)
    paths, t0, last = [], time.monotonic(), time.monotonic()
    with contextlib.ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(concurrent.futures.ProcessPoolExecutor(workers))
            results = pool.map(write, range(n), chunksize=4)
        else:
            results = map(write, range(n))
        for i, path in enumerate(results):
            paths.append(path)
            if time.monotonic() - last > 10 or i + 1 == n:
                last = time.monotonic()
                log.info("synth: %d/%d scans in %s (%.1f scans/s)", i + 1, n, root, (i + 1) / (last - t0))
    return paths
