"""The track's ruled lines, read from its own grey pixels (plain numpy and cv2): how its grid leans, and a solid
curve the segmenter took for a grid line.

**The grid's skew** (`grid_skew`). A scanned page is seldom square to the scanner: its vertical lines (grid and
border) lean by a fraction of a degree, so the track's border line runs a few pixels inside the cut image's edge
over part of the depth, and a path that rides it there is not within the tracer's edge band. The skew is the
horizontal shear that lines the blocks' column profiles up best (their sum is sharpest), and the tracer looks for
the border line along it (`tracing._ridden_border`).

**A dark straight line** (`dark_line`). A log at a nearly constant value on a wide scale is plotted as a straight
vertical line: what the segmenter's training taught as a grid line, so it gives that line no curve evidence
however dark it is (MODEL_CARD.md, "Stage 11"; the strict xfail it left). Plotters draw curves heavier than their
grid, and a grid is a family of lines of one weight. So where curve 1 is refused, the tracer asks this module for
the one line of the track that

- runs its whole depth, nearly straight: a column of ink in at least `MIN_BLOCKS` of the blocks of `BLOCK` rows
  (inked on at least `1 - INKED` of a block's rows), moving at most `drift` columns from block to block;
- is unbroken, as curve 1 is drawn: ink on at least `MIN_FILL` of its rows;
- stands out of the grid: at least `FAMILY` times the median line's darkness (and `MARGIN` grey levels over it),
  and `ratio` times the darkest other line's (a family of heavy lines, e.g. a log grid's decades, is not it);
- is not the border line (nor a scanner's shadow along an edge: `EDGE` of the width), nor curve 2 where the
  segmenter sees it;

and turns that line's ink into curve-1 evidence for the tracer to read like any other. Nothing is read where two
lines are as dark, or the curve's ink is lighter than the grid's: a refusal is better than another line followed.
"""
import cv2
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

BLOCK = 128        # rows per block: a line is looked for block by block, so a skewed scan's lines are followed
INKED = 0.65       # a block's column profile is this quantile of its rows' ink: lines inked on 35% of rows show
MIN_BLOCKS = 0.6   # a line is seen in at least this fraction of the blocks (it runs the depth of the track)
MIN_FILL = 0.8     # ... and is inked on at least this fraction of its rows (solid; curve 2's dashes are not)
FAMILY = 2.0       # ... at least this many times the median line's darkness
MARGIN = 40.0      # ... and this many grey levels over it
MIN_PEAK = 8.0     # grey levels over the paper for a column to count as a line at all
EDGE = 0.02        # lines this close to either side (fraction of the width, at least border_px) are the border's
MAX_SKEW = 0.035   # the steepest lean looked for, columns per row (2 degrees; scanned pages lean under 1)
SKEW_STEP = 0.00025
SKEW_BLOCKS = 16    # blocks of rows whose column profiles are lined up


def grid_skew(gray: np.ndarray) -> float:
    """The track's horizontal shear, columns per row (positive: its vertical lines lean right going down), that
    lines up the column profiles of its blocks of rows best; 0 for a track without vertical lines to line up.

    Searched in steps of a column over the track's height, then of `SKEW_STEP` (a quarter of a column over a
    1000-row track) around the best."""
    H, W = gray.shape
    ink = np.clip(np.percentile(gray[::2, ::2], 75) - gray.astype(np.float32), 0, None)   # grey over the paper
    edges = np.linspace(0, H, min(H, SKEW_BLOCKS) + 1).astype(int)
    profiles = np.stack([ink[a:b].mean(axis=0) for a, b in zip(edges, edges[1:])])   # (blocks, W)
    offsets = (edges[:-1] + edges[1:] - 1) / 2 - (H - 1) / 2   # each block's middle row from the track's
    steps, coarse = round(MAX_SKEW / SKEW_STEP), int(np.clip(round(1.0 / (H * SKEW_STEP)), 1, 8))
    best = _sharpest(profiles, offsets, np.arange(-steps, steps + 1, coarse))   # a column over the height at most
    return float(_sharpest(profiles, offsets, best + np.arange(-coarse, coarse + 1)) * SKEW_STEP)


def _sharpest(profiles: np.ndarray, offsets: np.ndarray, steps: np.ndarray) -> int:
    """The shear, in `SKEW_STEP`s, whose summed profile (each block's read shear * offset columns along, linearly
    between columns, zero past the sides) has the largest sum of squares; the smallest of equals (0 on a blank
    track)."""
    K, W = profiles.shape
    shift = (steps * SKEW_STEP)[:, None] * offsets[None, :]   # (S, K) columns
    whole = np.floor(shift).astype(np.int64)
    part = (shift - whole).astype(np.float32)[..., None]
    pad = int(np.abs(whole).max()) + 2
    windows = sliding_window_view(np.pad(profiles.astype(np.float32), ((0, 0), (pad, pad))), W, axis=1)
    k = np.arange(K)[None, :]
    shifted = windows[k, pad + whole] * (1 - part) + windows[k, pad + whole + 1] * part   # (S, K, W)
    sharpness = (shifted.sum(axis=1) ** 2).sum(axis=1)
    return int(steps[np.lexsort((np.abs(steps), -sharpness))[0]])


def dark_line(gray: np.ndarray, curve2: np.ndarray, ratio: float, border_px: int, min_prob: float):
    """The curve-1 evidence of the track's one dark straight line, (H, W) float32 in [0, 1], or None.

    gray: (H, W) uint8 track pixels (ink dark). curve2: (H, W) curve-2 class probabilities; a line on which
    curve 2 is seen (>= min_prob, within half the drift) on more than 30% of its blocks is curve 2's. ratio: how
    many times darker than any other line it must be. border_px: the tracer's border band (`TracingParams`)."""
    H, W = gray.shape
    ink = np.clip(np.percentile(gray, 75) - gray.astype(np.float32), 0, None)   # grey levels over the paper
    edges = np.linspace(0, H, min(H, max(4, H // BLOCK)) + 1).astype(int)   # no empty block on a short track
    profiles = np.stack([np.quantile(cv2.dilate(ink[a:b], np.ones((1, 3), np.uint8)), INKED, axis=0)
                         for a, b in zip(edges, edges[1:])])
    drift, edge = max(3.0, 0.03 * W), max(border_px, int(EDGE * W))
    peaks = [_peaks(profile, edge) for profile in profiles]
    lines = [line for line in _lines(profiles, peaks, drift) if len(line) >= MIN_BLOCKS * len(profiles)
             and not _on(curve2, line, edges, drift, min_prob)]
    if not lines:
        return None
    levels = np.array([np.median([profiles[b, x] for b, x in line]) for line in lines])
    order = np.argsort(-levels)
    best, level = lines[order[0]], levels[order[0]]
    family = np.median([profiles[b, x] for b, xs in enumerate(peaks) for x in xs])
    if level < max(FAMILY * family, family + MARGIN) or (len(lines) > 1 and level < ratio * levels[order[1]]):
        return None
    xs = _path(best, edges, H)
    fill = np.mean([ink[y, max(0, x - 3):x + 4].max() > level / 2 for y, x in enumerate(xs)])
    if fill < MIN_FILL:
        return None
    return _evidence(ink, xs, level, int(np.ceil(drift / 2)) + 2)


def _peaks(profile: np.ndarray, edge: int) -> list[int]:
    """Columns where a block's profile peaks (the first column of a flat top), more than `edge` from the sides."""
    W = len(profile)
    return [x for x in range(edge + 1, W - edge - 1) if profile[x] > MIN_PEAK
            and profile[x] > profile[x - 1] and profile[x] == profile[max(0, x - 3):x + 4].max()]


def _lines(profiles: np.ndarray, peaks: list[list[int]], drift: float) -> list[list[tuple[int, int]]]:
    """Peaks linked block to block into lines [(block, column), ...]: each block's peaks, strongest first, join
    the nearest line that reached the block above within `drift` columns, or start a line."""
    lines = []
    for b, (profile, columns) in enumerate(zip(profiles, peaks)):
        for x in sorted(columns, key=lambda x: -profile[x]):
            open_lines = [line for line in lines if line[-1][0] == b - 1 and abs(line[-1][1] - x) <= drift]
            if open_lines:
                min(open_lines, key=lambda line: abs(line[-1][1] - x)).append((b, x))
            else:
                lines.append([(b, x)])
    return lines


def _on(plane: np.ndarray, line, edges, drift: float, min_prob: float) -> bool:
    """Whether `plane`'s class is seen along `line` (within half the drift, on half a block's rows) in more than
    30% of its blocks."""
    r = int(np.ceil(max(3.0, drift / 2)))
    seen = [(plane[edges[b]:edges[b + 1], max(0, x - r):x + r + 1] >= min_prob).any(axis=1).mean() >= 0.5
            for b, x in line]
    return np.mean(seen) > 0.3


def _path(line, edges, H: int) -> np.ndarray:
    """(H,) int column of the line on every row: linear between the blocks' middles, flat beyond."""
    mids = np.array([(edges[b] + edges[b + 1]) / 2 for b, _ in line])
    return np.round(np.interp(np.arange(H), mids, [x for _, x in line])).astype(int)


def _evidence(ink: np.ndarray, xs: np.ndarray, level: float, r: int) -> np.ndarray:
    """Curve-1 evidence: the line's ink within r columns of its path, as a fraction of its darkness (at least
    one half where inked over half of it, so the tracer counts the line as seen)."""
    H, W = ink.shape
    out = np.zeros((H, W), np.float32)
    for y, x in enumerate(xs):
        a, b = max(0, x - r), min(W, x + r + 1)
        row = ink[y, a:b] / level
        out[y, a:b] = np.where(row > 0.5, np.clip(row, 0.5, 1.0), 0.0)
    return out
