"""Whole sheets (contract v2): where a track lies in a scanned sheet, and which rows its depth points are.

Two optional calibration parts place the track inside a larger scan:

  "window":     {"left_px": L, "right_px": R}: columns [L, R) are the track; column c has its centre at
                fraction (c - L + 0.5) / (R - L) of the track width.
  "depth_ties": [{"row": r, "depth": d}, ...]: at least two, distinct rows, depths strictly monotonic in row;
                depth(row) is the least-squares line through them; a tie further than 2 px from it is refused.

`track_box` turns a calibration and the input's size into the box the track occupies (the mask covers exactly
that box, and only its pixels are segmented) and the 300 depth points' rows inside it:
- no ties: depth point k is row k (H - 1) / 299 (top_depth at the first row, bottom_depth at the last);
- ties: top_depth and bottom_depth become rows through the line; the box spans the rows between them
  (top_depth must lie above bottom_depth on the sheet), and both must lie within the image.
"""
import math
from dataclasses import dataclass

import numpy as np

from contracts.errors import ContractViolation
from contracts.errors import expect as _expect

N_DEPTH = 300
MAX_TIE_PX = 2.0        # a tie further than this from the least-squares line is refused
_ROW_DECIMALS = 6       # rows from the line are rounded here, so a depth on a whole row gives that row


@dataclass(frozen=True)
class Window:
    left_px: int
    right_px: int

    def to_dict(self) -> dict:
        return {"left_px": self.left_px, "right_px": self.right_px}


@dataclass(frozen=True)
class DepthTie:
    row: float
    depth: float

    def to_dict(self) -> dict:
        return {"row": self.row, "depth": self.depth}


@dataclass(frozen=True)
class TrackBox:
    """The track's pixels in the input: columns [left_px, right_px), rows [top_px, bottom_px); `rows`:
    (300,) float64 rows of the depth points, relative to top_px (row centres)."""
    left_px: int
    right_px: int
    top_px: int
    bottom_px: int
    rows: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return self.bottom_px - self.top_px, self.right_px - self.left_px

    def to_dict(self) -> dict:
        return {"left_px": self.left_px, "right_px": self.right_px, "top_px": self.top_px,
                "bottom_px": self.bottom_px}


def parse_window(raw) -> Window:
    _expect(isinstance(raw, dict) and set(raw) == {"left_px", "right_px"},
            f"window must be {{\"left_px\": L, \"right_px\": R}} (columns [L, R) of the scan), got {raw!r}")
    left, right = raw["left_px"], raw["right_px"]
    _expect(all(_whole(v) for v in (left, right)) and 0 <= left < right,
            f"window needs whole pixel columns 0 <= left_px < right_px, got {left!r}..{right!r}")
    return Window(int(left), int(right))


def parse_ties(raw, number) -> tuple[DepthTie, ...]:
    """Ties sorted by row; `number(v, field)` checks one number (the calibration's own rule)."""
    _expect(isinstance(raw, list) and len(raw) >= 2,
            f"depth_ties must be a list of at least two {{\"row\": r, \"depth\": d}}, got {raw!r}")
    ties = []
    for i, t in enumerate(raw):
        _expect(isinstance(t, dict) and set(t) == {"row", "depth"},
                f"depth_ties[{i}] must be {{\"row\": r, \"depth\": d}}, got {t!r}")
        ties.append(DepthTie(number(t["row"], f"depth_ties[{i}].row"), number(t["depth"], f"depth_ties[{i}].depth")))
    rows = [t.row for t in ties]
    _expect(len(set(rows)) == len(rows), f"depth_ties rows must be distinct, got {rows}")
    ties.sort(key=lambda t: t.row)
    steps = np.sign(np.diff([t.depth for t in ties]))
    bad = np.flatnonzero(steps != steps[0]) if steps[0] != 0 else [0]
    if len(bad):
        t = ties[bad[0] + 1]
        raise ContractViolation(f"depth_ties are not monotonic: the tie at row {t.row:g} (depth {t.depth:g}) "
                                "breaks the order of the ties above it; depth must grow (or shrink) down the sheet")
    _check_line(ties)
    return tuple(ties)


def depth_line(ties: tuple[DepthTie, ...]) -> tuple[float, float]:
    """(a, b) of the least-squares line depth = a + b * row through the ties."""
    b, a = np.polyfit([t.row for t in ties], [t.depth for t in ties], 1)
    return float(a), float(b)


def _check_line(ties):
    """The tie furthest from the least-squares line (in rows) must lie within MAX_TIE_PX of it."""
    a, b = depth_line(ties)
    off, t = max(((abs(t.row - (t.depth - a) / b), t) for t in ties), key=lambda pair: pair[0])
    _expect(off <= MAX_TIE_PX, f"the depth tie at row {t.row:g} (depth {t.depth:g}) lies {off:.1f} px from the "
                               f"line through the ties (at most {MAX_TIE_PX:g}): check its row and depth")


def track_box(window: Window | None, ties: tuple[DepthTie, ...] | None, top_depth: float, bottom_depth: float,
              width: int, height: int) -> TrackBox:
    """The track's box in a `width` x `height` input and its depth points' rows. Raises ContractViolation when
    the window or the depth interval lies outside the image."""
    left, right = (0, width) if window is None else (window.left_px, window.right_px)
    _expect(right <= width, f"window columns {left}..{right} run past the scan's width of {width} px")
    if not ties:
        return TrackBox(left, right, 0, height, np.arange(N_DEPTH) * (height - 1) / (N_DEPTH - 1))
    a, b = depth_line(ties)
    r_top, r_bottom = (round((d - a) / b, _ROW_DECIMALS) + 0.0 for d in (top_depth, bottom_depth))
    _expect(r_top < r_bottom, f"top_depth {top_depth:g} lies at row {r_top:g}, below bottom_depth {bottom_depth:g} "
                              f"at row {r_bottom:g}: top_depth must be the upper end of the interval on the sheet")
    _expect(0 <= r_top and r_bottom <= height - 1,
            f"the interval {top_depth:g}..{bottom_depth:g} lies at rows {r_top:g}..{r_bottom:g}, outside the "
            f"scan's rows 0..{height - 1}: give an interval the sheet shows")
    top, bottom = math.floor(r_top), math.ceil(r_bottom) + 1
    return TrackBox(left, right, top, bottom, np.linspace(r_top, r_bottom, N_DEPTH) - top)


def _whole(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
