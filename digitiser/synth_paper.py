"""Paper, grid, annotations and scanner effects for synthetic well-log tracks.

Images here are planar float32 CxHxW (C = 1 grayscale or 3 BGR) in [0, 255], so every channel is
contiguous; layers are HxW uint8 opacity maps (255 = full ink) or sparse (flat index, opacity) pairs.
Geometry is in final-image pixel coordinates (column c's centre at x = c, row r's at y = r); the page
skew is a horizontal shear `x_image = x_paper + skew * (y - (H - 1) / 2)`, the same transform the
curves get, so the grid stays registered with them.
"""
from dataclasses import dataclass

import cv2
import numpy as np

STYLES = ("gray", "color", "bilevel", "clean")
_SHIFT = 4                      # cv2 fixed-point bits for sub-pixel line positions
_PAPERS = [(245, 245, 245), (215, 238, 248), (222, 240, 226), (200, 238, 250), (240, 232, 225)]
_GRID_INKS = [(40, 130, 240), (60, 80, 220), (90, 160, 90), (170, 120, 80), (120, 120, 120), (40, 40, 40)]
_CURVE_INKS = [(20, 20, 20), (150, 50, 20), (30, 30, 190), (40, 130, 30), (110, 30, 10), (120, 30, 120),
               (105, 105, 105)]
_WORDS = ["GR", "ILD", "SFLU", "RHOB", "NPHI", "CALI", "SP", "DT", "CSG SHOE", "TD", "REPEAT SECTION",
          "MAIN PASS", "9 5/8 CSG", "FILE 3", "SAND", "SHALE", "LIME", "CORE #2", "DST 1", "LOGGED 12-MAR-78",
          "SCALE CHANGE", "x10", "BACKUP", "TIE IN", "RUN 2", "FLUSHED", "MUD CAKE", "WASHOUT", "KB 34.5"]
_FONTS = [cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_PLAIN, cv2.FONT_HERSHEY_DUPLEX,
          cv2.FONT_HERSHEY_COMPLEX_SMALL, cv2.FONT_HERSHEY_TRIPLEX]


@dataclass
class Look:
    """Everything random about how one scan looks (not what it shows)."""
    channels: int
    paper: np.ndarray            # (C,) float32 paper colour
    paper_var: float             # amplitude of low-frequency paper shading (grey levels)
    grid_ink: np.ndarray         # (C,) float32
    grid_alpha: float            # opacity of the heaviest grid lines
    curve_inks: list             # two (C,) float32 inks, curve 1 then curve 2
    curve_alpha: list            # two floats: ink opacity (below 0.8: a faint, fading stroke)
    alpha_floor: list            # two floats: least opacity that still shows >= 50 grey levels
    text_ink: np.ndarray         # (C,) float32
    blur: float                  # Gaussian sigma in px, 0 = none
    noise: float                 # scanner noise sigma in grey levels
    speckle: float               # dark specks per pixel
    n_notes: int                 # annotations crossing the track
    depth_numbers: bool
    skew_deg: float


def _grey(rng, lo, hi, c):
    return np.full(c, rng.uniform(lo, hi), np.float32)


def sample_look(style: str, rng: np.random.Generator) -> Look:
    """Random inks, paper and degradations for one of STYLES."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}: use one of {STYLES} or None for a random one")
    clean = style == "clean"
    if style == "color":
        inks = [np.array(_CURVE_INKS[i], np.float32) for i in rng.integers(len(_CURVE_INKS), size=2)]
        if rng.random() < 0.3:
            inks = [np.array(_CURVE_INKS[0], np.float32)] * 2
        paper = np.array(_PAPERS[int(rng.integers(len(_PAPERS)))], np.float32)
        grid = np.array(_GRID_INKS[int(rng.integers(len(_GRID_INKS)))], np.float32)
        text = np.array(_CURVE_INKS[int(rng.integers(len(_CURVE_INKS)))], np.float32)
    else:
        c, dark = 1, style == "bilevel"      # 1-bit scans: inks dark enough to survive the threshold
        paper = _grey(rng, 235, 252, c) if dark else _grey(rng, 195, 250, c)
        inks = [_grey(rng, 0, 60, c), _grey(rng, 60, 110, c) if rng.random() < 0.3 and not dark
                else _grey(rng, 0, 60, c)]
        grid = _grey(rng, 30, 110, c) if dark else _grey(rng, 40, 150, c)
        text = _grey(rng, 0, 90, c)
    # faint strokes fade, but keep >= 50 grey levels of contrast so the mask never labels invisible ink
    floor = [min(1.0, 50.0 / max(1.0, float(np.max(paper - ink)))) for ink in inks]
    faint = [rng.random() < 0.12 and not clean for _ in range(2)]
    return Look(
        channels=len(paper), paper=paper, paper_var=0.0 if clean else rng.uniform(0, 8),
        grid_ink=grid, grid_alpha=rng.uniform(0.8 if style == "bilevel" else 0.5, 1.0),
        curve_inks=inks, curve_alpha=[max(lo, rng.uniform(0.4, 0.7)) if f else max(lo, rng.uniform(0.8, 1.0))
                                      for f, lo in zip(faint, floor)],
        alpha_floor=floor,
        text_ink=text,
        blur=0.0 if clean or rng.random() < 0.3 else rng.uniform(0.3, 0.6 if style == "bilevel" else 0.9),
        noise=0.0 if clean else rng.uniform(0.5, 7.0),
        speckle=0.0 if clean or rng.random() < 0.4 else 10 ** rng.uniform(-5.5, -3.5),
        n_notes=0 if clean else int(rng.poisson(1.2)),
        depth_numbers=not clean and rng.random() < 0.5,
        skew_deg=0.0 if clean or rng.random() < 0.4 else rng.uniform(-1.0, 1.0),
    )


def paper(h: int, w: int, look: Look, rng: np.random.Generator) -> np.ndarray:
    """Blank paper CxHxW float32: tint with low-frequency shading (uneven paper, scanner lamp)."""
    shade = np.zeros((h, w), np.float32)
    if look.paper_var > 0:
        coarse = rng.standard_normal((h // 96 + 2, w // 96 + 2)).astype(np.float32) * look.paper_var
        shade = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.stack([shade + c for c in look.paper])


def vertical_grid(curve: dict, log_grid: bool, rng: np.random.Generator) -> list[tuple[float, float]]:
    """Vertical grid lines as (fraction of track width, weight in (0, 1]): edges and majors heavy.

    Linear tracks get 5 to 20 divisions with every 2nd, 5th or 10th line heavier; log tracks get
    lines at 1..9 x 10^k with decade lines heavy, from curve 1's scale.
    """
    lines = [(0.0, 1.0), (1.0, 1.0)]
    if log_grid:
        lo, hi = np.log10(curve["left"]), np.log10(curve["right"])
        lo, hi = min(lo, hi), max(lo, hi)
        for k in range(int(np.floor(lo)), int(np.ceil(hi)) + 1):
            for m in range(1, 10):
                f = (np.log10(m) + k - lo) / (hi - lo)
                if 1e-6 < f < 1 - 1e-6:
                    lines.append((f, 0.9 if m == 1 else 0.45))
        return lines
    n = int(rng.choice([5, 6, 8, 10, 10, 10, 12, 15, 20]))
    major = int(rng.choice([d for d in (2, 5, 10) if n % d == 0] or [n]))
    for i in range(1, n):
        lines.append((i / n, 0.9 if i % major == 0 else 0.45))
    return lines


def depth_lines(top: float, bottom: float, step: float, h: int) -> list[tuple[float, float, str]]:
    """Horizontal depth lines (row y, weight, label): every `step`, heavier every 5th, labelled every 10th."""
    scale = (h - 1) / (bottom - top)
    out = []
    for i in range(int(np.ceil(top / step)), int(np.floor(bottom / step)) + 1):
        y = (i * step - top) * scale
        weight = 1.0 if i % 10 == 0 else 0.75 if i % 5 == 0 else 0.35
        out.append((y, weight, f"{i * step:g}" if i % 10 == 0 else ""))
    return out


def _line(layer, p0, p1, value):
    s = 1 << _SHIFT
    cv2.line(layer, (int(round(p0[0] * s)), int(round(p0[1] * s))), (int(round(p1[0] * s)), int(round(p1[1] * s))),
             int(value), 1, cv2.LINE_AA, _SHIFT)


def dot_coverage(n: int, on: float, off: float, phase: float) -> np.ndarray:
    """(n,) float32: the share of each pixel [i, i + 1) that a dotted line's dots ([k (on + off) + phase,
    ... + on)) cover, along the line."""
    period = on + off
    i = np.arange(n, dtype=np.float64)[:, None]
    starts = (np.arange(-1, n / period + 2) * period + phase % period)[None]
    return np.clip(np.minimum(i + 1, starts + on) - np.maximum(i, starts), 0, 1).sum(axis=1).astype(np.float32)


def grid_layer(h, w, vlines, hlines, skew, dots=None) -> np.ndarray:
    """Grid opacity HxW uint8: vertical lines sheared with the page, horizontal depth lines. dots: (on, off, phase)
    px draws the minor lines (vertical weight < 0.9, depth lines < 0.75) dotted, as many printed logs do, each dot
    as dark as a major line."""
    layer = np.zeros((h, w), np.uint8)
    if dots is not None:
        minor = grid_layer(h, w, [v for v in vlines if v[1] < 0.9], [t for t in hlines if t[1] < 0.75], skew)
        major = grid_layer(h, w, [v for v in vlines if v[1] >= 0.9], [t for t in hlines if t[1] >= 0.75], skew)
        rows, cols = dot_coverage(h, *dots), dot_coverage(w, *dots)
        across = np.zeros((h, w), bool)     # a minor depth line's pixels are dotted along the row, the rest down
        for y, weight, _ in hlines:
            if weight < 0.75:
                across[max(0, int(y) - 1):int(y) + 3] = True
        dotted = 2.0 * minor * np.where(across, cols[None, :], rows[:, None])   # dots as dark as a major line
        return np.maximum(major, np.clip(np.round(dotted), 0, 255).astype(np.uint8))
    yc = (h - 1) / 2
    for y, weight, _ in sorted(hlines, key=lambda t: t[1]):
        _line(layer, (-2, y), (w + 1, y), 255 * weight)
        if weight == 1.0:
            _line(layer, (-2, y + 0.8), (w + 1, y + 0.8), 255)
    for f, weight in sorted(vlines, key=lambda t: t[1]):
        x = min(max(f * w - 0.5, 0.0), w - 1.0)
        top, bottom = (x - skew * yc, -1.0), (x + skew * (h + 1 - yc), h + 1.0)
        _line(layer, top, bottom, 255 * weight)
        if weight >= 0.9:   # heavy lines are two strokes wide
            off = 0.8 if x < w - 1 else -0.8
            _line(layer, (top[0] + off, top[1]), (bottom[0] + off, bottom[1]), 255 * weight)
    return layer


def text_layer(h, w, look: Look, hlines, rng: np.random.Generator, grid: np.ndarray) -> np.ndarray:
    """Annotations and depth numbers crossing the track, opacity HxW uint8. Clears `grid` under
    depth-number label boxes (in place), as printed logs leave a gap in the grid for them."""
    layer = np.zeros((h, w), np.uint8)
    if look.depth_numbers:
        font, scale = _FONTS[int(rng.integers(len(_FONTS)))], rng.uniform(0.3, 0.7)
        x_at = rng.uniform(0.02, 0.7)
        boxed = rng.random() < 0.5
        for y, _, label in hlines:
            if not label:
                continue
            (tw, th), _ = cv2.getTextSize(label, font, scale, 1)
            x0, y0 = int(x_at * w), int(y + th / 2)
            if boxed:
                grid[max(0, y0 - th - 2):y0 + 3, max(0, x0 - 2):x0 + tw + 2] = 0
            cv2.putText(layer, label, (x0, y0), font, scale, 255, 1, cv2.LINE_AA)
    for _ in range(look.n_notes):
        words = str(rng.choice(_WORDS)) if rng.random() < 0.7 else str(int(rng.integers(1, 9999)))
        font, scale = _FONTS[int(rng.integers(len(_FONTS)))], rng.uniform(0.35, 1.1)
        thick = int(rng.integers(1, 3))
        if rng.random() < 0.25:   # written along the track
            (tw, th), base = cv2.getTextSize(words, font, scale, thick)
            patch = np.zeros((th + base + 4, tw + 4), np.uint8)
            cv2.putText(patch, words, (2, th + 2), font, scale, 255, thick, cv2.LINE_AA)
            patch = np.rot90(patch, int(rng.choice([1, 3])))
            y0, x0 = int(rng.integers(0, max(1, h - patch.shape[0]))), int(rng.integers(0, max(1, w - patch.shape[1])))
            sub = layer[y0:y0 + patch.shape[0], x0:x0 + patch.shape[1]]
            np.maximum(sub, patch[:sub.shape[0], :sub.shape[1]], out=sub)
        else:
            org = (int(rng.integers(-20, max(1, w - 20))), int(rng.integers(10, h)))
            cv2.putText(layer, words, org, font, scale, 255, thick, cv2.LINE_AA)
    return layer


def composite(img: np.ndarray, layer: np.ndarray, ink: np.ndarray, alpha: float) -> None:
    """Lay ink over img (CxHxW, in place) through a dense HxW uint8 opacity layer times alpha."""
    a = layer.astype(np.float32)
    a *= np.float32(alpha / 255.0)
    for plane, c in zip(img, ink):
        t = np.float32(c) - plane
        t *= a
        plane += t


def composite_sparse(img: np.ndarray, idx: np.ndarray, a: np.ndarray, ink: np.ndarray) -> None:
    """Lay ink over img (CxHxW, in place) at flat pixel indices idx with opacities a (float32 in [0, 1])."""
    for plane, c in zip(img.reshape(img.shape[0], -1), ink):
        p = plane[idx]
        plane[idx] = p + (np.float32(c) - p) * a


def sparse(layer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(flat indices, float32 opacity in (0, 1]) of the nonzero pixels of an HxW uint8 layer."""
    idx = np.flatnonzero(layer)
    return idx, layer.ravel()[idx].astype(np.float32) / 255.0


def speckle(h, w, look: Look, rng: np.random.Generator) -> np.ndarray:
    """Dust and specks on the scanner glass, opacity HxW uint8 (lies over everything)."""
    layer = np.zeros((h, w), np.uint8)
    n = rng.poisson(look.speckle * h * w)
    for x, y, r in zip(rng.integers(0, w, n), rng.integers(0, h, n), rng.choice([0, 0, 1, 1, 2], n)):
        cv2.circle(layer, (int(x), int(y)), int(r), int(rng.integers(120, 256)), -1, cv2.LINE_AA)
    return layer


def scan_effects(img: np.ndarray, look: Look, rng: np.random.Generator) -> np.ndarray:
    """Optics and sensor on a CxHxW float32 image: blur, then noise; returns uint8 HxW or HxWx3."""
    c, h, w = img.shape
    if look.noise > 0:
        tile = rng.standard_normal((min(h, 256), w), dtype=np.float32) * look.noise   # noise rows recycled
        rows = (np.arange(h) + int(rng.integers(tile.shape[0]))) % tile.shape[0]
        noise = tile[rows]
    out = []
    for plane in img:
        if look.blur > 0:
            plane = cv2.GaussianBlur(plane, (0, 0), look.blur)
        if look.noise > 0:
            plane += noise
        out.append(cv2.convertScaleAbs(plane))   # round and saturate to uint8
    return out[0] if c == 1 else cv2.merge(out)
