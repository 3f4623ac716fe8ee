"""Anti-aliased pen strokes of a curve x(y) with exact geometry: solid, dashed, dotted or broken.

A curve is given as one centreline x position per image row (pixel coordinates: column c's centre is
at x = c, row r's centre at y = r) and is drawn as the straight polyline through (x[r], r). The pen is
a `width` x `width` px square swept along the polyline, so the stroke is symmetric about the
centreline, horizontal runs (bed boundaries) keep the full width, and coverage is anti-aliased
horizontally (exact interval overlap) and vertically (fractional rows at stroke and dash ends).
"""
import numpy as np

_STEP = 0.5   # px of arc length between densified centreline points


def _densify(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points every <= 0.5 px along the polyline (x[r], r): returns xs, ys, arc length s (all (P,) float64)."""
    dx = np.diff(x)
    seg = np.hypot(dx, 1.0)
    n_sub = np.maximum(np.ceil(seg / _STEP).astype(np.int64), 1)
    idx = np.repeat(np.arange(len(dx)), n_sub)
    starts = np.cumsum(n_sub) - n_sub
    frac = (np.arange(len(idx)) - starts[idx]) / n_sub[idx]
    xs = np.append(x[idx] + frac * dx[idx], x[-1])
    ys = np.append(idx + frac, len(x) - 1.0)
    s = np.append(0.0, np.cumsum(np.repeat(seg / n_sub, n_sub)))
    return xs, ys, s


def _pattern_on(s: np.ndarray, pattern: np.ndarray | None, phase: float) -> np.ndarray:
    """True where arc length `s` falls in an 'on' segment of the dash pattern [on, off, on, off, ...] (px)."""
    if pattern is None:
        return np.ones(len(s), bool)
    cum = np.cumsum(pattern)
    seg = np.searchsorted(cum, (s + phase) % cum[-1], side="right")
    return seg % 2 == 0


def _row_intervals(xs, ys, run, half, height):
    """Per (dash run, row): covered x interval and vertical weight of a square pen of half-width `half`.

    Returns rows, a, b, weight (each (M,)): the pen covers [a, b] (px) of row `rows` with weight in (0, 1].
    """
    n_off = int(np.ceil(2 * half)) + 1
    base = np.floor(ys - half + 0.5).astype(np.int64)
    rows = (base[:, None] + np.arange(n_off)[None, :]).ravel()
    yp = np.repeat(ys, n_off)
    wy = np.clip(np.minimum(rows + 0.5, yp + half) - np.maximum(rows - 0.5, yp - half), 0.0, 1.0)
    xp = np.repeat(xs, n_off)
    keep = (wy > 1e-6) & (rows >= 0) & (rows < height)
    rows, wy, xp, rp = rows[keep], wy[keep], xp[keep], np.repeat(run, n_off)[keep]
    order = np.argsort(rp * height + rows, kind="stable")
    rows, wy, xp, key = rows[order], wy[order], xp[order], (rp * height + rows)[order]
    start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    strong = wy >= 0.5   # points whose pen box covers at least half of the row define its extent
    lo = np.minimum.reduceat(np.where(strong, xp, np.inf), start)
    hi = np.maximum.reduceat(np.where(strong, xp, -np.inf), start)
    weak = ~np.isfinite(lo)
    lo[weak] = np.minimum.reduceat(xp, start)[weak]
    hi[weak] = np.maximum.reduceat(xp, start)[weak]
    return rows[start], lo - half, hi + half, np.maximum.reduceat(wy, start)


def _rasterise(rows, a, b, weight, height, width) -> tuple[np.ndarray, np.ndarray]:
    """Sparse coverage of row intervals [a, b] (px): exact horizontal pixel overlap times weight.

    Returns flat pixel indices (row * width + column, sorted, unique) and float32 coverage in (0, 1].
    """
    a, b = np.clip(a, -0.5, width - 0.5), np.clip(b, -0.5, width - 0.5)
    ca = np.floor(a + 0.5).astype(np.int64)
    n = np.minimum(np.floor(b + 0.5).astype(np.int64), width - 1) - ca + 1
    idx = np.repeat(np.arange(len(ca)), n)
    cols = ca[idx] + np.arange(len(idx)) - np.repeat(np.cumsum(n) - n, n)
    overlap = np.minimum(cols + 0.5, b[idx]) - np.maximum(cols - 0.5, a[idx])
    vals = (np.clip(overlap, 0.0, 1.0) * weight[idx]).astype(np.float32)
    flat = rows[idx] * width + cols
    # intervals of one curve on one row rarely meet (only at dash ends): keep the larger coverage
    order = np.lexsort((vals, flat))
    flat, vals = flat[order], vals[order]
    last = np.r_[flat[1:] != flat[:-1], True]
    keep = last & (vals > 0)
    return flat[keep], vals[keep]


def stroke_pixels(x: np.ndarray, width: int, pen: float, *, pattern: np.ndarray | None = None,
                  phase: float = 0.0, keep_rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Ink coverage of one curve's stroke, sparse.

    Args:
        x: (H,) float64 centreline column per image row, pixel coordinates (column c's centre at c).
        width: image width W in pixels.
        pen: stroke width in px (1 to 4 typical).
        pattern: dash pattern [on, off, on, off, ...] in px of arc length; None draws a solid line.
        phase: arc-length offset (px) into the pattern at the top row.
        keep_rows: (H,) bool, False where the pen skipped (broken stroke); None keeps every row.
    Returns:
        flat indices (row * W + column, int64, sorted, unique) of the inked pixels and their float32
        coverage in (0, 1] (fraction of the pixel under the pen).
    """
    height = len(x)
    assert height >= 2, "a stroke needs at least two rows"
    xs, ys, s = _densify(np.asarray(x, np.float64))
    on = _pattern_on(s, pattern, phase)
    if keep_rows is not None:
        on &= keep_rows[np.clip(np.rint(ys).astype(np.int64), 0, height - 1)]
    if not on.any():
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    run = np.cumsum(np.r_[on[0], on[1:] & ~on[:-1]])[on]
    rows, a, b, weight = _row_intervals(xs[on], ys[on], run, pen / 2.0, height)
    return _rasterise(rows, a, b, weight, height, width)


def stroke_coverage(x: np.ndarray, width: int, pen: float, **kw) -> np.ndarray:
    """Dense HxW float32 coverage in [0, 1] of `stroke_pixels(x, width, pen, **kw)`."""
    idx, vals = stroke_pixels(x, width, pen, **kw)
    cov = np.zeros((len(x), width), np.float32)
    cov.ravel()[idx] = vals
    return cov
