"""Segmenter class probabilities -> curve positions on the 300-point depth grid (plain numpy).

Per curve class c (1 = solid curve, 2 = dashed/dotted curve), vectorised over rows:

1. Runs: maximal horizontal runs of pixels with ``probs[c] >= min_prob`` in each row; runs of one row closer
   than ``merge_px`` are merged (holes in an anti-aliased stroke). A run's centre is the probability-weighted
   centroid over the run widened by one pixel on each side (so the anti-aliased edges below the threshold count
   symmetrically), in pixel units with the pixel-centre convention: column ``c`` sits at ``c + 0.5``.
2. Tracklets: runs in consecutive rows that touch (8-connectivity) and are each other's only touching run are
   chained. A junction (a noise blob touching the stroke, a stroke of the other curve read as this class,
   a crossing) ends the chains there, so every tracklet holds exactly one run per row.
3. Chain: dynamic programming over tracklets in depth order picks the chain of (almost) non-overlapping
   tracklets that covers the most rows, paying up to one row for the misfit between one tracklet's extrapolated
   end and the next one's start, and ``jump_penalty_rows`` for a jump beyond the search window. Noise off the
   curve and branches of the other curve are left out, so identity is kept through crossings.
4. Sampling: the centreline is linear in row space between chain rows (gaps bridged, ends extended flat) and is
   sampled at ``y_k = k * (H - 1) / 299``. Depth point k is *observed* when a chain row lies within
   ``max(0.5, 0.5 * (H - 1) / 299)`` rows of ``y_k`` (half the depth spacing, at least the nearest row).

Cost is a few passes over each probability plane plus a Python loop over tracklets (not rows or pixels).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

log = logging.getLogger(__name__)

N_DEPTH = 300
CURVE_CLASSES = (1, 2)
_SLOPE_ROWS = 4  # rows at each tracklet end used to estimate its slope
_BLOCK = 256  # tracklets per block of vectorised transition gains
_MAX_CANDIDATES = 512  # finished predecessors considered per block (bounds time on pathological maps)


@dataclass(frozen=True)
class TracingParams:
    """How probabilities become positions; recorded in every manifest (``to_dict``).

    min_coverage: a curve observed at fewer than this fraction of the 300 depth points fails the request.
    min_prob: a pixel belongs to curve c when ``probs[c] >= min_prob``.
    merge_px: runs of one row separated by at most this many pixels are one run.
    search_px: a tracklet continues the chain when its start lies within ``search_px + drift_px_per_row * gap``
        pixels of the previous tracklet's extrapolated end (gap in rows) ...
    drift_px_per_row: ... see search_px.
    jump_penalty_rows: cost, in rows of coverage, of continuing the chain beyond that window (a jump).
    max_overlap_rows: consecutive tracklets of a chain may share this many rows (near-horizontal dashes).
    lookback_rows: transitions over longer gaps are only considered from the best chain ending above (speed).
    max_tracklets: on pathological maps only the longest this many tracklets are considered (bounds time).
    """

    min_coverage: float = 0.5
    min_prob: float = 0.5
    merge_px: int = 2
    search_px: float = 8.0
    drift_px_per_row: float = 0.5
    jump_penalty_rows: float = 50.0
    max_overlap_rows: int = 2
    lookback_rows: int = 400
    max_tracklets: int = 10000

    def __post_init__(self):
        checks = [
            (0.0 <= self.min_coverage <= 1.0, "min_coverage must be in [0, 1]"),
            (0.0 < self.min_prob <= 1.0, "min_prob must be in (0, 1]"),
            (self.merge_px >= 2, "merge_px must be >= 2 (run centroids read one pixel either side)"),
            (self.search_px > 0 and self.drift_px_per_row >= 0, "search_px must be > 0, drift_px_per_row >= 0"),
            (self.jump_penalty_rows >= 0, "jump_penalty_rows must be >= 0"),
            (min(self.max_overlap_rows, self.lookback_rows) >= 0 and self.max_tracklets >= 1,
             "max_overlap_rows and lookback_rows must be >= 0, max_tracklets >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"TracingParams: {message} (got {self})")

    def to_dict(self) -> dict:
        """JSON-able copy of the parameters, for the manifest."""
        return dataclasses.asdict(self)


class CurveNotFound(ValueError):
    """A curve was observed at too few depth points to be digitised.

    Attributes: curve (1 or 2), coverage (observed fraction of the 300 depth points), min_coverage.
    """

    def __init__(self, curve: int, coverage: float, min_coverage: float, note: str = ""):
        self.curve, self.coverage, self.min_coverage = curve, coverage, min_coverage
        kind = "solid" if curve == 1 else "dashed/dotted"
        super().__init__(
            f"curve {curve} ({kind}, segmenter class {curve}) was observed at {coverage:.0%} of the {N_DEPTH} "
            f"depth points, below the minimum {min_coverage:.0%} (TracingParams.min_coverage).{note} "
            "Check that the image is a single track cropped to its grid, that both curves are drawn in it, "
            "that the scan is not blank, inverted or rotated, and that the segmenter weights fit this kind of scan.")


class _Runs(NamedTuple):
    """Runs of one class, sorted by (row, start); pixel columns, end exclusive; x is the centroid (px)."""
    row: np.ndarray
    start: np.ndarray
    end: np.ndarray
    x: np.ndarray


class _Tracklets(NamedTuple):
    """Per-tracklet summaries (T,) plus each run's tracklet id (label, shape of the runs)."""
    label: np.ndarray
    n: np.ndarray
    top: np.ndarray
    bot: np.ndarray
    x_top: np.ndarray
    x_bot: np.ndarray
    slope_top: np.ndarray  # px per row, downwards
    slope_bot: np.ndarray


def trace(probs: np.ndarray, params: TracingParams = TracingParams()) -> tuple[np.ndarray, np.ndarray]:
    """Trace both curves in a segmenter output.

    Args:
        probs: (3, H, W) float class probabilities (softmax over background, curve 1, curve 2) at the scan's
            resolution; row 0 is the top of the track. Only planes 1 and 2 are read.
        params: tracing parameters.
    Returns:
        x_frac: (300, 2) float64, centreline of curve 1 (column 0) and curve 2 (column 1) at depth points
            ``y_k = k * (H - 1) / 299`` as a fraction of track width (pixel centre convention); finite
            everywhere: gaps bridged linearly in row space, ends extended flat.
        observed: (300, 2) bool, True where the position was observed rather than bridged or extended.
    Raises:
        ValueError: probs has the wrong shape or non-finite values.
        CurveNotFound: a curve's observed fraction is below ``params.min_coverage`` (or it was never seen).
    """
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[0] != 3 or min(probs.shape[1:]) < 1:
        raise ValueError(f"probs must be (3, H, W) class probabilities, got shape {probs.shape}")
    H, W = probs.shape[1:]
    x_frac = np.empty((N_DEPTH, 2))
    observed = np.empty((N_DEPTH, 2), dtype=bool)
    for i, c in enumerate(CURVE_CLASSES):
        plane = np.ascontiguousarray(probs[c], dtype=np.float32)
        rows, xs = trace_plane(plane, params)
        x_frac[:, i], observed[:, i] = _sample(rows, xs, H, W)
    coverage = observed.mean(axis=0)
    failing = [c for c, cov in zip(CURVE_CLASSES, coverage) if cov < params.min_coverage or cov == 0]
    if failing:
        c = failing[0]
        note = f" Curve {failing[1]} failed too ({coverage[1]:.0%})." if len(failing) > 1 else ""
        raise CurveNotFound(c, float(coverage[c - 1]), params.min_coverage, note)
    log.debug("traced %dx%d: coverage %.2f / %.2f", H, W, *coverage)
    return x_frac, observed


def trace_plane(plane: np.ndarray, params: TracingParams = TracingParams()) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise centreline of one class plane.

    Args:
        plane: (H, W) float32 probability of one curve class.
    Returns:
        rows: (n,) int64 increasing rows where the chosen chain has a detection (may be empty);
        x: (n,) float64 centreline there, in pixels with the pixel-centre convention (column c at c + 0.5).
    """
    if not np.isfinite(np.add.reduce(plane, axis=None)):  # one cheap pass; NaN/inf propagate
        raise ValueError("probs contain NaN or inf: check the segmenter output")
    runs = _find_runs(plane, params.min_prob, params.merge_px)
    if runs.row.size == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    tracks = _tracklets(runs, plane.shape[1])
    chosen = _best_chain(tracks, params)
    keep = np.isin(tracks.label, chosen)
    # Chained tracklets may share up to max_overlap_rows rows: average there.
    rows, inverse = np.unique(runs.row[keep], return_inverse=True)
    xs = np.bincount(inverse, weights=runs.x[keep]) / np.bincount(inverse)
    log.debug("plane: %d runs, %d tracklets, chain of %d covering %d rows",
              runs.row.size, tracks.n.size, len(chosen), rows.size)
    return rows.astype(np.int64), xs


def _find_runs(plane: np.ndarray, min_prob: float, merge_px: int) -> _Runs:
    """Runs of ``plane >= min_prob`` per row, nearby runs merged, with probability-weighted centroids."""
    H, W = plane.shape
    # One trailing False column ends every run inside its row, so in the flattened mask the value changes
    # alternate start, end, start, ... (np.nonzero on 2-D is much slower than flatnonzero).
    m = np.zeros((H, W + 1), dtype=bool)
    np.greater_equal(plane, min_prob, out=m[:, :W])
    flat = m.ravel()
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    if flat[0]:
        change = np.concatenate([[0], change])
    row, start = np.divmod(change[0::2], W + 1)
    end = change[1::2] - row * (W + 1)
    if row.size == 0:
        return _Runs(row, start, end, np.zeros(0))
    new = np.ones(row.size, dtype=bool)
    new[1:] = (row[1:] != row[:-1]) | (start[1:] - end[:-1] > merge_px)
    first = np.flatnonzero(new)
    last = np.append(first[1:] - 1, row.size - 1)
    row, start, end = row[first], start[first], end[last]
    x = _centroids(plane, row, np.maximum(start - 1, 0), np.minimum(end + 1, W))
    return _Runs(row, start, end, x)


def _centroids(plane: np.ndarray, row, lo, hi) -> np.ndarray:
    """Probability-weighted mean of column centres (c + 0.5) over columns [lo, hi) of each row.

    Gathers only the run pixels (a small part of the plane for a clean map).
    """
    length = hi - lo
    run = np.repeat(np.arange(row.size), length)
    col = np.arange(length.sum()) - np.repeat(np.cumsum(length) - length - lo, length)
    p = plane[row[run], col]
    mass = np.bincount(run, weights=p, minlength=row.size)
    moment = np.bincount(run, weights=p * (col + 0.5), minlength=row.size)
    assert (mass > 0).all(), "every run holds at least one pixel with probability >= min_prob > 0"
    return moment / mass


def _tracklets(runs: _Runs, width: int) -> _Tracklets:
    """Chain runs that are each other's only 8-connected neighbour in the next/previous row."""
    r, s, e, x = runs
    n = r.size
    k = width + 1  # a key row * k + column orders runs row-major; runs in a row are disjoint and sorted
    skey, ekey = r * k + s, r * k + e

    def touching(dr):
        # runs j in row r + dr with s_j <= e_i and e_j >= s_i: a contiguous index range [lo, hi)
        lo = np.searchsorted(ekey, (r + dr) * k + s, side="left")
        hi = np.searchsorted(skey, (r + dr) * k + e, side="right")
        return lo, np.maximum(hi - lo, 0)

    below, n_down = touching(1)
    _, n_up = touching(-1)
    below = np.minimum(below, n - 1)
    link = (n_down == 1) & (n_up[below] == 1)
    parent = np.arange(n)
    parent[below[link]] = np.flatnonzero(link)
    root = parent
    while True:  # pointer jumping: log2(longest tracklet) rounds
        nxt = root[root]
        if np.array_equal(nxt, root):
            break
        root = nxt
    is_root = parent == np.arange(n)
    label = (np.cumsum(is_root) - 1)[root]

    order = np.argsort(label, kind="stable")  # stable: within a tracklet, by row
    count = np.bincount(label)
    first = np.cumsum(count) - count
    last = first + count - 1
    span = np.maximum(np.minimum(count - 1, _SLOPE_ROWS), 1)
    xo = x[order]
    slope_top = (xo[np.minimum(first + _SLOPE_ROWS, last)] - xo[first]) / span
    slope_bot = (xo[last] - xo[np.maximum(last - _SLOPE_ROWS, first)]) / span
    return _Tracklets(label, count, r[order[first]], r[order[last]], xo[first], xo[last], slope_top, slope_bot)


def _best_chain(t: _Tracklets, p: TracingParams) -> np.ndarray:
    """Tracklet ids of the best chain: dynamic programming over tracklets sorted by top row.

    score(chain) = rows covered - rows shared by consecutive tracklets - transition costs; a chain may start and
    end anywhere. Tracklets are processed in blocks: transition gains from every predecessor ending less than
    lookback_rows above the block are computed exactly (vectorised); of the predecessors further up only the
    best-scoring one is considered (its transition costs at most jump_penalty_rows anyway). On dense noise
    only the best-scoring _MAX_CANDIDATES finished predecessors are kept per block.
    """
    ids = np.arange(t.n.size)
    if ids.size > p.max_tracklets:
        log.warning("%d tracklets: keeping the longest %d (noisy probability map?)", ids.size, p.max_tracklets)
        ids = np.sort(np.argpartition(-t.n, p.max_tracklets - 1)[:p.max_tracklets])
    ids = ids[np.argsort(t.top[ids], kind="stable")]
    tk = _Tracklets(None, *(a[ids] for a in t[1:]))
    best = tk.n.astype(np.float64)  # best score of a chain ending with tracklet j
    prev = np.full(ids.size, -1)
    by_bot = np.argsort(tk.bot, kind="stable")
    n_far, far = 0, -1
    for b0 in range(0, ids.size, _BLOCK):
        b1 = min(b0 + _BLOCK, ids.size)
        limit = tk.top[b0] - p.lookback_rows
        while n_far < ids.size and tk.bot[by_bot[n_far]] < limit:  # final: ended above every j >= b0
            i = by_bot[n_far]
            far = i if far < 0 or best[i] > best[far] else far
            n_far += 1
        cand = np.flatnonzero(tk.bot[:b1] >= limit)
        if far >= 0:
            cand = np.union1d(cand, [far])
        done = cand[cand < b0]
        if done.size > _MAX_CANDIDATES:  # dense noise: keep the best-scoring finished predecessors
            keep = np.argpartition(-best[done], _MAX_CANDIDATES - 1)[:_MAX_CANDIDATES]
            cand = np.concatenate([np.sort(done[keep]), cand[cand >= b0]])
        gain = _transition_gain(tk, cand, slice(b0, b1), p)  # (len(cand), b1 - b0)
        n_before = np.searchsorted(cand, np.arange(b0, b1))  # candidates i < j
        for j in range(b0, b1):
            k = n_before[j - b0]
            if k == 0:
                continue
            score = best[cand[:k]] + gain[:k, j - b0]
            i = int(np.argmax(score))
            if score[i] > best[j]:
                best[j], prev[j] = score[i], cand[i]
    chain = []
    j = int(np.argmax(best)) if ids.size else -1
    while j >= 0:
        chain.append(ids[j])
        j = prev[j]
    return np.array(chain[::-1], dtype=np.int64)


def _transition_gain(t: _Tracklets, before: np.ndarray, to: slice, p: TracingParams) -> np.ndarray:
    """(len(before), len(to)) score gained by appending tracklet j (in ``to``) after tracklet i (in ``before``);
    -inf where i cannot precede j (it must start and end earlier and share at most max_overlap_rows rows)."""
    top_i, bot_i = t.top[before, None], t.bot[before, None]
    xb, sb = t.x_bot[before, None], t.slope_bot[before, None]
    top_j, bot_j, xt, st, n_j = t.top[to], t.bot[to], t.x_top[to], t.slope_top[to], t.n[to]
    gap = top_j - bot_i
    g = np.maximum(gap, 1)
    err = np.minimum(np.abs(xt - (xb + sb * g)),  # previous tracklet extrapolated down
                     np.abs(xb - (xt - st * g)))  # this tracklet extrapolated up
    np.minimum(err, np.abs(xt - xb), out=err)  # flat: slopes of short tracklets are noisy
    tol = p.search_px + p.drift_px_per_row * g
    cost = np.where(err <= tol, err / tol, p.jump_penalty_rows)
    gain = n_j - np.maximum(1 - gap, 0) - cost
    allowed = (top_i < top_j) & (bot_i < bot_j) & (1 - gap <= p.max_overlap_rows)
    return np.where(allowed, gain, -np.inf)


def _sample(rows: np.ndarray, xs: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise centreline (px) -> (300,) fractions of width at y_k and (300,) observed flags."""
    y = np.arange(N_DEPTH) * (height - 1) / (N_DEPTH - 1)
    if rows.size == 0:
        return np.full(N_DEPTH, 0.5), np.zeros(N_DEPTH, dtype=bool)
    x_frac = np.interp(y, rows, xs) / width  # linear between rows, flat beyond the ends
    radius = max(0.5, 0.5 * (height - 1) / (N_DEPTH - 1))
    i = np.searchsorted(rows, y)
    nearest = np.minimum(np.abs(rows[np.maximum(i - 1, 0)] - y), np.abs(rows[np.minimum(i, rows.size - 1)] - y))
    return x_frac, nearest <= radius + 1e-9


def to_values(x_frac: np.ndarray, left: float, right: float, scale: str = "linear") -> np.ndarray:
    """Track-width fractions -> curve values (CONVENTIONS.md); fractions are clipped to [0, 1] first.

    Args:
        x_frac: (...) float fractions of track width (one curve, e.g. shape (300,)).
        left, right: values at the track's left and right edges (``left > right`` for reversed scales).
        scale: "linear" or "log" (log needs left > 0 and right > 0).
    Returns:
        float64 array of x_frac's shape, in the curve's unit.
    """
    f = np.clip(np.asarray(x_frac, dtype=np.float64), 0.0, 1.0)
    if scale == "linear":
        return left + f * (right - left)
    if scale == "log":
        if not (left > 0 and right > 0):
            raise ValueError(f"log scale needs positive left and right values, got left={left}, right={right}: "
                             "fix the calibration")
        lo, hi = np.log10(left), np.log10(right)
        return 10.0 ** (lo + f * (hi - lo))
    raise ValueError(f"scale must be 'linear' or 'log', got {scale!r}")
