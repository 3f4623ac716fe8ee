"""Tracing on probability maps drawn in the tests (anti-aliased cv2 strokes, sub-pixel coordinates).

A stroke drawn by cv2 at column coordinate ``x`` is centred on pixel-convention position ``x + 0.5``
(CONVENTIONS.md: column c has its centre at c + 0.5), so truth as a track fraction is ``(x + 0.5) / W``.
"""
import json

import cv2
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from digitiser import track_lines
from digitiser.tracing import (N_DEPTH, REVISION, CurveNotFound, TracingParams, _dash_dot_flags, to_values, trace,
                               trace_planes, trace_track)

SHIFT = 4  # cv2 fixed-point bits: 1/16 px


def stroke(h, w, xs, rows=None, thickness=2):
    """(h, w) float64 intensity in [0, 1] of the polyline (xs[y], y) over rows ``rows`` (default all rows;
    a list of row arrays draws one polyline per array)."""
    img = np.zeros((h, w), np.uint8)
    pieces = [np.arange(h)] if rows is None else [rows] if np.ndim(rows[0]) == 0 else rows
    pts = [np.round(np.stack([xs[r], r], 1) * 2**SHIFT).astype(np.int32) for r in pieces]
    cv2.polylines(img, pts, False, 255, thickness, cv2.LINE_AA, SHIFT)
    return img / 255.0


def dash_rows(h, on, off):
    """Row ranges of a dashed stroke: `on` rows drawn, `off` rows blank, repeating from row 0."""
    return [np.arange(s, min(s + on, h)) for s in range(0, h, on + off)]


def dashed(h, w, xs, on=12, off=12, thickness=2):
    return stroke(h, w, xs, [r for r in dash_rows(h, on, off) if r.size > 1], thickness)


def probs_from(a1, a2):
    """(3, H, W) float32 softmax-like map; curve 1 is drawn over curve 2 where they cross."""
    p1 = a1
    p2 = a2 * (1 - a1)
    return np.stack([1 - p1 - p2, p1, p2]).astype(np.float32)


def truth(xs, h, w):
    """(300,) truth fraction at depth points from a per-row cv2 column coordinate."""
    yk = np.arange(N_DEPTH) * (h - 1) / (N_DEPTH - 1)
    return (np.interp(yk, np.arange(h), xs) + 0.5) / w


@pytest.fixture(scope="module")
def scene():
    """3000 x 400 track: solid sine (curve 1) and dashed cosine (curve 2) crossing it several times."""
    h, w = 3000, 400
    y = np.arange(h, dtype=float)
    x1 = 200 + 120 * np.sin(y / 250)
    x2 = 200 + 120 * np.cos(y / 170)
    return h, w, x1, x2, stroke(h, w, x1), dashed(h, w, x2)


def test_shapes_dtypes_and_finite(scene):
    h, w, x1, x2, a1, a2 = scene
    x_frac, observed = trace(probs_from(a1, a2))
    assert x_frac.shape == (N_DEPTH, 2) and x_frac.dtype == np.float64
    assert observed.shape == (N_DEPTH, 2) and observed.dtype == bool
    assert np.isfinite(x_frac).all()


def test_solid_curve_subpixel(scene):
    h, w, x1, x2, a1, a2 = scene
    x_frac, observed = trace(probs_from(a1, a2))
    assert observed[:, 0].all()
    assert np.abs(x_frac[:, 0] - truth(x1, h, w)).mean() * w < 0.2


def test_dashed_curve_subpixel_inside_dashes(scene):
    h, w, x1, x2, a1, a2 = scene
    x_frac, observed = trace(probs_from(a1, a2))
    yk = np.arange(N_DEPTH) * (h - 1) / (N_DEPTH - 1)
    inside = np.zeros(N_DEPTH, bool)
    for r in dash_rows(h, 12, 12):
        inside |= (yk >= r[0] + 2) & (yk <= r[-1] - 2)  # away from the round caps at dash ends
    away = np.abs(truth(x1, h, w) - truth(x2, h, w)) * w > 6  # not where curve 1 covers curve 2
    sel = inside & away
    assert sel.sum() > 50
    assert np.abs(x_frac[sel, 1] - truth(x2, h, w)[sel]).mean() * w < 0.2


def test_dashes_bridged_and_observed_flags(scene):
    h, w, x1, x2, a1, a2 = scene
    on, off = 10, 30  # gaps of 3 depth spacings (10 rows each)
    a2 = dashed(h, w, x2, on, off)
    apart = stroke(h, w, np.full(h, 20.0))  # curve 1 away from curve 2: its flags follow the dashes only
    x_frac, observed = trace(probs_from(apart, a2))
    yk = np.arange(N_DEPTH) * (h - 1) / (N_DEPTH - 1)
    drawn = np.concatenate(dash_rows(h, on, off))
    dist = np.abs(yk[:, None] - drawn[None, :]).min(axis=1)
    radius = max(TracingParams().observe_px, 0.5 * (h - 1) / (N_DEPTH - 1))
    assert observed[dist <= radius - 2, 1].all()  # 2 rows of slack for the round caps
    assert not observed[dist > radius + 2, 1].any()
    bridged = ~observed[:, 1]
    assert 0.3 < bridged.mean() < 0.7
    seen = np.flatnonzero(observed[:, 1])
    bridged[seen[-1]:] = False  # past the last dash the trace is extended flat, not bridged
    assert np.abs(x_frac[bridged, 1] - truth(x2, h, w)[bridged]).max() * w < 2.0  # linear over 30 rows


@pytest.mark.parametrize("on,off", [(6, 8), (2, 6), (20, 11)])
def test_short_dash_gaps_count_as_observed(on, off):
    """On a short scan the depth spacing is ~1 row: gaps of up to 2 * observe_px rows between dashes (or dots)
    are still the curve seen, not a bridge, so a dashed curve is not refused for its duty cycle."""
    h, w = 400, 200
    xs = 100 + 40 * np.sin(np.arange(h) / 60)
    dashes = dash_rows(h, on, off)
    x_frac, observed = trace(probs_from(stroke(h, w, np.full(h, 20.0)), stroke(h, w, xs, dashes)))
    yk = np.arange(N_DEPTH) * (h - 1) / (N_DEPTH - 1)
    drawn = yk <= dashes[-1][-1]  # past the last dash the trace is extended flat
    assert observed[:, 0].all() and observed[drawn, 1].all()
    # a short dash's round caps widen it sideways on a slope: within 2.5 px of the pen's path
    assert np.abs(x_frac[drawn, 1] - truth(xs, h, w)[drawn]).max() * w < 2.5


def test_crossing_keeps_identity_with_confused_classes(scene):
    """Near each crossing, 20 rows of curve 2 are read as class 1: curve 1 must not follow that branch."""
    h, w, x1, x2, a1, a2 = scene
    a2_solid = stroke(h, w, x2)
    crossings = np.flatnonzero(np.diff(np.sign(x1 - x2)))
    confused = np.zeros(h, bool)
    for c in crossings:
        confused[max(c - 20, 0):c + 20] = True
    branch = np.where(confused[:, None], a2_solid, 0.0)
    p1 = np.maximum(a1, branch)
    p2 = np.where(confused[:, None], 0.0, a2 * (1 - p1))
    probs = np.stack([1 - p1 - p2, p1, p2]).astype(np.float32)
    x_frac, observed = trace(probs)
    t1, t2 = truth(x1, h, w), truth(x2, h, w)
    sep = np.abs(t1 - t2) * w
    err1 = np.abs(x_frac[:, 0] - t1) * w
    assert len(crossings) >= 4
    assert err1[sep > 8].max() < 0.5
    assert (err1 <= sep / 2 + 0.5).all()  # where the strokes touch, one run holds both: centroid in between
    apart = sep > 6  # closer in, a dash gap at the crossing is bridged along curve 1 (run-together rule)
    assert (np.abs(x_frac[apart, 1] - t2[apart]) < np.abs(x_frac[apart, 1] - t1[apart])).all()


def test_noise_blobs_far_from_curves_are_ignored(scene):
    """200 blobs of either class, 30+ px off both curves. The solid curve ignores them; the dashed one may
    detour to a blob beside one of its gaps (a move over paper is cheap, move_cost_paper, because on real maps
    the segmenter drops parts of bed-boundary jumps: dearer moves cost more MAE on the eval set), rarely."""
    h, w, x1, x2, a1, a2 = scene
    rng = np.random.default_rng(1)
    noise = [np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)]
    n_blobs = 0
    for y, x, r in zip(rng.integers(20, h - 20, 200), rng.uniform(10, w - 10, 200), rng.integers(2, 9, 200)):
        if min(abs(x - x1[y]), abs(x - x2[y])) > 30 + r:  # blobs of either class, off both curves
            cv2.circle(noise[n_blobs % 2], (int(x), int(y)), int(r), 255, -1, cv2.LINE_AA)
            n_blobs += 1
    x_frac, _ = trace(probs_from(np.maximum(a1, noise[0] / 255.0), np.maximum(a2, noise[1] / 255.0)))
    clean, _ = trace(probs_from(a1, a2))
    moved = np.abs(x_frac - clean) * w > 0.1
    assert n_blobs > 80
    assert not moved[:, 0].any()
    assert moved[:, 1].mean() < 0.1


def test_inked_bed_boundary_jump_is_followed():
    """A step from x=100 to x=300 drawn as a horizontal stroke: the path runs along it, no diagonal bridge."""
    h, w = 1000, 400
    a1 = stroke(h, w, np.where(np.arange(h) < 500, 100.0, 300.0))
    a2 = stroke(h, w, np.full(h, 20.0))
    x_frac, observed = trace(probs_from(a1, a2))
    yk = np.arange(N_DEPTH) * (h - 1) / (N_DEPTH - 1)
    assert observed[:, 0].all()
    assert np.abs(x_frac[yk < 495, 0] * w - 100.5).max() < 0.3
    assert np.abs(x_frac[yk > 505, 0] * w - 300.5).max() < 0.3


def test_parallel_stroke_of_same_class_is_not_followed(scene):
    """An annotation line of class 1 running 15 px beside curve 1 for 300 rows."""
    h, w, x1, x2, a1, a2 = scene
    rows = np.arange(1000, 1300)
    extra = stroke(h, w, x1 + 15, rows)
    x_frac, _ = trace(probs_from(np.maximum(a1, extra), a2))
    assert np.abs(x_frac[:, 0] - truth(x1, h, w)).max() * w < 0.5


def test_long_gap_is_bridged_between_distant_parts():
    """A long gap (800 rows), with the curve coming back elsewhere: both parts kept, the gap bridged."""
    h, w = 3000, 400
    xs = np.where(np.arange(h) < 1500, 100.0, 300.0)
    a1 = stroke(h, w, xs, rows=[np.arange(0, 1100), np.arange(1900, h)])
    a2 = stroke(h, w, np.full(h, 20.0))
    x_frac, observed = trace(probs_from(a1, a2))
    assert observed[:105, 0].all() and observed[195:, 0].all() and not observed[115:185, 0].any()
    assert np.allclose(x_frac[[0, -1], 0] * w, [100.5, 300.5], atol=0.1)


def run_together_scene(offset_at_ends=3.0):
    """Curve 1 a sine; dashed curve 2 runs beside it, then under it (hidden) for rows 1000-2000 while curve 1
    bends, then beside it again."""
    h, w = 3000, 400
    y = np.arange(h, dtype=float)
    x1 = 200 + 60 * np.sin(y / 120)
    x2 = np.where((y >= 1000) & (y < 2000), x1, x1 + offset_at_ends)
    hidden = [r[(r < 1000) | (r >= 2000)] for r in dash_rows(h, 12, 12)]
    return h, w, x1, x2, stroke(h, w, x1), stroke(h, w, x2, [r for r in hidden if r.size > 1])


def test_curve_under_the_other_is_bridged_along_it():
    """A dashed curve drawn under the solid one for 1000 rows: the bridge follows the solid curve's bends
    (a straight bridge misses them by up to 60 px); those points still count as bridged, not observed."""
    h, w, x1, x2, a1, a2 = run_together_scene()
    yk = np.arange(N_DEPTH) * (h - 1) / (N_DEPTH - 1)
    hidden = (yk > 1010) & (yk < 1990)
    x_frac, observed = trace(probs_from(a1, a2))
    assert np.abs(x_frac[hidden, 1] - truth(x2, h, w)[hidden]).max() * w < 3.5  # offset blended 3 px -> 0
    seen = (yk < 980) | ((yk > 2020) & (yk < 2980))
    assert not observed[hidden, 1].any() and observed[seen, 1].all()
    straight, _ = trace(probs_from(a1, a2), TracingParams(together_px=0))
    assert np.abs(straight[hidden, 1] - truth(x2, h, w)[hidden]).max() * w > 40


def test_curve_under_the_other_on_a_steep_stretch_is_bridged_along_it():
    """The dashed curve runs a few rows behind the solid one on a steep wiggle (5 px per row), so at the
    rows where it vanishes under it and comes back it is 20+ px away *along the row*, yet beside it a few
    rows on: the gap is still bridged along the solid curve (a straight bridge misses its 100 px bends)."""
    h, w = 3000, 400
    y = np.arange(h, dtype=float)
    x1 = 200 + 100 * np.sin((y - 1000) / 20)
    x2 = np.where((y >= 1000) & (y < 2000), x1, 200 + 100 * np.sin((y - 1005) / 20))  # 5 rows behind
    hidden = [r[(r < 1000) | (r >= 2000)] for r in dash_rows(h, 12, 12)]
    a2 = stroke(h, w, x2, [r for r in hidden if r.size > 1])
    yk = np.arange(N_DEPTH) * (h - 1) / (N_DEPTH - 1)
    under = (yk > 1010) & (yk < 1990)
    x_frac, observed = trace(probs_from(stroke(h, w, x1), a2))
    assert np.abs(x_frac[under, 1] - truth(x2, h, w)[under]).max() * w < 5
    assert not observed[under, 1].any()


def test_gap_far_from_the_other_curve_is_bridged_straight():
    """Ends 40 px from the other curve (beyond together_px): an ordinary gap, bridged straight."""
    h, w, x1, x2, a1, a2 = run_together_scene(offset_at_ends=40.0)
    p = probs_from(a1, a2)
    assert np.array_equal(trace(p)[0], trace(p, TracingParams(together_px=0))[0])


def off_scale_scene(h=2000, w=300):
    """Curve 1 runs off the scale: along row 500 into the left edge, pinned on the (invisible) edge line,
    back along row 1300; curve 2 a dashed line at x = 220 throughout."""
    y = np.arange(h)
    x1 = np.where((y > 500) & (y < 1300), 0.0, 150.0)
    a1 = stroke(h, w, x1, rows=[np.arange(0, 502), np.arange(1299, h)])
    a1[:, :3] = 0.0  # the segmenter sees nothing on the edge line itself
    return h, w, x1, a1, dashed(h, w, np.full(h, 220.0))


def test_curve_run_off_the_scale_is_pinned_to_the_edge():
    """Between its runs into the left edge the curve is read on the edge column, not bridged straight
    across the track (from the centres of the runs along the rows, 60 px off), and those points are not counted
    as observed."""
    h, w, x1, a1, a2 = off_scale_scene()
    yk = np.arange(N_DEPTH) * (h - 1) / (N_DEPTH - 1)
    pinned = (yk > 520) & (yk < 1280)
    x_frac, observed = trace(probs_from(a1, a2))
    assert np.allclose(x_frac[pinned, 0] * w, 0.5)
    assert not observed[pinned, 0].any() and observed[(yk < 490) | (yk > 1310), 0].all()
    straight, _ = trace(probs_from(a1, a2), TracingParams(pin_px=0))
    assert (straight[pinned, 0] * w > 40).all()   # bridged across the track, from the runs' centres


def test_a_rough_curves_rows_of_long_strokes_are_centred_whole():
    """A log plotted at a compressed depth scale moves 50 px between rows: each row holds a 100-px stroke. The
    centre of a row is that of its whole stroke (at refine_px 32 the window around the path cut it: 26 px off)."""
    h, w = 200, 300
    planes = np.zeros((2, h, w), np.float32)
    for r in range(h):
        a, b = (60, 160) if r % 2 == 0 else (110, 210)
        planes[0, r, a:b + 1] = 0.9
    planes[1, :, 260] = 0.9
    rows, x, _ = trace_planes(planes)[0]
    assert rows.size == h and np.abs(x - np.where(rows % 2 == 0, 110.5, 160.5)).max() < 0.01


def test_curve_entering_from_the_edge_at_the_top_is_pinned_above():
    h, w = 1500, 300
    y = np.arange(h)
    x1 = np.where(y < 400, 0.0, 150.0)
    a1 = stroke(h, w, x1, rows=np.arange(399, h))
    a1[:, :3] = 0.0
    x_frac, observed = trace(probs_from(a1, dashed(h, w, np.full(h, 220.0))))
    yk = np.arange(N_DEPTH) * (h - 1) / (N_DEPTH - 1)
    assert np.allclose(x_frac[yk < 390, 0] * w, 0.5) and not observed[yk < 390, 0].any()


def test_curve_near_the_edge_is_not_pinned():
    """A curve running 15 px from the edge with a gap, and no run into the edge: bridged as before."""
    h, w = 1500, 100
    xs = np.full(h, 15.0)
    a1 = stroke(h, w, xs, rows=[np.arange(0, 600), np.arange(900, h)], thickness=4)
    p = probs_from(a1, dashed(h, w, np.full(h, 70.0)))
    x_frac, _ = trace(p)
    assert np.array_equal(x_frac, trace(p, TracingParams(pin_px=0))[0])
    assert np.allclose(x_frac[:, 0] * w, 15.5, atol=0.3)


def test_excursions_to_the_edge_with_ink_between_are_not_pinned_between():
    """The curve spikes into the edge twice (rows 301-304, 1001-1004) with its own ink in between: only the
    spikes themselves may be read on the edge, the 700 rows between them are traced as before."""
    h, w = 1500, 300
    y = np.arange(h)
    spikes = ((y > 300) & (y < 305)) | ((y > 1000) & (y < 1005))
    x1 = np.where(spikes, 0.0, 150.0 + 40 * np.sin(y / 90))
    p = probs_from(stroke(h, w, x1), dashed(h, w, np.full(h, 260.0)))
    yk = np.arange(N_DEPTH) * (h - 1) / (N_DEPTH - 1)
    between = (yk > 320) & (yk < 990)
    x_frac, _ = trace(p)
    assert np.array_equal(x_frac[between], trace(p, TracingParams(pin_px=0))[0][between])
    assert np.abs(x_frac[between, 0] - truth(x1, h, w)[between]).max() * w < 1.0


def test_hole_in_stroke_is_merged():
    h, w = 400, 100
    xs = np.full(h, 50.3)
    a = stroke(h, w, xs, thickness=5)
    a[200, 50] = 0.0  # a one-pixel hole in row 200, one pixel left of the stroke's centre
    [(rows, xc, on_ink)] = trace_planes(a[None].astype(np.float32))
    assert rows.size == h and on_ink.all()
    assert abs(xc[200] - xc[199]) < 0.1  # both halves of the row count (the hole only loses its own weight)
    assert abs(xc[199] - 50.8) < 0.1


def test_empty_plane_raises_naming_curve():
    h, w = 600, 200
    a1 = stroke(h, w, np.full(h, 80.0))
    with pytest.raises(CurveNotFound) as err:
        trace(probs_from(a1, np.zeros_like(a1)))
    assert err.value.curve == 2 and err.value.coverage == 0.0
    assert "curve 2" in str(err.value) and "50%" in str(err.value)


def test_thirty_percent_coverage_raises():
    h, w = 1000, 200
    a1 = stroke(h, w, np.full(h, 80.0), rows=np.arange(0, 300))
    a2 = stroke(h, w, np.full(h, 150.0))
    with pytest.raises(CurveNotFound) as err:
        trace(probs_from(a1, a2))
    assert err.value.curve == 1
    assert 0.28 <= err.value.coverage <= 0.33
    assert "30%" in str(err.value) or "31%" in str(err.value)


def test_min_coverage_is_a_parameter():
    h, w = 1000, 200
    a1 = stroke(h, w, np.full(h, 80.0), rows=np.arange(0, 300))
    a2 = stroke(h, w, np.full(h, 150.0))
    x_frac, observed = trace(probs_from(a1, a2), TracingParams(min_coverage=0.25))
    assert 0.28 <= observed[:, 0].mean() <= 0.33


def test_ends_extended_flat():
    h, w = 1000, 200
    xs = 60 + 0.05 * np.arange(h)
    a1 = stroke(h, w, xs, rows=np.arange(200, 1000))
    a2 = stroke(h, w, np.full(h, 150.0))
    x_frac, observed = trace(probs_from(a1, a2))
    top = ~observed[:, 0]
    assert top[:55].all() and observed[65:, 0].all()
    assert np.allclose(x_frac[top, 0], x_frac[top, 0][0])
    assert abs(x_frac[0, 0] * w - (xs[200] + 0.5)) < 0.3


@pytest.mark.parametrize("h,w", [(300, 100), (120, 100), (2, 50)])
def test_small_images(h, w):
    a1 = stroke(h, w, np.full(h, 0.3 * w))
    a2 = stroke(h, w, np.full(h, 0.7 * w))
    x_frac, observed = trace(probs_from(a1, a2))
    assert observed.all()
    assert np.allclose(x_frac * w, [0.3 * w + 0.5, 0.7 * w + 0.5], atol=0.2)


@settings(max_examples=20, deadline=None)
@given(x0=st.floats(20, 180), dx=st.floats(-100, 100), thickness=st.integers(1, 4))
def test_straight_lines_subpixel(x0, dx, thickness):
    h, w = 400, 200
    xs = np.clip(x0 + dx * np.arange(h) / h, 5, w - 6)
    a1 = stroke(h, w, xs, thickness=thickness)
    a2 = stroke(h, w, np.full(h, 2.0) if x0 > 100 else np.full(h, w - 3.0))
    x_frac, _ = trace(probs_from(a1, a2))
    assert np.abs(x_frac[:, 0] - truth(xs, h, w)).mean() * w < 0.2


def test_bad_shape_raises():
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        trace(np.zeros((2, 10, 10), np.float32))


def test_nan_probs_raise():
    p = np.zeros((3, 10, 10), np.float32)
    p[1, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        trace(p)


def test_params_to_dict_is_json_with_the_tracer_revision():
    d = json.loads(json.dumps(TracingParams(min_coverage=0.6).to_dict()))
    assert d["min_coverage"] == 0.6 and d.pop("revision") == REVISION
    assert TracingParams(**d) == TracingParams(min_coverage=0.6)


def test_params_validated():
    with pytest.raises(ValueError, match="min_prob"):
        TracingParams(min_prob=0.0)
    for rows in (0.0, 1.5):
        with pytest.raises(ValueError, match="border_rows"):
            TracingParams(border_rows=rows)
    for dot in (-0.1, 1.0):
        with pytest.raises(ValueError, match="dash_dot"):
            TracingParams(dash_dot=dot)


def test_to_values_linear_and_reversed():
    f = np.array([0.0, 0.25, 1.0])
    assert np.allclose(to_values(f, 0, 150, "linear"), [0, 37.5, 150])
    assert np.allclose(to_values(f, 150, 0, "linear"), [150, 112.5, 0])


def test_to_values_log():
    f = np.array([0.0, 0.5, 1.0])
    assert np.allclose(to_values(f, 0.2, 2000, "log"), [0.2, 20, 2000])
    assert np.allclose(to_values(f, 2000, 0.2, "log"), [2000, 20, 0.2])


def test_to_values_clips_fractions():
    assert np.allclose(to_values(np.array([-0.1, 1.2]), 0, 10), [0, 10])


def test_to_values_rejects_bad_scale_and_log_bounds():
    with pytest.raises(ValueError, match="positive"):
        to_values(np.zeros(3), 0, 10, "log")
    with pytest.raises(ValueError, match="scale"):
        to_values(np.zeros(3), 0, 10, "sqrt")


@pytest.mark.parametrize("marked", [1.0, 0.6])
def test_track_border_line_is_not_followed(marked):
    """A faint solid curve (p 0.45) at 0.75 of the width beside a border line the segmenter half-labels as
    curve 1 (p 0.9 on the last two columns) on all its rows, or in stretches over 60% of them (a third to four
    fifths of them on foreign scans): the path used to ride the border; a line marked on at least half the rows
    (`border_rows`) is the border, not evidence, so the curve is read where it is. (The stretches would also be
    caught as reached over paper, `_ridden_border`; foreign scans where only `border_rows` holds are in
    test_gross_errors.py.)"""
    h, w = 800, 200
    x1 = 150.0 + 10 * np.sin(np.arange(h) / 40)
    a1 = 0.45 * stroke(h, w, x1)
    a1[(np.arange(h) // 40) % 5 < 5 * marked, -2:] = 0.9   # 120 rows marked, 80 not, ... at 0.6
    p = probs_from(a1, dashed(h, w, np.full(h, 60.0)))
    x_frac, _ = trace(p, TracingParams(min_prob=0.4))
    assert np.abs(x_frac[:, 0] - truth(x1, h, w)).max() * w < 1.0
    ridden, _ = trace(p, TracingParams(min_prob=0.4, border_px=0))
    assert (ridden[:, 0] * w > w - 3).mean() > 0.9 * marked - 0.15


def test_border_line_split_between_the_classes_is_not_followed():
    """The segmenter labels the upper 55% of the border line curve 1 and the rest curve 2 (foreign scan 205):
    neither class alone runs over 80% of the rows, together they do, so the line is the border for both."""
    h, w = 800, 200
    x1 = 150.0 + 10 * np.sin(np.arange(h) / 40)
    a1, a2 = 0.45 * stroke(h, w, x1), dashed(h, w, np.full(h, 60.0))
    a1[:440, -2:] = 0.9
    a2[440:, -2:] = 0.9
    x_frac, _ = trace(probs_from(a1, a2), TracingParams(min_prob=0.4))
    assert np.abs(x_frac[:, 0] - truth(x1, h, w)).max() * w < 1.0
    assert np.abs(x_frac[:, 1] - truth(np.full(h, 60.0), h, w)).max() * w < 1.0


def test_border_marked_on_a_few_rows_is_not_ridden_where_the_curve_is_faint():
    """The border line marked on a quarter of the rows (under `border_rows`: it stays evidence) just where the
    curve, 40 px inside, is faint (a broken 1-bit curve; foreign scan 33): the path jumped over paper to ride each
    marked stretch. A stretch reached and left over paper is traced again without the border there."""
    h, w = 800, 200
    x1 = 40.0 + 8 * np.sin(np.arange(h) / 40)
    a1 = 0.45 * stroke(h, w, x1)
    faint = (np.arange(h) // 100) % 4 == 1   # rows 100-199, 500-599
    a1[faint] *= 0.3
    a1[faint, :2] = 0.9
    p = probs_from(a1, dashed(h, w, np.full(h, 150.0)))
    x_frac, observed = trace(p, TracingParams(min_prob=0.4))
    assert np.abs(x_frac[:, 0] - truth(x1, h, w)).max() * w < 1.0
    ridden, _ = trace(p, TracingParams(min_prob=0.4, border_px=0))
    assert (ridden[:, 0] * w < 3).mean() > 0.2


def test_curve_that_runs_into_the_edge_along_its_ink_is_read_on_the_edge():
    """A curve that steps to the left edge along a row, runs on the edge column for 150 rows (the segmenter
    marks it there) and steps back: reached along its own ink, so it is read on the edge, observed."""
    h, w = 800, 200
    x1 = np.where((np.arange(h) >= 300) & (np.arange(h) < 450), 0.0, 60.0)
    p = probs_from(stroke(h, w, x1), dashed(h, w, np.full(h, 150.0)))
    x_frac, observed = trace(p)
    rows = np.arange(N_DEPTH) * (h - 1) / (N_DEPTH - 1)
    on_edge = (rows > 305) & (rows < 445)   # clear of the steps
    assert observed[on_edge, 0].all() and (x_frac[on_edge, 0] * w < 1.5).all()


def test_curve_only_on_the_border_columns_is_refused_unless_border_px_is_zero():
    """The price of the rule: ink only on the last 2 columns is the border, not a curve (refused, not read);
    border_px = 0 keeps the old behaviour and traces it there."""
    h, w = 600, 120
    a1 = stroke(h, w, np.full(h, w - 1.0))
    p = probs_from(a1, dashed(h, w, np.full(h, 40.0)))
    with pytest.raises(CurveNotFound):
        trace(p)
    x_frac, _ = trace(p, TracingParams(border_px=0))
    assert (x_frac[:, 0] * w > w - 2).all()


@pytest.mark.parametrize("scale", [0.6, 0.25, 0.12])
def test_faint_visible_dashes_are_followed_not_bridged_straight(scale):
    """A dashed curve whose class probability falls to `scale` over 800 rows (faint ink, a weak segmenter): the
    path still runs on that ink, never a straight diagonal bridge across the bend it draws (issue 18); where
    the evidence is under min_prob the depth points are flagged bridged, not claimed observed."""
    h, w = 2000, 300
    xs = 150 + 100 * np.sin(np.arange(h) / 150)
    a2 = stroke(h, w, xs, dash_rows(h, 12, 12))
    a2[600:1400] *= scale
    x_frac, observed = trace(probs_from(stroke(h, w, np.full(h, 20.0)), a2))
    yk = np.arange(N_DEPTH) * (h - 1) / (N_DEPTH - 1)
    faint = (yk > 620) & (yk < 1380)
    err = np.abs(x_frac[:, 1] - truth(xs, h, w)) * w
    assert err[faint].max() < 1.5   # a straight bridge from row 600 to 1400 would be ~100 px off at the bends
    assert observed[faint, 1].all() == (scale >= TracingParams().min_prob)


def dash_dot(h, w, xs, dash=16, gap=4, dot=2, dots=1):
    """A dash-dot (dots=2: dash-dot-dot) stroke, in rows: dash, gap, (dot, gap) x dots, repeating."""
    period = dash + dots * (gap + dot) + gap
    starts = [(s, dash) for s in range(0, h, period)]
    starts += [(s + dash + gap + k * (dot + gap), dot) for s in range(0, h, period) for k in range(dots)]
    return stroke(h, w, xs, [np.arange(s, min(s + n, h)) for s, n in starts if s + 1 < h], 2)


@pytest.mark.parametrize("dots", [1, 2])
def test_dash_dot_third_line_is_not_read_as_curve_2(dots):
    """The segmenter reads a dash-dot third line as curve 2 as strongly as curve 2 itself (foreign scans: on 25%
    of curve 2's depth points in tracks with one). Here it is stronger than the dashed curve 2 beside it, and the
    path took it; the components its path passes alternate dash and dot (or two), so it is traced again without
    them and reads the dashed line."""
    h, w = 1200, 300
    y = np.arange(h)
    x2, x3 = 120 + 25 * np.sin(y / 90), 220 + 25 * np.cos(y / 70)
    p = probs_from(stroke(h, w, np.full(h, 40.0)), np.maximum(0.6 * dashed(h, w, x2), dash_dot(h, w, x3, dots=dots)))
    x_frac, observed = trace(p)
    seen = observed[:, 1]
    assert np.abs(x_frac[seen, 1] - truth(x2, h, w)[seen]).max() * w < 1.5 and seen.mean() > 0.9
    followed, _ = trace(p, TracingParams(dash_dot=0))
    assert np.abs(followed[:, 1] - truth(x3, h, w)).mean() * w < 1.0   # the scene still shows the failure


def test_dash_dot_curve_2_alone_is_still_read():
    """A dash-dot line with no other line beside it is curve 2 as drawn (the training generator's version 1
    draws some so): nothing else takes its place, so it is read, not refused."""
    h, w = 1200, 300
    x2 = 150 + 40 * np.sin(np.arange(h) / 90)
    x_frac, observed = trace(probs_from(stroke(h, w, np.full(h, 40.0)), dash_dot(h, w, x2)))
    assert np.abs(x_frac[:, 1] - truth(x2, h, w)).max() * w < 1.0 and observed[:, 1].all()


@pytest.mark.parametrize("lengths, dash_dot_line", [
    ([12, 3] * 10, True),                                  # dash-dot
    ([12, 3, 3] * 7, True),                                # dash-dot-dot: dots are most of the components
    ([12] * 20, False),                                    # dashed
    ([3] * 20, False),                                     # dotted
    ([12, 12, 5, 7, 12, 12, 12, 4, 8, 12] * 2, False),     # dashes broken by noise: two dashes in a row
    ([12, 3, 3, 3] * 5, False),                            # dashes among dots: three dots in a row
])
def test_dash_dot_lines_are_told_from_dashed_and_dotted(lengths, dash_dot_line):
    flags = _dash_dot_flags(np.array(lengths, float))
    assert flags.all() if dash_dot_line else not flags.any()


# ----------------------------------------------------------------------------- a curve taken for a grid line

def ruled_track(h, w, lines, grid=0.25, pitch=30):
    """(h, w) uint8 grey track: light grid lines every `pitch` px (ink `grid`) under `lines`, a list of
    (xs, rows or None, ink) strokes (ink 1 = black)."""
    ink = np.zeros((h, w))
    for x in range(pitch // 2, w, pitch):
        ink = np.maximum(ink, grid * stroke(h, w, np.full(h, float(x)), thickness=1))
    for xs, rows, darkness in lines:
        ink = np.maximum(ink, darkness * stroke(h, w, xs, rows))
    return np.round(255 * (1 - ink)).astype(np.uint8)


def test_a_refused_curve_1_is_read_on_the_tracks_one_dark_straight_line():
    """A solid curve at a constant value on a slightly skewed scan: a dark straight line that the segmenter took
    for a grid line (no curve-1 evidence at all). Refused from the probabilities alone; given the track's grey
    pixels it is read on that line to a pixel, every depth point observed; curve 2 as before."""
    h, w = 1200, 300
    y = np.arange(h)
    x1, x2 = 137 + 6 * y / h, 60 + 30 * np.sin(y / 80)
    gray = ruled_track(h, w, [(x1, None, 0.9), (x2, dash_rows(h, 12, 12), 0.9)])
    p = probs_from(np.zeros((h, w)), dashed(h, w, x2))
    with pytest.raises(CurveNotFound, match="curve 1"):
        trace(p)
    x_frac, observed, read = trace_track(p, gray)
    assert np.abs(x_frac[:, 0] - truth(x1, h, w)).max() * w < 1.0 and observed[:, 0].all()
    assert np.array_equal(x_frac[:, 1], trace(probs_from(stroke(h, w, x1), dashed(h, w, x2)))[0][:, 1])
    classes = read.argmax(axis=0)   # the mask's: the line is curve 1, everything else as the segmenter read it
    on_line = np.abs(np.arange(w)[None, :] - x1[:, None]) < 0.5
    assert (classes[on_line] == 1).mean() > 0.95 and np.array_equal(classes[:, :100], p.argmax(axis=0)[:, :100])
    with pytest.raises(CurveNotFound, match="curve 1"):
        trace_track(p, gray, TracingParams(dark_line=0))
    read_anyway = probs_from(stroke(h, w, x1), dashed(h, w, x2))
    assert trace_track(read_anyway, gray)[2] is read_anyway   # a read scan's probabilities are left alone


@pytest.mark.parametrize("case", ["dashed", "two as dark", "as light as the grid", "border", "curve 2's line"])
def test_a_refused_curve_1_is_not_read_on_a_line_that_may_not_be_it(case, monkeypatch):
    """`dark_line` reads a line only where it is the one candidate: not a dashed line (curve 2's style), not one
    of two lines as dark (which?), not a line no darker than the grid's, not the border line (nor any line within
    2% of the width of a side: a scanner's shadow), not a line the segmenter sees as curve 2. Each scene is
    refused as it was without the grey pixels, and read on that line with its guard off."""
    h, w = 1200, 300
    y = np.arange(h)
    straight, x2 = np.full(h, 137.0), 60 + 30 * np.sin(y / 80)
    curve2 = (x2, dash_rows(h, 12, 12), 0.9)
    lines, guard = {
        "dashed": ([(straight, dash_rows(h, 12, 8), 0.9), curve2], {"MIN_FILL": 0.0}),
        "two as dark": ([(straight, None, 0.9), (np.full(h, 222.0), None, 0.85), curve2], {"dark_line": 1.0}),
        "as light as the grid": ([(straight, None, 0.3), curve2], {"FAMILY": 0.0, "MARGIN": 0.0}),
        "border": ([(np.full(h, 7.0), None, 0.9), curve2], {"EDGE": 0.0}),
        "curve 2's line": ([(straight, None, 0.9)], {"_on": lambda *args: False})}[case]
    a2 = stroke(h, w, straight) if case == "curve 2's line" else dashed(h, w, x2)
    p, gray = probs_from(np.zeros((h, w)), a2), ruled_track(h, w, lines)
    with pytest.raises(CurveNotFound, match="curve 1"):
        trace_track(p, gray)
    params = TracingParams(dark_line=guard.pop("dark_line", TracingParams().dark_line))
    for name, value in guard.items():
        monkeypatch.setattr(track_lines, name, value)
    x_frac, _, _ = trace_track(p, gray, params)
    assert abs(np.median(x_frac[:, 0]) * w - lines[0][0][0]) < 2   # the line that was not read


@pytest.mark.parametrize("h, w", [(1, 1), (2, 2), (3, 20), (20, 3)])
def test_a_tiny_track_is_refused_not_crashed(h, w):
    """A track of a few pixels with a black column and no curve evidence: a refusal, never an exception from
    the dark-line search (a few rows make fewer than its four blocks)."""
    p = np.zeros((3, h, w), np.float32)
    p[0] = 1.0
    gray = np.full((h, w), 255, np.uint8)
    gray[:, w // 2] = 0
    with pytest.raises(CurveNotFound):
        trace_track(p, gray)


def test_dark_line_param_validated():
    TracingParams(dark_line=0)
    for ratio in (-1.0, 0.5):
        with pytest.raises(ValueError, match="dark_line"):
            TracingParams(dark_line=ratio)


def sheared_grid(h, w, skew, pitch=25, border=True):
    """(h, w) uint8 grey track whose vertical grid lines (and border lines, 2 px inside each side at the middle
    row) lean by `skew` columns per row, as a page scanned askew; returns it and the right border's columns."""
    y = np.arange(h) - (h - 1) / 2
    lines = [(x + skew * y, None, 0.3) for x in range(pitch, w - pitch // 2, pitch)]
    right = w - 3.0 + skew * y
    if border:
        lines += [(2.0 + skew * y, None, 0.8), (right, None, 0.8)]
    return ruled_track(h, w, lines, grid=0.0), right


@pytest.mark.parametrize("skew", [-0.012, 0.0, 0.0045, 0.009])
def test_grid_skew_is_read_from_the_tracks_vertical_lines(skew):
    """The lean of a scanned page, from its grid and border lines: within half a pixel over the track's
    height; 0 on a track with no vertical line at all."""
    h, w = 1000, 240
    gray, _ = sheared_grid(h, w, skew)
    assert abs(track_lines.grid_skew(gray) - skew) * h <= 0.5
    assert track_lines.grid_skew(np.full((h, w), 250, np.uint8)) == 0.0


def skewed_border_scene(h=1000, w=200, skew=0.008):
    """Curve 1 (solid, x ~ 60) seen from row 350 down only; the right border line, leaning by `skew` from 5 px
    inside the edge at the top into the edge band at the bottom, marked as curve 1 on two rows of three (as the
    segmenter marks a border line); curve 2 (dashed) at x ~ 130."""
    y = np.arange(h)
    gray, border = sheared_grid(h, w, skew)
    x1, x2 = 60 + 10 * np.sin(y / 90), 130 + 8 * np.cos(y / 70)
    marked = [r for r in np.split(y, h // 20) if r[0] // 20 % 3]
    a1 = np.maximum(stroke(h, w, x1, y[350:]), 0.7 * stroke(h, w, border, marked, thickness=1))
    return probs_from(a1, dashed(h, w, x2)), gray, x1, border


def test_a_skewed_border_line_is_not_ridden():
    """On a page scanned askew the border line runs a few px inside the image's edge over part of the depth,
    outside the edge band: where curve 1 is not seen (its top third here), the path rode it from the top until
    it jumped over paper to the curve (foreign scans 130, 259: curve 1 read at 0.97-0.99 of the width for
    hundreds of rows, MAE 0.41). Along the grid's skew (read from the grey pixels) that line is the border:
    the curve is read where it is seen and extended, unobserved, above it."""
    h, w = 1000, 200
    probs, gray, x1, border = skewed_border_scene(h, w)
    x_frac, observed, _ = trace_track(probs, gray)
    top = np.arange(N_DEPTH) * (h - 1) / (N_DEPTH - 1) < 340
    assert (x_frac[top, 0] < 0.5).all() and not observed[top, 0].any()
    seen = ~top & (np.arange(N_DEPTH) * (h - 1) / (N_DEPTH - 1) > 360)
    assert np.abs(x_frac[seen, 0] - truth(x1, h, w)[seen]).max() * w < 1.0
    rode = trace(probs)[0]   # without the skew, the line is not straight along the grid: it is ridden
    assert (rode[top, 0] > 0.95).all()
    with_border_off = trace_track(probs, gray, TracingParams(border_px=0))[0]
    assert (with_border_off[top, 0] > 0.95).all()


def test_a_straight_curve_near_the_edge_is_not_taken_for_the_border():
    """A curve that runs off scale to the right along a straight line 5 px inside the edge, reached and left along
    its own ink, and one straight and parallel to the grid 10 px inside the edge over the whole depth: both are
    read where they are, on a skewed scan."""
    h, w, skew = 1000, 200, 0.008
    y = np.arange(h)
    gray, border = sheared_grid(h, w, skew, border=False)
    off_scale = np.clip(100 + 150 * np.sin(y / 300), 20, w - 6)
    parallel = w - 11 + skew * (y - (h - 1) / 2)
    for x1 in (off_scale, parallel):
        x2 = 60 + 8 * np.cos(y / 70)
        x_frac, observed, _ = trace_track(probs_from(stroke(h, w, x1), dashed(h, w, x2)), gray)
        assert np.abs(x_frac[:, 0] - truth(x1, h, w)).max() * w < 1.0 and observed[:, 0].all()


def test_a_dashed_swing_along_a_row_counts_as_reached_along_ink():
    """A path that reaches the border band is judged by the row it came from: a dashed curve swinging along the
    row to the edge (dashes of 4 px, gaps of 6: 40% of the row inked) came along its own ink, and the border rule
    must not take it for a jump over paper (the truth masks of own scan 262 were read 0.185 off that way);
    specks 10 px apart, or paper, are a jump."""
    from digitiser.tracing import _reached_along_ink
    row = np.zeros((7, 200), np.float32)
    swing, specks = row.copy(), row.copy()
    swing[3, 2:150] = np.arange(2, 150) % 10 < 4
    specks[3, 2:150:10] = 1.0
    def reached(plane):
        return _reached_along_ink(plane, 3, 150.0, 1.5, border_px=3, min_prob=0.45, reach=3, min_fill=0.5)
    assert reached(swing) and not reached(specks) and not reached(row)
