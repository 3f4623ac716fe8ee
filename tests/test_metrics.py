"""Metrics on small hand-made positions and masks."""
import json
import math

import numpy as np
import pytest

from digitiser.metrics import (compare, curve_errors, error_by_cause, format_comparison, format_table,
                               iou_per_class, legible_fraction, on_third_line, qc_overlay, roughness, scan_record, summarise,
                               swap_rate)
from digitiser.tracing import CurveNotFound


def positions(a=0.3, b=0.7):
    return np.column_stack([np.full(300, a), np.full(300, b)])


def crossing():
    """Curve 1 goes left to right, curve 2 right to left: they cross at depth point ~150."""
    t = np.linspace(0.1, 0.9, 300)
    return np.column_stack([t, t[::-1]])


def test_curve_errors_zero_for_exact():
    assert curve_errors(positions(), positions()) == {"mae_1": 0.0, "p95_1": 0.0, "mae_2": 0.0, "p95_2": 0.0}


def test_curve_errors_known_values():
    pred = positions()
    pred[:, 0] += 0.01
    pred[:15, 1] += 0.2  # 5% of points far off: the p95 sits at the edge of that tail
    e = curve_errors(pred, positions())
    assert e["mae_1"] == pytest.approx(0.01) and e["p95_1"] == pytest.approx(0.01)
    assert e["mae_2"] == pytest.approx(0.01) and 0.0 <= e["p95_2"] <= 0.2


def test_curve_errors_skip_nan_truth():
    true = positions()
    true[:100, 0] = np.nan
    pred = positions()
    pred[:100, 0] = 5.0
    assert curve_errors(pred, true)["mae_1"] == 0.0


def test_curve_errors_shape_checked():
    with pytest.raises(ValueError, match=r"\(300, 2\)"):
        curve_errors(np.zeros((300,)), np.zeros((300, 2)))


def test_swap_rate_zero_when_correct():
    assert swap_rate(crossing(), crossing()) == 0.0


def test_swap_rate_one_when_identities_exchanged():
    assert swap_rate(crossing()[:, ::-1], crossing()) == 1.0


def test_swap_rate_after_crossing_only():
    pred = crossing()
    pred[150:] = pred[150:, ::-1]  # the tracer followed the wrong curve after the crossing
    assert swap_rate(pred, crossing()) == pytest.approx(0.5, abs=0.02)


def test_swap_rate_ignores_points_where_curves_touch():
    true = positions(0.5, 0.505)  # closer than the tolerance everywhere
    assert swap_rate(true[:, ::-1], true) == 0.0


def test_iou_known_values():
    true = np.zeros((4, 4), int)
    true[0, :] = 1
    pred = np.zeros((4, 4), int)
    pred[0, :2] = 1
    pred[3, 0] = 2
    iou = iou_per_class(pred, true)
    assert iou[1] == pytest.approx(0.5) and iou[2] == 0.0


def test_iou_nan_when_class_absent():
    assert math.isnan(iou_per_class(np.zeros((3, 3)), np.zeros((3, 3)))[2])


def records():
    good = scan_record("a", positions(0.31, 0.7), positions(),
                       pred_mask=np.ones((2, 2), int), true_mask=np.ones((2, 2), int))
    bad = scan_record("b", positions(0.3, 0.74), positions())
    failed = scan_record("c", error=CurveNotFound(2, 0.1, 0.5))
    return [good, bad, failed]


def test_summarise_aggregates():
    s = summarise(records())
    assert s["n_scans"] == 3 and s["n_failed"] == 1 and s["failure_fraction"] == pytest.approx(1 / 3)
    assert s["mae_1"] == pytest.approx(0.005) and s["mae_2"] == pytest.approx(0.02)
    assert s["mae"] == pytest.approx(0.0125)
    assert s["iou_1"] == 1.0 and s["iou_2"] is None  # class 2 absent from both masks: no data
    assert s["swap_rate"] == 0.0
    assert s["failures"] == {"CurveNotFound": 1}
    assert s["worst"] == ["b", "a"]


def test_summary_is_strict_json():
    json.dumps(summarise(records()), allow_nan=False)
    json.dumps(summarise([]), allow_nan=False)


def test_failed_record_keeps_message():
    rec = records()[2]
    assert rec["failed"] and "curve 2" in rec["error"] and rec["mae_1"] is None


def test_format_table_mentions_numbers():
    text = format_table(summarise(records()))
    assert "failed 1" in text and "0.50%" in text and "2.00%" in text and "CurveNotFound: 1" in text
    assert "worst: b, a" in text


def test_means_are_broken_down_by_the_kind_of_pixels():
    recs = [{**r, "pixels": kind} for r, kind in zip(records(), ("colour", "grey", "colour"))]
    s = summarise(recs)
    assert [b["pixels"] for b in s["by_pixels"]] == ["colour", "grey"]   # kinds present, in PIXEL_KINDS order
    colour = s["by_pixels"][0]
    assert colour["n_scans"] == 2 and colour["n_failed"] == 1 and colour["mae_1"] == recs[0]["mae_1"]
    assert "pixels" in format_table(s) and "colour" in format_table(s)


def test_means_are_broken_down_by_what_the_truth_says_the_track_holds():
    recs = [{**r, "features": f} for r, f in zip(records(), (["light pen", "third line"], [], ["third line"]))]
    s = summarise(recs)
    rows = {b["feature"]: b for b in s["by_feature"]}
    assert list(rows) == ["light pen", "third line", "none"]        # a scan counts under each feature it has
    assert rows["third line"]["n_scans"] == 2 and rows["light pen"]["mae_1"] == recs[0]["mae_1"]
    assert rows["none"]["n_scans"] == 1 and "feature" in format_table(s)
    assert "by_feature" not in summarise(records())                  # only where the truth records features


def test_means_are_broken_down_by_line_style():
    styles = (["curve 2 dot 1:1.65", "third line dash-dot 6.4:1.6:1:1.6"], ["curve 2 dot 1:1.65"], ["curve 2 dash 10:4"])
    recs = [{**r, "styles": st} for r, st in zip(records(), styles)]
    s = summarise(recs)
    rows = {b["style"]: b for b in s["by_style"]}
    assert list(rows) == ["curve 2 dash 10:4", "curve 2 dot 1:1.65", "third line dash-dot 6.4:1.6:1:1.6"]
    assert rows["curve 2 dot 1:1.65"]["n_scans"] == 2 and rows["curve 2 dash 10:4"]["mae_2"] == recs[2]["mae_2"]
    assert "third line dash-dot 6.4:1.6:1:1.6" in format_table(s) and "by_style" not in summarise(records())


def test_a_curve_read_on_the_third_line_is_counted_where_the_line_runs_apart_from_it():
    true = np.stack([np.full(300, 0.2), np.full(300, 0.5)], 1)
    third = np.where(np.arange(300) < 100, 0.5, 0.8)        # on curve 2 for 100 points, then apart from it
    read = true.copy()
    read[100:150, 1] = 0.8                                  # curve 2 taken by the third line at 50 of 200 points
    assert on_third_line(read, true, third, width=200) == (0.0, 0.25)
    assert on_third_line(true, true, third, width=200) == (0.0, 0.0)
    assert on_third_line(read, true, np.full(300, np.nan), width=200) == (0.0, 0.0)
    recs = records()
    recs[0].update(on_third_1=0.0, on_third_2=0.25)
    s = summarise(recs)
    assert s["on_third_line"] == {"n_scans": 1, "curve_1": 0.0, "curve_2": 0.25}
    assert "third line" in format_table(s) and "on_third_line" not in summarise(records())


def test_roughness_is_the_median_move_between_depth_points_of_the_rougher_curve():
    k = np.arange(300)
    zigzag = 0.5 + 0.05 * (k % 2)                     # moves 0.05 of the width at every depth point
    smooth = 0.2 + 0.1 * k / 299                      # 0.1 over the whole depth
    x = np.stack([smooth, zigzag], axis=1)
    assert roughness(x) == pytest.approx(0.05)
    assert roughness(np.stack([smooth, smooth], axis=1)) == pytest.approx(0.1 / 299)
    x[::2, 1] = np.nan                                 # no truth at every other point: no step to measure there
    assert roughness(x) == pytest.approx(0.1 / 299)
    recs = [{**r, "roughness": v} for r, v in zip(records(), (0.001, 0.03, 0.2))]
    s = summarise(recs)
    assert [b["n_scans"] for b in s["by_roughness"]] == [1, 0, 0, 1, 1]
    assert s["by_roughness"][0]["mae_1"] == recs[0]["mae_1"] and s["by_roughness"][4]["n_failed"] == 1
    assert "roughness" in format_table(s) and ">=0.05" in format_table(s)


def test_format_table_empty():
    assert "scans 0" in format_table(summarise([]))


def test_legible_fraction_hidden_and_edge_points():
    """Curve 1 inked on every row; curve 2 inked on the top half only (drawn over below); a curve pinned on the
    track edge is not legible even where its ink is in the mask."""
    h, w = 600, 100
    mask = np.zeros((h, w), np.uint8)
    mask[:, 50] = 1
    mask[: h // 2, 30] = 2
    assert legible_fraction(mask, positions(0.505, 0.305)) == pytest.approx((1.0, 0.5), abs=0.02)  # +- the 6-row radius
    mask[:, 99] = 2
    assert legible_fraction(mask, positions(0.505, 0.995))[1] == 0.0


def test_summarise_counts_failures_on_legible_scans_apart():
    recs = [scan_record("a", positions(0.31, 0.7), positions(), legible=(1.0, 0.9)),
            scan_record("b", error=CurveNotFound(2, 0.1, 0.5), legible=(1.0, 0.2)),  # hidden: refusing is right
            scan_record("c", error=CurveNotFound(1, 0.3, 0.5), legible=(0.8, 1.0))]
    s = summarise(recs)
    assert s["n_failed"] == 2 and s["n_illegible"] == 1
    assert s["n_failed_legible"] == 1 and s["failure_fraction_legible"] == pytest.approx(0.5)
    assert "1 scans have a curve hidden" in format_table(s) and "1 failed (50.0%)" in format_table(s)
    assert "n_illegible" not in summarise(records())  # records without truth legibility: no such figures


def test_qc_overlay_colours():
    img = np.full((600, 200), 230, np.uint8)
    out = qc_overlay(img, positions(0.25, 0.75), positions(0.5, 0.5))
    assert out.shape == (600, 200, 3) and out.dtype == np.uint8
    row = out[300]
    assert row[49:51, 2].max() > 200 and row[49:51, 0].max() < 100  # red at 0.25 * 200 - 0.5
    assert row[149:151, 0].max() > 200 and row[149:151, 2].max() < 100  # blue at 0.75
    green = (out[:, 99:101, 1] > 120) & (out[:, 99:101, 2] < 100)
    assert green.any() and not green.all()  # dotted
    assert (img == 230).all()  # input untouched


def test_qc_overlay_accepts_bgr_and_no_truth():
    img = np.zeros((300, 100, 3), np.uint8)
    assert qc_overlay(img, positions()).shape == (300, 100, 3)


def _report(maes: dict) -> dict:
    """A report of scans id -> (mae_1, mae_2), or None where the scan was refused."""
    return {"per_scan": [{"id": k, "width": 200, "height": 900, "failed": v is None,
                          **({} if v is None else {"mae_1": v[0], "mae_2": v[1], "swap_rate": 0.0})}
                         for k, v in maes.items()]}


def test_compare_takes_its_means_over_the_scans_both_read():
    """A reader that refuses the hardest scan has the lower mean without reading anything better: the paired
    comparison keeps that scan out of both means and lists it apart."""
    base = _report({"a": (0.01, 0.02), "b": (0.02, 0.02), "c": (0.03, 0.02), "hard": (0.30, 0.05)})
    other = _report({"a": (0.01, 0.01), "b": (0.03, 0.02), "c": (0.03, 0.02), "hard": None})
    c = compare(base, other)
    assert c["n_both"] == 3 and c["only_base"] == {"hard": 0.30} and c["only_other"] == {}
    assert c["mae_1"]["base"] == pytest.approx(0.02) and c["mae_1"]["diff"] == pytest.approx(0.01 / 3)
    assert c["mae_2"]["diff"] == pytest.approx(-0.01 / 3)
    lo, hi = c["mae_1"]["ci95"]
    assert 0 <= lo <= c["mae_1"]["diff"] <= hi <= 0.01   # the bootstrap means of three scans' differences
    text = format_comparison(c, "base.json", "other.json")
    assert "both read 3" in text and "read by base only: 1 scans, 1 of them more than 10% of the width off (hard)" in text
    assert compare(base, other) == c   # seeded


def test_compare_refuses_reports_of_different_scans():
    base = _report({"a": (0.01, 0.02), "b": (0.02, 0.02)})
    with pytest.raises(ValueError, match="different scans"):
        compare(base, _report({"a": (0.01, 0.02), "c": (0.02, 0.02)}))
    resized = _report({"a": (0.01, 0.02), "b": (0.02, 0.02)})
    resized["per_scan"][1]["width"] = 300   # another folder's scan_00001
    with pytest.raises(ValueError, match="different scans"):
        compare(base, resized)
    redrawn = _report({"a": (0.01, 0.02), "b": (0.02, 0.02)})   # same ids and sizes, other truth files
    base["truth_digest"], redrawn["truth_digest"] = "1" * 64, "2" * 64
    with pytest.raises(ValueError, match="different truth files"):
        compare(base, redrawn)
    del redrawn["truth_digest"]   # a report from before digests: judged by ids and sizes
    assert compare(base, redrawn)["n_both"] == 2


def test_error_by_cause_splits_the_mae_by_what_the_reading_lies_on():
    true = np.stack([np.full(300, 0.3), np.full(300, 0.6)], 1)
    third = np.full(300, 0.85)
    read = true.copy()
    read[:, 0] += 0.005                 # a sub-pixel miss everywhere: near
    read[0:30, 0] = 0.995               # curve 1 on the right edge, where its truth is not
    read[30:60, 0] = 0.6                # ... on curve 2
    read[60:90, 0] = 0.85               # ... on the third line
    read[90:120, 0] = 0.45              # ... on nothing named
    read[:, 1] = 0.6 + 0.01             # curve 2 within GROSS everywhere
    causes = error_by_cause(read, true, third)
    c1 = causes["curve_1"]
    assert c1["edge"] == pytest.approx(30 * 0.695 / 300) and c1["other_curve"] == pytest.approx(30 * 0.3 / 300)
    assert c1["third_line"] == pytest.approx(30 * 0.55 / 300) and c1["elsewhere"] == pytest.approx(30 * 0.15 / 300)
    assert c1["near"] == pytest.approx(180 * 0.005 / 300)
    assert sum(c1.values()) == pytest.approx(curve_errors(read, true)["mae_1"])
    assert causes["curve_2"] == {"near": pytest.approx(0.01), "edge": 0.0, "other_curve": 0.0, "third_line": 0.0,
                                 "elsewhere": 0.0}
    # no third line recorded: that stretch is elsewhere; read on the edge where the truth runs beside it: not edge
    assert error_by_cause(read, true)["curve_1"]["elsewhere"] == pytest.approx(30 * (0.55 + 0.15) / 300)
    by_edge = np.stack([np.full(300, 0.035), np.full(300, 0.6)], 1)
    pinned = error_by_cause(by_edge * [0, 1], by_edge)["curve_1"]
    assert pinned["edge"] == 0.0 and pinned["elsewhere"] == pytest.approx(0.035)
    recs = records()
    for r in recs[:2]:
        r["cause"] = causes
    recs[1]["mae_2"] = None   # a curve without a point to judge: left out of its means, as of its MAE's
    recs[1]["cause"] = {**causes, "curve_2": dict.fromkeys(causes["curve_2"], 0.0)}
    s = summarise(recs)
    assert s["error_by_cause"]["curve_1"]["edge"] == pytest.approx(c1["edge"])
    assert s["error_by_cause"]["curve_2"]["near"] == pytest.approx(0.01)
    assert "by what the reading lies on" in format_table(s) and "error_by_cause" not in summarise(records())
