"""Evaluation metrics for traced curves against ground truth, their summary table, and QC overlays.

Positions are fractions of track width on the 300-point depth grid, shape (300, 2): column 0 is curve 1 (solid),
column 1 curve 2 (dashed/dotted). NaN in a truth or prediction marks a point without a value; such points are
left out of every metric. Masks are HxW integer class maps (0 background, 1 curve 1, 2 curve 2).
Summaries are JSON-able: a metric with no data is None, never NaN. `compare` pairs two reports of one folder on
the scans both read (`digitise compare`).
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from contracts import N_DEPTH
from digitiser.tracing import observe_radius

WIDTH_BINS = (150, 250, 400)  # px: per-width breakdown edges (narrow tracks have a larger sub-pixel floor)
PIXEL_KINDS = ("colour", "grey", "bilevel")   # what a scan decodes to (evaluate.pixel_kind)
# fraction of width: per-roughness breakdown edges (a curve that moves further between depth points than a
# stroke is wide is drawn as near-horizontal strokes, whose value at a depth point a scan hardly shows)
ROUGHNESS_BINS = (0.005, 0.01, 0.02, 0.05)
SWAP_TOL = 0.01  # fraction of track width: closer curves cannot be told apart, so no swap is counted
# error_by_cause, fractions of width: a point read further off than GROSS is put down to what the reading lies on
GROSS = 0.03       # (p95 target 0.02: a point this far off is on the wrong line, not a sub-pixel miss)
EDGE_BAND = 0.02   # ... a side of the track, where the truth is not within twice this of the same side
NEAR_LINE = 0.015  # ... the other curve's truth, or the third line's
CAUSES = ("near", "edge", "other_curve", "third_line", "elsewhere")
_RED, _BLUE, _GREEN = (0, 0, 255), (255, 0, 0), (0, 170, 0)  # BGR
_SHIFT = 4  # cv2 fixed-point bits for sub-pixel drawing


def _check_positions(*arrays: np.ndarray) -> None:
    for a in arrays:
        if np.shape(a) != (N_DEPTH, 2):
            raise ValueError(f"curve positions must have shape ({N_DEPTH}, 2) (depth points x curves), "
                             f"got {np.shape(a)}")


def curve_errors(pred_x: np.ndarray, true_x: np.ndarray) -> dict:
    """Absolute position errors per curve, as fractions of track width.

    Args:
        pred_x, true_x: (300, 2) float positions (fractions of width); NaN points are left out.
    Returns:
        {"mae_1", "p95_1", "mae_2", "p95_2"}: mean and 95th percentile of |pred - true| for curve 1 and 2
        (float; NaN when a curve has no point with both values).
    """
    _check_positions(pred_x, true_x)
    out = {}
    for i in range(2):
        err = np.abs(np.asarray(pred_x, float)[:, i] - np.asarray(true_x, float)[:, i])
        err = err[np.isfinite(err)]
        out[f"mae_{i + 1}"] = float(err.mean()) if err.size else math.nan
        out[f"p95_{i + 1}"] = float(np.percentile(err, 95)) if err.size else math.nan
    return out


def swap_rate(pred_x: np.ndarray, true_x: np.ndarray, tol: float = SWAP_TOL) -> float:
    """Fraction of (depth point, curve) pairs where a curve is read at the other curve's position.

    For depth point k and curve c with other curve o, the pair is *eligible* when both truths and the prediction
    are finite and the true curves are apart: ``|true_c - true_o| > tol``; it is *swapped* when the prediction is
    closer to the other curve's truth: ``|pred_c - true_o| < |pred_c - true_c|``. The rate is
    swapped / eligible over both curves and all depth points (0.0 when nothing is eligible). A crossing read with
    exchanged identities scores 1 on every point from the crossing until the curves cross back.

    Args:
        pred_x, true_x: (300, 2) float positions (fractions of width).
        tol: minimum true separation (fraction of width) for a point to count.
    """
    _check_positions(pred_x, true_x)
    pred, true = np.asarray(pred_x, float), np.asarray(true_x, float)
    swapped = eligible = 0
    for c, o in ((0, 1), (1, 0)):
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(pred[:, c]) & np.isfinite(true).all(axis=1) & (np.abs(true[:, c] - true[:, o]) > tol)
            swapped += int((np.abs(pred[ok, c] - true[ok, o]) < np.abs(pred[ok, c] - true[ok, c])).sum())
        eligible += int(ok.sum())
    return swapped / eligible if eligible else 0.0


def iou_per_class(pred_mask: np.ndarray, true_mask: np.ndarray) -> dict[int, float]:
    """Intersection over union of classes 1 and 2 between two HxW class maps.

    Returns {1: iou, 2: iou}; NaN for a class present in neither map (left out of summary means).
    """
    if np.shape(pred_mask) != np.shape(true_mask):
        raise ValueError(f"masks differ in shape: {np.shape(pred_mask)} vs {np.shape(true_mask)}")
    out = {}
    for c in (1, 2):
        p, t = np.asarray(pred_mask) == c, np.asarray(true_mask) == c
        union = int(np.count_nonzero(p | t))
        out[c] = np.count_nonzero(p & t) / union if union else math.nan
    return out


def legible_fraction(true_mask: np.ndarray, true_x: np.ndarray, observe_px: float = 6.0) -> tuple[float, float]:
    """Fraction of the 300 depth points at which each curve can be read off the scan at all, by its truth.

    Curve c is legible at depth point k when the truth mask holds ink of class c within the tracer's
    ``observe_radius`` of ``y_k`` (ink the other curve was drawn over, or a 1-bit scan dropped, is not
    there) and its true position is more than 1.5 px inside the track (a curve pinned off-scale on the
    border line is indistinguishable from the border). A scan whose curve is legible at fewer points than the
    tracer's minimum coverage cannot be digitised without fabricating that curve: refusing it is right.
    """
    _check_positions(true_x)
    mask = np.asarray(true_mask)
    h, w = mask.shape
    y = np.arange(N_DEPTH) * (h - 1) / (N_DEPTH - 1)
    r = observe_radius(h, observe_px)
    lo = np.clip(np.ceil(y - r), 0, h).astype(int)
    hi = np.clip(np.floor(y + r) + 1, 0, h).astype(int)
    out = []
    for c in (1, 2):
        rows_inked = np.concatenate([[0], np.cumsum((mask == c).any(axis=1))])
        px = np.asarray(true_x, float)[:, c - 1] * w
        inside = (px > 1.5) & (px < w - 1.5)  # NaN compares False: no truth, not legible
        out.append(float(((rows_inked[hi] > rows_inked[lo]) & inside).mean()))
    return out[0], out[1]


def scan_record(scan_id: str, pred_x=None, true_x=None, pred_mask=None, true_mask=None,
                error: BaseException | None = None, legible=None) -> dict:
    """One scan's entry for ``summarise``: its id and either its metrics or its failure.

    Pass pred_x and true_x ((300, 2) fractions) for a traced scan, plus the masks for IoU when available; pass
    ``error`` (e.g. a CurveNotFound) for a scan that failed. Keys: id, failed, error, error_kind, mae_1, p95_1,
    mae_2, p95_2, swap_rate, iou_1, iou_2 (metrics None when absent), and legible_1, legible_2 when ``legible``
    (``legible_fraction`` of the truth) is given.
    """
    rec = {"id": str(scan_id), "failed": error is not None, "error": None, "error_kind": None,
           "mae_1": None, "p95_1": None, "mae_2": None, "p95_2": None, "swap_rate": None, "iou_1": None, "iou_2": None}
    if legible is not None:
        rec["legible_1"], rec["legible_2"] = (float(v) for v in legible)
    if error is not None:
        rec.update(error=str(error), error_kind=type(error).__name__)
        return rec
    if pred_x is None or true_x is None:
        raise ValueError("scan_record needs pred_x and true_x for a scan that did not fail (or error=...)")
    rec.update({k: _json_float(v) for k, v in curve_errors(pred_x, true_x).items()})
    rec["swap_rate"] = swap_rate(pred_x, true_x)
    if pred_mask is not None and true_mask is not None:
        rec.update({f"iou_{c}": _json_float(v) for c, v in iou_per_class(pred_mask, true_mask).items()})
    return rec


def summarise(per_scan: list[dict], worst_k: int = 5, min_coverage: float = 0.5) -> dict:
    """Aggregate ``scan_record`` entries.

    Means are over scans that did not fail and have the metric: mae_1/mae_2 (mean per-scan MAE), mae (mean of
    the two), p95_1/p95_2 (mean per-scan 95th percentile), swap_rate, iou_1/iou_2. Also n_scans, n_failed,
    failure_fraction, failures (count per error kind) and worst (ids of the worst_k traced scans by the larger of
    their two MAEs, worst first). Records with legible_1/2: n_illegible (scans with a curve legible at fewer than
    min_coverage of the points: refusing those is right), n_failed_legible and failure_fraction_legible (the
    failures among the others). Units: fractions of track width. JSON-able (None where there is no data).
    """
    ok = [r for r in per_scan if not r.get("failed")]
    failed = [r for r in per_scan if r.get("failed")]
    out = {"n_scans": len(per_scan), "n_failed": len(failed),
           "failure_fraction": len(failed) / len(per_scan) if per_scan else None}
    for key in ("mae_1", "mae_2", "p95_1", "p95_2", "swap_rate", "iou_1", "iou_2"):
        vals = [r[key] for r in ok if r.get(key) is not None]
        out[key] = float(np.mean(vals)) if vals else None
    both = [out["mae_1"], out["mae_2"]]
    out["mae"] = float(np.mean(both)) if None not in both else None
    kinds = [r.get("error_kind") or "error" for r in failed]
    out["failures"] = {k: kinds.count(k) for k in sorted(set(kinds))}
    scored = [r for r in ok if r.get("mae_1") is not None and r.get("mae_2") is not None]
    scored.sort(key=lambda r: max(r["mae_1"], r["mae_2"]), reverse=True)
    out["worst"] = [r["id"] for r in scored[:worst_k]]
    judged = [r for r in per_scan if r.get("legible_1") is not None]
    if judged:
        legible = [r for r in judged if min(r["legible_1"], r["legible_2"]) >= min_coverage]
        out["n_illegible"] = len(judged) - len(legible)
        out["n_failed_legible"] = sum(bool(r.get("failed")) for r in legible)
        out["failure_fraction_legible"] = out["n_failed_legible"] / len(legible) if legible else None
    if any("width" in r for r in per_scan):
        out["by_width"] = by_width(per_scan)
    if any("pixels" in r for r in per_scan):
        out["by_pixels"] = by_pixels(per_scan)
    if any("roughness" in r for r in per_scan):
        out["by_roughness"] = _binned(per_scan, "roughness", ROUGHNESS_BINS)
    if any("features" in r for r in per_scan):
        out["by_feature"] = by_feature(per_scan)
    if any("styles" in r for r in per_scan):
        out["by_style"] = by_style(per_scan)
    with_cause = [r for r in ok if r.get("cause")]
    if with_cause:
        out["error_by_cause"] = {}
        for k in (1, 2):   # over the scans that have the curve's MAE, so that the parts sum to it
            parts = [r["cause"][f"curve_{k}"] for r in with_cause if r[f"mae_{k}"] is not None]
            out["error_by_cause"][f"curve_{k}"] = {c: float(np.mean([p[c] for p in parts])) if parts else None
                                                   for c in CAUSES}
    third = [r for r in ok if r.get("on_third_1") is not None]
    if third:   # truth that records a third line (the foreign family)
        out["on_third_line"] = {"n_scans": len(third),
                                **{f"curve_{k}": float(np.mean([r[f"on_third_{k}"] for r in third])) for k in (1, 2)}}
    return out


def by_width(per_scan: list[dict], edges=WIDTH_BINS) -> list[dict]:
    """The same means per track-width bin (records with ``width`` in px): [{"lo", "hi", "n_scans", "n_failed",
    "mae_1", "mae_2", "p95_1", "p95_2", "swap_rate"}], bins [lo, hi) from ``edges``, hi None for the last."""
    return _binned(per_scan, "width", edges)


def on_third_line(pred_x: np.ndarray, true_x: np.ndarray, third_x: np.ndarray, width: int,
                  near_px: float = 3.0, off_px: float = 6.0) -> tuple[float, float]:
    """Per curve, the share of the depth points where the third line (a line that is neither curve; (300,)
    fractions, NaN where absent) runs off the curve's truth (> off_px) and the reading lies on it (<= near_px):
    the curve was read on the wrong line. 0.0 where the two never part."""
    out = []
    for k in range(2):
        with np.errstate(invalid="ignore"):
            apart = np.abs(third_x - true_x[:, k]) * width > off_px
            on = apart & (np.abs(pred_x[:, k] - third_x) * width <= near_px)
        out.append(float(on.sum() / apart.sum()) if apart.any() else 0.0)
    return out[0], out[1]


def error_by_cause(pred_x: np.ndarray, true_x: np.ndarray, third_x: np.ndarray | None = None) -> dict:
    """Each curve's MAE split by what the reading lies on, so the parts sum to it (`CAUSES`, fractions of width):
    near (within GROSS of the truth), and of the points further off: edge (the reading within EDGE_BAND of a
    side where the truth is not within twice that of it), other_curve (within NEAR_LINE of the other curve's
    truth), third_line (within NEAR_LINE of `third_x`, (300,) fractions, NaN where there is none), elsewhere.
    Returns {"curve_1": {cause: share}, "curve_2": {...}}; all 0.0 for a curve with no point to judge."""
    _check_positions(pred_x, true_x)
    pred, true = np.asarray(pred_x, float), np.asarray(true_x, float)
    third = np.full(len(pred), np.nan) if third_x is None else np.asarray(third_x, float)
    out = {}
    with np.errstate(invalid="ignore"):
        for k in range(2):
            p, t, o = pred[:, k], true[:, k], true[:, 1 - k]
            err = np.abs(p - t)
            judged = np.isfinite(err)
            gross = judged & (err > GROSS)
            edge = gross & (((p < EDGE_BAND) & ~(t < 2 * EDGE_BAND)) | ((p > 1 - EDGE_BAND) & ~(t > 1 - 2 * EDGE_BAND)))
            other = gross & ~edge & (np.abs(p - o) <= NEAR_LINE)
            on_third = gross & ~edge & ~other & (np.abs(p - third) <= NEAR_LINE)
            parts = {"near": judged & ~gross, "edge": edge, "other_curve": other, "third_line": on_third,
                     "elsewhere": gross & ~edge & ~other & ~on_third}
            n = max(int(judged.sum()), 1)
            out[f"curve_{k + 1}"] = {c: float(err[m].sum() / n) for c, m in parts.items()}
    return out


def roughness(true_x) -> float:
    """How far the truth moves between neighbouring depth points: the median of |x[k+1] - x[k]| (fraction of
    width) of its rougher curve. Own-generator scans stay under 0.02; real logs plotted at a compressed depth
    scale often do not (a curve of near-horizontal strokes)."""
    steps = np.abs(np.diff(np.asarray(true_x, float), axis=0))
    medians = [np.median(s[np.isfinite(s)]) for s in steps.T if np.isfinite(s).any()]
    return float(max(medians)) if medians else 0.0


def _binned(per_scan: list[dict], key: str, edges) -> list[dict]:
    """Group means of the records that have `key`, in bins [lo, hi) from `edges` (0 first, hi None last)."""
    bounds = [0, *edges, None]
    return [{"lo": lo, "hi": hi, **_group_means([r for r in per_scan if key in r and r[key] >= lo
                                                  and (hi is None or r[key] < hi)])}
            for lo, hi in zip(bounds[:-1], bounds[1:])]


def by_pixels(per_scan: list[dict]) -> list[dict]:
    """The same means per kind of decoded pixels (records with ``pixels``: "colour", "grey" or "bilevel"):
    [{"pixels", "n_scans", ...}] for the kinds present."""
    kinds = [k for k in PIXEL_KINDS if any(r.get("pixels") == k for r in per_scan)]
    return [{"pixels": k, **_group_means([r for r in per_scan if r.get("pixels") == k])} for k in kinds]


def by_feature(per_scan: list[dict]) -> list[dict]:
    """The same means per feature that the truth records (``features``, e.g. the foreign family's "light pen"
    and "third line"; a scan may count under several), and "none" for the scans with none of them."""
    described = [r for r in per_scan if "features" in r]
    names = sorted({f for r in described for f in r["features"]})
    return ([{"feature": f, **_group_means([r for r in described if f in r["features"]])} for f in names]
            + [{"feature": "none", **_group_means([r for r in described if not r["features"]])}])


def by_style(per_scan: list[dict]) -> list[dict]:
    """The same means per line style that the truth records (``styles``, e.g. the foreign family's "curve 2 dot
    1:1.65" or "third line dash-dot 6.4:1.6:1:1.6"; a scan counts under each of its lines' styles)."""
    names = sorted({f for r in per_scan for f in r.get("styles", [])})
    return [{"style": f, **_group_means([r for r in per_scan if f in r.get("styles", [])])} for f in names]


def _group_means(recs: list[dict]) -> dict:
    ok = [r for r in recs if not r.get("failed")]
    row = {"n_scans": len(recs), "n_failed": len(recs) - len(ok)}
    for key in ("mae_1", "mae_2", "p95_1", "p95_2", "swap_rate"):
        vals = [r[key] for r in ok if r.get(key) is not None]
        row[key] = float(np.mean(vals)) if vals else None
    return row


PAIRED = ("mae_1", "mae_2", "swap_rate")


def compare(base: dict, other: dict, resamples: int = 2000, seed: int = 0) -> dict:
    """Paired comparison of two ``digitise eval`` reports of one folder (their per-scan records).

    Two segmenters (or tracers) that refuse different scans are not compared by their means: refusing the hardest
    scans lowers a mean as surely as reading them better does. So the means are taken over the scans both read
    (n_both), with the difference other - base and its 95% interval from a seeded bootstrap over those scans;
    the scans only one of them reads are listed apart with the MAEs that one read them at (worst curve).
    """
    if base.get("truth_digest") and other.get("truth_digest") and base["truth_digest"] != other["truth_digest"]:
        raise ValueError("the reports scored different truth files (truth_digest differs): compare reports of the "
                         "same folder")
    a = {r["id"]: r for r in base["per_scan"]}
    b = {r["id"]: r for r in other["per_scan"]}

    def size(r):
        return r.get("width"), r.get("height")
    if set(a) != set(b) or any(size(a[k]) != size(b[k]) for k in a):
        raise ValueError("the reports cover different scans (ids or image sizes differ): "
                         "compare reports of the same folder")
    both = sorted(k for k in a if not a[k]["failed"] and not b[k]["failed"])
    out = {"n_scans": len(a), "n_both": len(both)}
    rng = np.random.default_rng(seed)
    for key in PAIRED:
        scored = [k for k in both if a[k][key] is not None and b[k][key] is not None]  # None: no truth there
        if scored:
            x = np.array([a[k][key] for k in scored])
            y = np.array([b[k][key] for k in scored])
            means = (y - x)[rng.integers(0, len(scored), (resamples, len(scored)))].mean(axis=1)
            lo, hi = np.percentile(means, [2.5, 97.5])
            out[key] = {"base": float(x.mean()), "other": float(y.mean()), "diff": float((y - x).mean()),
                        "ci95": [float(lo), float(hi)]}

    def only(read: dict, refused: dict) -> dict:
        ids = sorted(k for k in read if not read[k]["failed"] and refused[k]["failed"])
        return {k: max(read[k][m] or 0.0 for m in ("mae_1", "mae_2")) for k in ids}
    out["only_base"], out["only_other"] = only(a, b), only(b, a)
    return out


def format_sweep(summaries: dict[str, dict]) -> str:
    """One line per tracing of a sweep (``evaluate.run_sweep``): refusals beside the errors, since a threshold
    that refuses more scans lowers the means by leaving out the hardest."""
    def pct(v):
        return "-" if v is None else f"{100 * v:.2f}%"

    n = max(len(label) for label in summaries) + 2
    lines = [f"{'tracing':{n}}{'scans':>6}{'failed':>7}{'legible':>8}{'MAE 1':>8}{'MAE 2':>8}{'p95 1':>8}{'p95 2':>8}"
             f"{'swap':>7}"]
    for label, s in summaries.items():
        lines.append(f"{label:{n}}{s['n_scans']:>6}{s['n_failed']:>7}{s.get('n_failed_legible', '-'):>8}"
                     f"{pct(s['mae_1']):>8}{pct(s['mae_2']):>8}{pct(s['p95_1']):>8}{pct(s['p95_2']):>8}"
                     f"{pct(s['swap_rate']):>7}")
    lines.append("failed: refused (CurveNotFound or another error); legible: of those, scans whose truth shows each "
                 "curve at most depth points")
    return "\n".join(lines)


def format_comparison(c: dict, base_name: str, other_name: str) -> str:
    """Human-readable ``compare`` result (errors in % of track width)."""
    lines = [f"{c['n_scans']} scans, both read {c['n_both']}; base {base_name}, other {other_name}",
             f"{'on the scans both read':24}{'base':>9}{'other':>9}{'diff':>9}  95% interval of the diff"]
    for key, label in zip(PAIRED, ("MAE curve 1", "MAE curve 2", "swap rate")):
        if key in c:
            m = c[key]
            lines.append(f"{label:24}{100 * m['base']:>8.2f}%{100 * m['other']:>8.2f}%{100 * m['diff']:>+8.2f}%"
                         f"  [{100 * m['ci95'][0]:+.2f}%, {100 * m['ci95'][1]:+.2f}%]")
    for key, who in (("only_base", "base"), ("only_other", "other")):
        worst = c[key]
        gross = sum(v > 0.1 for v in worst.values())
        lines.append(f"read by {who} only: {len(worst)} scans, {gross} of them more than 10% of the width off"
                     + (f" ({', '.join(sorted(worst)[:8])}{' ...' if len(worst) > 8 else ''})" if worst else ""))
    return "\n".join(lines)


def format_table(summary: dict) -> str:
    """Human-readable report of a ``summarise`` result (errors shown in % of track width)."""
    def pct(v, digits=2):
        return "-" if v is None else f"{100 * v:.{digits}f}%"

    def num(v):
        return "-" if v is None else f"{v:.3f}"

    s = summary
    lines = [
        f"scans {s['n_scans']}, failed {s['n_failed']} ({pct(s['failure_fraction'], 1)})"
        + "".join(f", {k}: {n}" for k, n in s.get("failures", {}).items()),
        f"{'':24}{'curve 1':>10}{'curve 2':>10}",
        f"{'MAE (% of width)':24}{pct(s['mae_1']):>10}{pct(s['mae_2']):>10}",
        f"{'p95 |error| (% width)':24}{pct(s['p95_1']):>10}{pct(s['p95_2']):>10}",
        f"{'IoU':24}{num(s['iou_1']):>10}{num(s['iou_2']):>10}",
        f"{'swap rate':24}{pct(s['swap_rate']):>10}",
    ]
    if s.get("n_illegible") is not None:
        lines.append(f"{s['n_illegible']} scans have a curve hidden (under the other curve or on the track edge) "
                     f"at most depth points; of the others {s['n_failed_legible']} failed "
                     f"({pct(s['failure_fraction_legible'], 1)})")
    groups = [("width (px)", s.get("by_width") or [],
               lambda b: f"{b['lo']}-{b['hi'] - 1}" if b["hi"] is not None else f">={b['lo']}"),
              ("pixels", s.get("by_pixels") or [], lambda b: b["pixels"]),
              ("roughness", s.get("by_roughness") or [],
               lambda b: f"{b['lo']}-{b['hi']}" if b["hi"] is not None else f">={b['lo']}"),
              ("feature", s.get("by_feature") or [], lambda b: b["feature"]),
              ("line style", s.get("by_style") or [], lambda b: b["style"])]
    for title, rows, label in groups:
        n = max([12] + [len(label(b)) + 1 for b in rows])
        if rows:
            lines.append(f"{title:{n}}{'scans':>6}{'failed':>7}{'MAE 1':>8}{'MAE 2':>8}{'p95 1':>8}{'p95 2':>8}{'swap':>7}")
        for b in rows:
            lines.append(f"{label(b):{n}}{b['n_scans']:>6}{b['n_failed']:>7}{pct(b['mae_1']):>8}{pct(b['mae_2']):>8}"
                         f"{pct(b['p95_1']):>8}{pct(b['p95_2']):>8}{pct(b['swap_rate']):>7}")
    for curve, parts in (s.get("error_by_cause") or {}).items():
        lines.append(f"MAE of {curve.replace('_', ' ')} by what the reading lies on: "
                     + ", ".join(f"{c.replace('_', ' ')} {pct(v, 2)}" for c, v in parts.items()))
    if s.get("on_third_line"):
        t = s["on_third_line"]
        lines.append(f"read on the third line ({t['n_scans']} traced scans with one): curve 1 {pct(t['curve_1'], 1)}, "
                     f"curve 2 {pct(t['curve_2'], 1)} of the depth points where it runs apart from the curve")
    if s.get("worst"):
        lines.append("worst: " + ", ".join(s["worst"]))
    return "\n".join(lines)


def qc_overlay(image: np.ndarray, x_frac_pred: np.ndarray, x_frac_true: np.ndarray | None = None) -> np.ndarray:
    """Traced curves drawn over the scan for a visual check.

    Args:
        image: HxW uint8 grayscale or HxWx3 uint8 BGR scan (not modified).
        x_frac_pred: (300, 2) traced positions (fractions of width): curve 1 red, curve 2 blue, solid lines.
        x_frac_true: optional (300, 2) truth, drawn as green dots at depth points, spaced at least a dot apart
            (NaN points skipped).
    Returns:
        HxWx3 uint8 BGR image.
    """
    _check_positions(x_frac_pred, *(() if x_frac_true is None else (x_frac_true,)))
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"image must be HxW or HxWx3 uint8, got {img.dtype} {img.shape}")
    out = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img.copy()
    h, w = out.shape[:2]
    thick = max(1, round(w / 300))
    y = np.arange(N_DEPTH) * (h - 1) / (N_DEPTH - 1)
    for i, colour in ((0, _RED), (1, _BLUE)):
        ok = np.isfinite(x_frac_pred[:, i])
        pts = _fixed_point(np.asarray(x_frac_pred, float)[ok, i] * w - 0.5, y[ok])
        cv2.polylines(out, [pts], False, colour, thick, cv2.LINE_AA, _SHIFT)
    if x_frac_true is not None:
        spacing = (h - 1) / (N_DEPTH - 1)
        step = max(1, math.ceil(4 * thick / max(spacing, 1e-9)))  # gaps at least a dot wide: dotted, not solid
        for i in range(2):
            ok = np.isfinite(np.asarray(x_frac_true, float)[:, i])
            ok[np.arange(N_DEPTH) % step != 0] = False
            for x, yy in _fixed_point(np.asarray(x_frac_true, float)[ok, i] * w - 0.5, y[ok]):
                cv2.circle(out, (int(x), int(yy)), thick * 2**_SHIFT, _GREEN, -1, cv2.LINE_AA, _SHIFT)
    return out


def _fixed_point(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(n, 2) int32 cv2 points (column, row) with _SHIFT fractional bits; x, y in cv2 pixel coordinates."""
    return np.round(np.stack([x, y], axis=1) * 2**_SHIFT).astype(np.int32)


def _json_float(v: float):
    return None if v is None or not math.isfinite(v) else float(v)
