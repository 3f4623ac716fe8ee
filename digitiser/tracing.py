"""Segmenter class probabilities -> curve positions on the 300-point depth grid (plain numpy).

Per curve class c (1 = solid curve, 2 = dashed/dotted curve), on its probability plane p = probs[c]:

1. Path: the top-to-bottom path with one column per row that minimises ``sum(1 - p)`` over its pixels plus
   the cost of moving sideways: a step of one column between rows is free (steep curves), a longer move along
   a row costs ``move_cost_ink`` per column on ink and ``move_cost_ink + move_cost_paper`` per column on paper
   (scaled by ``1 - p``). So the path follows ink, jumps along an inked bed boundary almost for free, crosses
   a dash gap straight down, and seldom detours to noise (a detour pays its sideways moves twice; the other
   class's strokes are paper on this plane): it is one dynamic programme over rows (Viterbi), with the exact
   minimum over all sources per row in O(W) (prefix sums).
   Identity through crossings comes from the class planes (line style), not from position.
2. Sub-pixel: on every row where the path touches evidence (``p >= refine_min_prob``, deliberately low: a
   faint probability still places the curve better than a straight bridge does) the centre is the p-weighted
   centroid of the pixels within ``refine_px`` of the path that are connected to it (one-pixel holes closed,
   plus one pixel each side so anti-aliased edges count symmetrically), in pixel units with the pixel-centre
   convention: column c sits at c + 0.5.
3. Not the dash-dot line: where curve 2's path passes evidence components that alternate dash and dot (or two
   dots), as a plotting program's third line does, those are dropped and the plane traced again, if other ink
   takes their place (``dash_dot``); a dash-dot curve 2 alone in its plane is still read.
4. Running together: where a curve vanishes beside the other and comes back beside it (within
   ``together_px`` at both ends), it was drawn under the other; its gap is bridged along the other curve's
   centreline (offset blended between the ends) instead of straight across that curve's bends.
5. Pinned at the edge: a curve run off the scale is drawn along the track's edge line, where the segmenter
   sees nothing of it; it leaves along a row and comes back along a row. Between two rows where its ink runs
   into the same edge (or a scan end and such a row) with little of its own ink in between, it is placed on
   the edge column (``pin_px``), not bridged straight across the track; those points count as bridged.
6. Sampling: the centreline is linear in row space between those rows (gaps bridged, ends extended flat) and
   is sampled at ``y_k = k * (H - 1) / 299``. Depth point k is *observed* when a row where the path is on ink
   (``p >= min_prob``) lies within ``max(observe_px, half the depth spacing)`` rows of ``y_k``: the gaps of a
   dashed or dotted line (up to ``2 * observe_px`` rows) count as seen, longer gaps as bridged.
7. A solid curve taken for a grid line (`trace_track`, which also reads the track's grey pixels): where curve 1 is
   refused, the track's one dark, straight, unbroken line that stands out of its grid becomes curve 1 and the
   planes are traced again (``dark_line``, `digitiser.track_lines`).

Cost: one pass over the rows with a few O(W) array operations each, both planes at once; memory 2 bytes per
pixel per plane for the back-pointers.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import cv2
import numpy as np

from contracts import N_DEPTH  # the contract's depth grid
from digitiser import scale as scale_map
from digitiser.track_lines import dark_line, grid_skew

log = logging.getLogger(__name__)

CURVE_CLASSES = (1, 2)
# Change this whenever `trace` gives different positions or coverage for the same probabilities and
# parameters: it is recorded in every manifest beside the parameters, so two results can be compared.
REVISION = "2026-12-07e"

BORDER_LINE_ROWS = 8     # a border line ridden off the edge band: at least this many rows on evidence,
BORDER_LINE_SPAN = 0.02  # ... over this fraction of the track's rows,
BORDER_LINE_PX = 0.5     # ... within this many px of a line of the grid's skew on 90% of them


@dataclass(frozen=True)
class TracingParams:
    """How probabilities become positions; recorded in every manifest (``to_dict``).

    min_coverage: a curve observed at fewer than this fraction of the 300 depth points fails the request.
    min_prob: a path pixel is on ink (observed) when ``p >= min_prob``.
    move_cost_ink: cost per column of moving sideways along a row, on ink (in units of one row of paper).
    move_cost_paper: extra cost per column of moving sideways over paper (scaled by 1 - p).
    refine_px: the sub-pixel centre is read within this many columns of the path.
    refine_min_prob: ... on rows where the path has ``p >= refine_min_prob``, from the pixels connected to it
        with at least that probability; rows below it are bridged.
    observe_px: a depth point is observed when ink was seen within this many rows (or half a depth spacing).
    together_px: a gap whose two ends lie within this many px of the other curve is bridged along the other
        curve (the curves ran together, one drawn over the other), not straight; 0 turns this off.
    pin_px: a row's ink within this many px of the track edge, along the row from the curve, is a run into
        the edge; between two such runs into the same edge the curve is pinned there; 0 turns this off.
    border_px: an edge column (within this many px of either side) whose evidence peaks there on at least
        ``border_rows`` of the rows is the track's border line (or an edge mark), which a path must not follow:
        its probabilities are ignored. A curve on the border line is invisible anyway and is placed there by
        pinning. A path that jumped to the band over paper and left it the same way rode a line marked on fewer
        rows: it is traced again without the band on those rows (``_ridden_border``); on a skewed scan the band
        is a straight line of the grid's skew that reaches the edge (`trace`'s ``skew``). 0: both off.
    border_rows: see border_px. The segmenter marks a border line on some rows only (a third to four fifths of
        them on foreign scans), and a path that reaches it rides it wherever the curve's own ink is fainter;
        a curve run off scale along the edge for more than this fraction of the depth is refused instead.
    dash_dot: curve 2's path is traced again without the components it passed that alternate dash and one or
        two dots (a dot at most this fraction of the dash's length), where other ink takes their place: a
        dash-dot line is the third line's style (plotting programs'), which the segmenter reads as curve 2;
        0 turns this off.
    dark_line: where curve 1 is refused, `trace_track` reads it on the track's one dark, straight, unbroken line
        that is at least this many times darker than any other line (and twice the grid's), which the segmenter
        took for a grid line (`digitiser.track_lines`); 0 turns this off.
    """

    min_coverage: float = 0.5
    min_prob: float = 0.45
    move_cost_ink: float = 0.02
    move_cost_paper: float = 0.03
    refine_px: int = 96   # a near-horizontal stroke (a rough log at a compressed depth scale) is read whole
    refine_min_prob: float = 0.05
    observe_px: float = 6.0
    together_px: float = 15.0
    pin_px: int = 12
    border_px: int = 3
    border_rows: float = 0.5
    dash_dot: float = 0.45
    dark_line: float = 1.3

    def __post_init__(self):
        checks = [
            (0.0 <= self.min_coverage <= 1.0, "min_coverage must be in [0, 1]"),
            (0.0 < self.min_prob <= 1.0, "min_prob must be in (0, 1]"),
            (0.0 < self.refine_min_prob <= self.min_prob, "refine_min_prob must be in (0, min_prob]"),
            (0.0 < self.border_rows <= 1.0, "border_rows must be in (0, 1]"),
            (0.0 <= self.dash_dot < 1.0, "dash_dot must be in [0, 1)"),
            (self.dark_line == 0 or self.dark_line >= 1.0, "dark_line must be 0 (off) or >= 1"),
            (self.move_cost_ink > 0 and self.move_cost_paper >= 0,
             "move_cost_ink must be > 0, move_cost_paper >= 0"),
            (self.refine_px >= 1 and self.observe_px >= 0 and self.together_px >= 0 and self.pin_px >= 0
             and self.border_px >= 0,
             "refine_px must be >= 1, observe_px >= 0, together_px >= 0, pin_px >= 0, border_px >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"TracingParams: {message} (got {self})")

    @classmethod
    def from_pairs(cls, pairs) -> TracingParams:
        """Parameters from "name=value" texts (a command line's), the rest default; ValueError names a bad one."""
        types = {f.name: {"int": int, "float": float}[f.type] for f in dataclasses.fields(cls)}
        given = {}
        for pair in pairs:
            name, sep, value = (part.strip() for part in pair.partition("="))
            if not sep or name not in types:
                raise ValueError(f"tracing parameter {pair!r}: expected NAME=VALUE, NAME one of {', '.join(types)}")
            try:
                given[name] = types[name](value)
            except ValueError:
                raise ValueError(f"tracing parameter {pair!r}: {value!r} is not {types[name].__name__}") from None
        return cls(**given)

    def to_dict(self) -> dict:
        """JSON-able copy of the parameters and the tracer's ``revision``, for the manifest."""
        return {**dataclasses.asdict(self), "revision": REVISION}


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


def trace(probs: np.ndarray, params: TracingParams = TracingParams(),
          sample_rows: np.ndarray | None = None, skew: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Trace both curves in a segmenter output.

    Args:
        probs: (3, H, W) float class probabilities (softmax over background, curve 1, curve 2) at the scan's
            resolution; row 0 is the top of the track. Only planes 1 and 2 are read.
        params: tracing parameters.
        sample_rows: (300,) float64 increasing rows of the depth points (row centres, within 0..H-1); default
            ``y_k = k * (H - 1) / 299`` (the image is the depth interval). A sheet's depth ties give others.
        skew: how the scan's vertical lines lean, columns per row (`track_lines.grid_skew`, which `trace_track`
            reads from the grey pixels): the border line is looked for along it.
    Returns:
        x_frac: (300, 2) float64, centreline of curve 1 (column 0) and curve 2 (column 1) at the depth points'
            rows as a fraction of track width (pixel centre convention); finite
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
    planes = np.array(probs[1:], dtype=np.float32)
    border = params.border_px and W > 4 * params.border_px
    if border:
        _drop_border(planes, params.border_px, params.refine_min_prob, params.border_rows)
    traced = trace_planes(planes, params)
    for k, (plane, (rows, xs, _)) in enumerate(zip(planes, traced) if border else ()):
        ridden = _ridden_border(plane, rows, xs, params.border_px, params.refine_min_prob, skew)
        if ridden.any():   # traced again without the border it rode
            plane[ridden] = 0.0
            traced[k] = trace_planes(planes[k:k + 1], params)[0]
    if params.dash_dot:   # curve 2's plane: a dash-dot line beside it is a third line, not curve 2
        traced[1] = _without_dash_dot(planes[1], traced[1], params)
    if params.pin_px > 0:
        traced = [_pinned(plane, *curve, params.pin_px, params.min_prob) for plane, curve in zip(planes, traced)]
    for i, (rows, xs, ink) in enumerate(traced):
        rows_o, xs_o, _ = traced[1 - i]
        rows_b, xs_b = _run_together(rows, xs, ink, rows_o, xs_o, params.together_px, 2 * params.observe_px)
        x_frac[:, i], observed[:, i] = _sample(rows_b, xs_b, rows[ink], H, W, params.observe_px, sample_rows)
    coverage = observed.mean(axis=0)
    failing = [c for c, cov in zip(CURVE_CLASSES, coverage) if cov < params.min_coverage or cov == 0]
    if failing:
        c = failing[0]
        note = f" Curve {failing[1]} failed too ({coverage[1]:.0%})." if len(failing) > 1 else ""
        raise CurveNotFound(c, float(coverage[c - 1]), params.min_coverage, note)
    log.debug("traced %dx%d: coverage %.2f / %.2f", H, W, *coverage)
    return x_frac, observed


def trace_track(probs: np.ndarray, gray: np.ndarray, params: TracingParams = TracingParams(),
                sample_rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`trace`, and where curve 1 is refused, once more with the track's one dark straight line read as curve 1
    (``params.dark_line``, `digitiser.track_lines`): the segmenter took it for a grid line.

    gray: (H, W) uint8 grey pixels of the track `probs` was read from; they also give the scan's skew, along
    which the border line is looked for (`track_lines.grid_skew`). Returns x_frac, observed and the class
    probabilities traced: `probs` itself, or a copy whose line pixels are curve 1 (the mask's classes)."""
    skew = grid_skew(gray) if params.border_px else 0.0
    try:
        return (*trace(probs, params, sample_rows, skew), probs)
    except CurveNotFound as refused:
        line = None
        if refused.curve == 1 and params.dark_line:
            line = dark_line(gray, probs[2], params.dark_line, params.border_px, params.min_prob)
        if line is None:
            raise
    probs = _with_curve_1(probs, line)
    return (*trace(probs, params, sample_rows, skew), probs)


def _with_curve_1(probs: np.ndarray, evidence: np.ndarray) -> np.ndarray:
    """probs with class 1 raised to `evidence` where that is higher, the other two classes scaled to the rest
    there; every other pixel as it was."""
    raised = evidence > probs[1]
    rest = (1.0 - evidence) / np.maximum(probs[0] + probs[2], 1e-6)
    out = probs.copy()
    out[0] = np.where(raised, probs[0] * rest, probs[0])
    out[1] = np.where(raised, evidence, probs[1])
    out[2] = np.where(raised, probs[2] * rest, probs[2])
    return out


def _drop_border(planes: np.ndarray, border_px: int, min_prob: float, min_rows: float) -> None:
    """Zero, in place, each edge column (within border_px of either edge) whose evidence of either class runs
    over at least min_rows of the track's rows: that is the border line, straight and full-height, though the
    segmenter marks it on some rows only and may label parts of it curve 1 and parts curve 2 (it is evidence for
    neither). A row counts only where the column's evidence (p >= min_prob) is at least that of the first column
    inside the band, so the ink peaks at the border: a curve running just inside it (its centre past the band)
    keeps its outer columns. A curve run off scale along the edge for less of the depth keeps its columns."""
    W = planes.shape[2]
    ink = planes.sum(axis=0)   # either class: the segmenter may split the border line between them
    for cols, inside in ((np.arange(border_px), border_px), (np.arange(W - border_px, W), W - 1 - border_px)):
        edge, ref = ink[:, cols], ink[:, inside:inside + 1]
        seen = ((edge >= min_prob) & (edge >= ref)).mean(axis=0) >= min_rows   # (border_px,)
        planes[:, :, cols[seen]] = 0.0


def _ridden_border(plane: np.ndarray, rows: np.ndarray, xs: np.ndarray, border_px: int, min_prob: float,
                   skew: float, reach: int = 3, min_fill: float = 0.5) -> np.ndarray:
    """(H, W) bool: the pixels from the edge to each stretch of the path that rode the track's border line,
    having jumped there over paper and left it the same way.

    The border line runs in the band within border_px + 1 of an edge, or, on a skewed scan, along a straight
    line parallel to the grid (`skew`, columns per row) that comes within 2 * border_px + 1 of the edge: the
    page leans, so the line runs a few px inside the cut image's edge over part of the depth (foreign scan 130:
    curve 1 on the right border 6 to 0 px from the edge for 1100 rows while its ink ran mid-track). Stretches:
    the path's rows within that reach of an edge plus the skew's drift over the track, in a run; one that
    leaves the band counts only if it lies on such a line (`_on_border_line`). A curve drawn along the edge
    (run off scale, or hugging it) reaches the edge along its own ink: on the row it leaves from (within
    ``reach`` rows), at least ``min_fill`` of the columns between it and the stretch hold evidence
    (p >= min_prob), or it was within 2 * border_px of the stretch already. A path that crossed paper to the
    edge rode a border line that the segmenter marked there on some rows (foreign scan 33: curve 1 on the left
    border for stretches while its broken ink runs 30-50 px inside). A stretch that starts or ends at the top or
    bottom of the scan is judged by its other end alone. rows, xs: the path's rows on evidence and its centre
    there (trace_planes)."""
    H, W = plane.shape
    ridden = np.zeros((H, W), bool)
    band, near = border_px + 1, 2 * border_px + 1
    for right in (False, True):
        gap = W - xs if right else xs   # the centre's distance from this edge, px
        for i, j in _runs(gap < near + abs(skew) * H):
            r, x = rows[i:j + 1], xs[i:j + 1]
            if not (gap[i:j + 1] < band).all() and not _on_border_line(r, x, W if right else 0, skew, near, H):
                continue
            ends = [_reached_along_ink(plane, rows[k], xs[k], xs[end], border_px, min_prob, reach, min_fill)
                    for k, end in ((i - 1, i), (j + 1, j)) if 0 <= k < rows.size]
            if ends and not any(ends):
                if right:
                    ridden[r[0]:r[-1] + 1, max(int(x.min()) - border_px, 0):] = True
                else:
                    ridden[r[0]:r[-1] + 1, :int(x.max()) + border_px + 1] = True
    return ridden


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of each run of True in a 1-D bool array."""
    edges = np.diff(np.r_[0, mask.astype(np.int8), 0])
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1))


def _on_border_line(rows: np.ndarray, xs: np.ndarray, edge: int, skew: float, near: float, H: int) -> bool:
    """Whether a stretch of the path lies on a straight line of the grid's skew that comes within `near` px of
    the edge column `edge` at one of the stretch's ends: at least `BORDER_LINE_ROWS` rows on evidence over
    `BORDER_LINE_SPAN` of the track's rows (30 at least), within `BORDER_LINE_PX` of the line on 90% of them. A
    curve is seldom that straight for that long (a slowly drifting log near the edge is, at up to 1 px)."""
    if rows.size < BORDER_LINE_ROWS or rows[-1] - rows[0] < max(30, BORDER_LINE_SPAN * H):
        return False
    at = np.median(xs - skew * rows)   # the line's column at row 0
    if np.percentile(np.abs(xs - at - skew * rows), 90) > BORDER_LINE_PX:
        return False
    return bool(np.abs(at + skew * rows[[0, -1]] - edge).min() < near)


def _reached_along_ink(plane, row, x, to, border_px, min_prob, reach, min_fill) -> bool:
    """Whether the row from column x to column `to` (where the stretch on the border begins or ends) holds
    evidence on min_fill of its columns, gaps of up to 2 * border_px + 1 columns closed (a dashed curve's swing
    along the row), or is at most 2 * border_px long."""
    lo, hi = int(min(x, to)) + 1, int(max(x, to)) + 1
    if hi - lo <= 2 * border_px:
        return True
    seen = plane[max(row - reach, 0):row + reach + 1, lo:hi].max(axis=0) >= min_prob
    closed = cv2.morphologyEx(seen.astype(np.uint8)[None, :], cv2.MORPH_CLOSE,
                              np.ones((1, 2 * border_px + 1), np.uint8))[0]
    return bool(closed.mean() >= min_fill)


def _without_dash_dot(plane: np.ndarray, curve: tuple, params: TracingParams, rounds: int = 2) -> tuple:
    """Curve 2 traced again without the dash-dot components its path followed, where that finds other ink.

    Plotting programs draw a third line (neither curve) dash-dot, and the segmenter reads it as curve 2 as
    strongly as curve 2 itself, so the path takes one line or the other, or switches between them. The evidence
    components (p >= min_prob) the path passes come in a sequence of lengths; a dash-dot line's alternate dash,
    dot (or two), dash (``_dash_dot_flags``). Those components are zeroed (in ``plane``, in place) and the plane
    traced again, kept where the new path is on ink within observe_px rows of at least half the rows the old
    one had on them: a dash-dot curve 2 with no other line beside it stays the curve.
    curve: (rows, xs, ink) of trace_planes. Returns the (rows, xs, ink) kept."""
    for _ in range(rounds):
        rows, xs, _ = curve
        found = _dash_dot_components(plane, rows, xs, params.min_prob, params.dash_dot)
        if found is None:
            break
        drop, rows_on = found
        kept = plane[drop]
        plane[drop] = 0.0
        new_rows, _, new_ink = new = trace_planes(plane[None], params)[0]
        if not new_ink.any() or _near(rows_on, new_rows[new_ink], params.observe_px).mean() < 0.5:
            plane[drop] = kept   # nothing else there: the dash-dot line is the curve
            break
        curve = new
    return curve


def _near(rows: np.ndarray, ref: np.ndarray, radius: float) -> np.ndarray:
    """(len(rows),) bool: a row of ref (increasing, not empty) lies within radius of each of rows (any order)."""
    i = np.searchsorted(ref, rows)
    d = np.minimum(np.abs(ref[np.maximum(i - 1, 0)] - rows), np.abs(ref[np.minimum(i, ref.size - 1)] - rows))
    return d <= radius


_NEAREST_FIRST = np.array([0, -1, 1, -2, 2])   # columns from the path, nearest first


def _dash_dot_components(plane: np.ndarray, rows: np.ndarray, xs: np.ndarray, min_prob: float, dot: float,
                         window: int = 7) -> tuple[np.ndarray, np.ndarray] | None:
    """The evidence components (p >= min_prob) along the path (rows, xs) that belong to a dash-dot stretch of
    it: ((H, W) bool their pixels, the path's rows on them), or None. The path passes a component where it runs
    within 2 px of it; a component's length is its bounding box's diagonal."""
    W = plane.shape[1]
    n, labels, stats, _ = cv2.connectedComponentsWithStats((plane >= min_prob).view(np.uint8), connectivity=8)
    if n <= window or rows.size == 0:
        return None
    hits = labels[rows[:, None], np.clip(np.floor(xs).astype(np.int64)[:, None] + _NEAREST_FIRST, 0, W - 1)]
    hit = hits[np.arange(rows.size), (hits > 0).argmax(axis=1)]   # per row, 0: no component near
    passed = hit[hit > 0]
    _, first = np.unique(passed, return_index=True)
    seq = passed[np.sort(first)]   # in the order the path reaches them
    if seq.size < window:
        return None
    flags = _dash_dot_flags(np.hypot(stats[seq, cv2.CC_STAT_WIDTH], stats[seq, cv2.CC_STAT_HEIGHT]), window, dot)
    if not flags.any():
        return None
    dropped = np.zeros(n, bool)
    dropped[seq[flags]] = True
    return dropped[labels], rows[dropped[hit]]


def _dash_dot_flags(lengths: np.ndarray, window: int = 7, dot: float = 0.45) -> np.ndarray:
    """(n,) bool: the elements of every run of ``window`` consecutive lengths that alternate dash and one or two
    dots: a dot is at most ``dot`` times the window's dash length (its upper quartile: dots may be most), at least
    two of each, never two dashes in a row (a dashed line, its dashes broken by noise, has them) nor three
    dots (a dotted line)."""
    w = np.lib.stride_tricks.sliding_window_view(lengths, window)
    short = w <= dot * np.percentile(w, 75, axis=1, keepdims=True)
    ok = ((short.sum(axis=1) >= 2) & ((~short).sum(axis=1) >= 2)
          & ~(~short[:, 1:] & ~short[:, :-1]).any(axis=1) & ~(short[:, 2:] & short[:, 1:-1] & short[:, :-2]).any(axis=1))
    return np.convolve(ok.astype(np.int64), np.ones(window, np.int64))[:lengths.size] > 0


def trace_planes(planes: np.ndarray, params: TracingParams = TracingParams()) -> list[tuple[np.ndarray, ...]]:
    """Centreline of each probability plane.

    Args:
        planes: (K, H, W) float32 probabilities of K curve classes.
    Returns:
        per plane: rows (n,) int64 increasing rows where the path touches evidence (may be empty), x (n,)
        float64 the sub-pixel centre there, in pixels with the pixel-centre convention (column c at c + 0.5),
        and on_ink (n,) bool, True where the path is on ink (``p >= min_prob``).
    """
    if not np.isfinite(np.add.reduce(planes, axis=None)):  # one cheap pass; NaN/inf propagate
        raise ValueError("probs contain NaN or inf: check the segmenter output")
    paths = _min_cost_paths(planes, params.move_cost_ink, params.move_cost_paper)
    out = []
    for plane, path in zip(planes, paths):
        p_path = plane[np.arange(plane.shape[0]), path]
        rows = np.flatnonzero(p_path >= params.refine_min_prob)
        x = _centre(plane[rows], path[rows], params.refine_px, params.refine_min_prob)
        # once more around the first estimate: on a plateau (thick stroke) the path may sit at its edge
        x = _centre(plane[rows], np.floor(x).astype(np.int64), params.refine_px, params.refine_min_prob, x)
        out.append((rows, x, p_path[rows] >= params.min_prob))
    return out


def _min_cost_paths(planes: np.ndarray, ink: float, paper: float, chunk: int = 256) -> np.ndarray:
    """(K, H, W) probabilities -> (K, H) int64 columns of each plane's minimum-cost top-to-bottom path.

    Row y's cost D[x] = min over sources x' of D_prev[x' (+-1 free)] + |C[x] - C[x']|, then + (1 - p[y, x]),
    with C the prefix sum of the move cost along row y. The minimum over x' < x of (D'[x'] - C[x']) is a
    running minimum (and symmetrically from the right), so each row is O(W).
    """
    K, H, W = planes.shape
    cols = np.arange(W)
    k_idx = np.arange(K)[:, None]
    back = np.empty((K, H, W), np.int16 if W < 2**15 else np.int32)  # source column of each pixel
    D = 1.0 - planes[:, 0].astype(np.float64)
    D_left = np.full((K, W), np.inf)  # D of column x - 1, at x
    D_right = np.full((K, W), np.inf)  # D of column x + 1, at x
    for y0 in range(1, H, chunk):  # per-row costs in blocks: fewer numpy calls per row, bounded memory
        E = 1.0 - planes[:, y0:y0 + chunk].astype(np.float64)
        CC = np.cumsum(ink + paper * E, axis=2)
        for i in range(E.shape[1]):
            e, C = E[:, i], CC[:, i]
            # a free step of one column: best of x, x-1, x+1 (ties in that order)
            D_left[:, 1:] = D[:, :-1]
            D_right[:, :-1] = D[:, 1:]
            side = np.minimum(D_left, D_right)
            step = np.where(D <= side, 0, np.where(D_left <= D_right, -1, 1))
            D1 = np.minimum(D, side)
            g = D1 - C  # from the left: D1[x'] + C[x] - C[x']
            run_l = np.minimum.accumulate(g, axis=1)
            arg_l = np.maximum.accumulate(np.where(g <= run_l, cols, 0), axis=1)
            g = (D1 + C)[:, ::-1]  # from the right: D1[x'] + C[x'] - C[x], scanned reversed
            run_r = np.minimum.accumulate(g, axis=1)
            arg_r = ((W - 1) - np.maximum.accumulate(np.where(g <= run_r, cols, 0), axis=1))[:, ::-1]
            from_l, from_r = run_l + C, run_r[:, ::-1] - C
            left = from_l <= from_r
            src = np.where(left, arg_l, arg_r)
            back[:, y0 + i] = src + step[k_idx, src]
            D = np.where(left, from_l, from_r) + e
            D -= D.min(axis=1, keepdims=True)  # keeps magnitudes small over thousands of rows
    path = np.empty((K, H), np.int64)
    x = D.argmin(axis=1)
    path[:, H - 1] = x
    for y in range(H - 1, 0, -1):
        x = back[k_idx[:, 0], y, x]
        path[:, y - 1] = x
    return path


def _centre(p: np.ndarray, path: np.ndarray, r: int, min_prob: float, fallback=None) -> np.ndarray:
    """Sub-pixel centre per row (px, pixel-centre convention): p-weighted centroid of the pixels within r of
    the path connected to it by ``p >= min_prob`` (one-pixel holes closed), widened by one pixel each side.
    p: (n, W) rows of the plane; path: (n,) columns, with ``p >= min_prob`` unless a fallback (n,) is given
    for rows where the path column is not connected evidence."""
    n, W = p.shape
    cols = path[:, None] + np.arange(-r, r + 1)
    inside = (cols >= 0) & (cols < W)
    w = np.where(inside, p[np.arange(n)[:, None], np.clip(cols, 0, W - 1)], 0.0)
    ok = w >= min_prob
    ok[:, 1:-1] |= ok[:, :-2] & ok[:, 2:]  # a one-pixel hole in a thick stroke
    right = np.cumprod(ok[:, r:], axis=1)
    left = np.cumprod(ok[:, r::-1], axis=1)[:, ::-1]
    conn = np.concatenate([left[:, :-1], right], axis=1).astype(bool)
    wide = conn.copy()
    wide[:, 1:] |= conn[:, :-1]
    wide[:, :-1] |= conn[:, 1:]
    w = w * wide
    mass = w.sum(axis=1)
    if fallback is None:
        return (w * (cols + 0.5)).sum(axis=1) / mass  # > 0: the path pixel itself counts
    return np.where(ok[:, r] & (mass > 0), (w * (cols + 0.5)).sum(axis=1) / np.maximum(mass, 1e-30), fallback)


def _run_together(rows, xs, ink, rows_o, xs_o, tol: float, min_gap: float) -> tuple[np.ndarray, np.ndarray]:
    """Bridge a curve's long gaps along the other curve where it vanished beside it and came back beside it.

    A curve drawn under the other for a stretch leaves no ink of its own there, and a straight bridge cuts
    across every bend of that stretch. So in a gap between two of its rows on ink that both lie within ``tol``
    px of the other curve, wherever its own faint rows leave more than ``min_gap`` rows unseen, the other
    curve's rows are added: their centre plus an offset blended linearly between the two ends (each end's
    offset to the nearest of the other curve's centres within ``min_gap / 2`` rows).
    rows, xs, ink: this curve (trace_planes); rows_o, xs_o: the other's. Returns (rows, xs), rows increasing.
    """
    ends = rows[ink]
    if tol <= 0 or ends.size < 2 or rows_o.size == 0:
        return rows, xs
    # offset to the other curve's nearest centre within half a dash gap of each end: where both jump along
    # a row together, the other's centre on that row is mid-run, its centre a few rows on is beside the end
    reach = int(min_gap // 2)
    offsets = np.stack([xs[ink] - np.interp(ends + d, rows_o, xs_o) for d in range(-reach, reach + 1)])
    offset = offsets[np.abs(offsets).argmin(axis=0), np.arange(ends.size)]
    beside = np.abs(offset) <= tol
    follow = beside[:-1] & beside[1:] & (np.diff(ends) > min_gap)  # gap i: rows between ends[i], ends[i + 1]
    i = np.searchsorted(ends, rows_o, side="right") - 1
    in_gap = (i >= 0) & (i < ends.size - 1)
    i = np.clip(i, 0, ends.size - 2)
    j = np.clip(np.searchsorted(rows, rows_o, side="right"), 1, rows.size - 1)  # own rows j-1 <= r < j
    take = in_gap & follow[i] & (rows_o > rows[j - 1]) & (rows[j] - rows[j - 1] > min_gap)
    if not take.any():
        return rows, xs
    r = rows_o[take]
    order = np.argsort(np.concatenate([rows, r]), kind="stable")
    return np.concatenate([rows, r])[order], np.concatenate([xs, xs_o[take] + np.interp(r, ends, offset)])[order]


def _edge_touch(plane: np.ndarray, rows: np.ndarray, xs: np.ndarray, pin_px: int, min_prob: float,
                min_fill: float = 0.2, reach: int = 5) -> np.ndarray:
    """(n,) int8 per row: -1 / +1 where the curve at (rows, xs) runs along the row into the left / right edge:
    ink (this plane, p >= min_prob, rows within ``reach``) within pin_px of the edge and on at least min_fill
    of the columns between the edge and the curve (a dashed or dotted run, partly missed, fills 20-50%); else
    0. The curve must be more than 2 * pin_px from the edge, so a curve merely near the edge does not count."""
    H, W = plane.shape
    touch = np.zeros(rows.size, np.int8)
    x = np.clip(xs.astype(np.int64), 0, W - 1)
    near = np.maximum(plane[:, :pin_px + 1].max(axis=1), plane[:, W - 1 - pin_px:].max(axis=1))
    near = np.lib.stride_tricks.sliding_window_view(np.pad(near, reach), 2 * reach + 1).max(axis=1)
    far_l, far_r = x > 2 * pin_px, x < W - 1 - 2 * pin_px
    cand = np.flatnonzero((near[rows] >= min_prob) & (far_l | far_r))
    if cand.size == 0:  # most rows: nothing near either edge
        return touch
    r, x, far_l, far_r = rows[cand], x[cand], far_l[cand], far_r[cand]
    band = np.maximum.reduce([plane[np.clip(r + d, 0, H - 1)] for d in range(-reach, reach + 1)]) >= min_prob
    filled = np.cumsum(band, axis=1)  # ink columns in 0..c
    n = np.arange(r.size)
    left = far_l & band[:, :pin_px + 1].any(axis=1) & (filled[n, x] >= min_fill * (x + 1))
    right = (far_r & band[:, W - 1 - pin_px:].any(axis=1)
             & (filled[:, -1] - filled[n, x] + band[n, x] >= min_fill * (W - x)))
    touch[cand] = np.where(left, -1, np.where(right, 1, 0))
    return touch


def _pinned(plane: np.ndarray, rows: np.ndarray, xs: np.ndarray, ink: np.ndarray, pin_px: int, min_prob: float,
            max_ink: float = 0.25) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A curve run off the scale is drawn along the track's edge line, where the segmenter sees nothing; it
    leaves the track along a row and comes back along a row. So between two rows where its ink runs into the
    same edge (or the scan's top or bottom and such a row), with little of its own ink in between (at most
    max_ink of the rows; 5% next to a scan end, where no second run confirms it), the curve is pinned to that
    edge: the rows there become rows at the edge column's centre, not on ink (inferred, not observed).
    rows, xs, ink: one curve (trace_planes). Returns (rows, xs, ink), rows increasing."""
    H, W = plane.shape
    side = _edge_touch(plane, rows[ink], xs[ink], pin_px, min_prob)
    at = rows[ink][side != 0]
    if at.size == 0:
        return rows, xs, ink
    side = side[side != 0]
    ev_row = np.concatenate([[-1], at, [H]])  # the scan's ends pair with the first and last touch
    ev_side = np.concatenate([side[:1], side, side[-1:]])
    ink_upto = np.searchsorted(rows[ink], ev_row, side="right")  # own ink rows <= each event
    between = np.diff(ink_upto) - 1 + (ev_row[1:] == H)  # own ink rows strictly inside each gap
    span = np.diff(ev_row)
    at_end = (ev_row[:-1] < 0) | (ev_row[1:] == H)
    pin = (ev_side[1:] == ev_side[:-1]) & (span >= 3) & (between <= np.where(at_end, 0.05, max_ink) * span)
    if not pin.any():
        return rows, xs, ink
    new = [np.arange(a + 1, b) for a, b in zip(ev_row[:-1][pin], ev_row[1:][pin])]
    edge_x = [np.full(r.size, 0.5 if s < 0 else W - 0.5) for r, s in zip(new, ev_side[1:][pin])]
    keep = ~np.isin(rows, np.concatenate(new))
    r = np.concatenate([rows[keep]] + new)
    order = np.argsort(r, kind="stable")
    x = np.concatenate([xs[keep]] + edge_x)[order]
    k = np.concatenate([ink[keep], np.zeros(r.size - keep.sum(), bool)])[order]
    return r[order], x, k


def observe_radius(height: int, observe_px: float) -> float:
    """Rows either side of a depth point within which ink counts as seeing the curve there."""
    return max(observe_px, 0.5, 0.5 * (height - 1) / (N_DEPTH - 1))


def _sample(rows: np.ndarray, xs: np.ndarray, ink_rows: np.ndarray, height: int, width: int,
            observe_px: float, y: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Centreline at rows (px) -> (300,) fractions of width at the depth points' rows y (default y_k);
    (300,) observed flags from ink_rows."""
    if y is None:
        y = np.arange(N_DEPTH) * (height - 1) / (N_DEPTH - 1)
    if rows.size == 0:
        return np.full(N_DEPTH, 0.5), np.zeros(N_DEPTH, dtype=bool)
    x_frac = np.interp(y, rows, xs) / width  # linear between rows, flat beyond the ends
    radius = observe_radius(y[-1] - y[0] + 1, observe_px)   # half the depth spacing, or observe_px
    if ink_rows.size == 0:
        return x_frac, np.zeros(N_DEPTH, dtype=bool)
    return x_frac, _near(y, ink_rows, radius + 1e-9)


def to_values(x_frac: np.ndarray, left: float, right: float, scale: str = "linear") -> np.ndarray:
    """Track-width fractions -> curve values (CONVENTIONS.md); fractions are clipped to [0, 1] first.

    Args:
        x_frac: (...) float fractions of track width (one curve, e.g. shape (300,)).
        left, right: values at the track's left and right edges (``left > right`` for reversed scales).
        scale: "linear" or "log" (log needs left > 0 and right > 0).
    Returns:
        float64 array of x_frac's shape, in the curve's unit.
    """
    return scale_map.to_values(np.clip(np.asarray(x_frac, dtype=np.float64), 0.0, 1.0), left, right, scale)
