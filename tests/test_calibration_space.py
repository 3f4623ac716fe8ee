"""Every valid calibration commits: calibrations drawn from the whole valid space (each optional field absent
or present, empty and non-empty units, linear / log / reversed scales, names at the length and character
limits, extreme but finite depths, a sheet's window and depth ties) go through both routes' calibration parsers, `build_result` (what both
routes' digitisers call after segmenting), `contracts.commit`, `load` and `audit`.

The scan and its class probabilities are built in code (two strokes, the dashed one with a gap), so no model
runs: what varies is only the calibration."""
import itertools
import json

import cv2
import lasio
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import contracts
from batch_jobs.stages import _calibration as sidecar_calibration
from digitiser import TracingParams, cut_track, decode_scan
from digitiser.result import build_result
from serve_app.http import parse_calibration

H, W = 64, 48
MODEL_VERSION = "f" * 64
RESERVED = {"mask", "manifest", "curves", "dept"}

# ----------------------------------------------------------------------------- the valid space

depths = st.one_of(st.floats(min_value=-1e15, max_value=1e15),
                   st.sampled_from([-1e15, 1e15, 5e-324, -5e-324, 0.0, -0.0, 1e-6, 12345.678901]))
positive = st.one_of(st.floats(min_value=1e-300, max_value=1e15), st.sampled_from([5e-324, 1e15, 1.0]))
unit_chars = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Cf", "Co", "Cn", "Zs", "Zl", "Zp"),
                           exclude_characters=",")
units = st.one_of(
    st.just(""), st.sampled_from(["m", "ft", "F", "g/cm3", "ohm.m", "us/ft", "°C", "µs/ft", "API", "x" * 32]),
    st.text(unit_chars, min_size=1, max_size=32).filter(
        lambda u: ".." not in u and not u.startswith(".") and not u.endswith(".")))
names = st.one_of(st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True),
                  st.sampled_from(["A" * 32, "-" * 32, "_", "-", "0", "9" * 32, "Dept", "DEPTH", "STRT", "nan"]),
                  ).filter(lambda n: n.lower() not in RESERVED)


@st.composite
def curve(draw, name: str) -> dict:
    c = {"name": name} if draw(st.booleans()) or not name.startswith("curve") else {}
    kind = draw(st.sampled_from(["linear", "implicit-linear", "log", "absent"]))
    if kind == "log":
        left, right = draw(positive), draw(positive)
        c.update(scale="log", left=left, right=right if right != left else (left * 2 if left < 1 else left / 2))
    elif kind != "absent":
        left, right = draw(depths), draw(depths)
        c.update(left=left, right=right if right != left else (left + 1 if left < 0 else left - 1))
        if kind == "linear":
            c["scale"] = "linear"
    if draw(st.booleans()):
        c["unit"] = draw(units)
    return c


@st.composite
def calibrations(draw) -> dict:
    d = {}
    if draw(st.booleans()):
        d["top_depth"] = draw(depths)
    if draw(st.booleans()):
        d["bottom_depth"] = draw(depths)
    top = d.get("top_depth", 0.0)
    if not _distinct_at_6_decimals(top, d.get("bottom_depth", 1.0)):   # v2: depth points must differ as written
        d["bottom_depth"] = top - 1000.0 if top > 0 else top + 1000.0
    if draw(st.booleans()):
        d["depth_unit"] = draw(units)
    if draw(st.booleans()):   # columns [L, R) holding both strokes (12 and 34), the solid one (full height, straight)
        # at least 4 px inside: within TracingParams.border_px of the edge it would be the track's border line
        d["window"] = {"left_px": draw(st.integers(0, 8)), "right_px": draw(st.integers(35, W))}
    if draw(st.booleans()):
        d.update(draw(ties()))
    if draw(st.booleans()):
        n1 = draw(names)
        n2 = draw(names.filter(lambda n: n.lower() != n1.lower()))
        d["curves"] = [draw(curve(n1)), draw(curve(n2))]
    return d


def _distinct_at_6_decimals(top: float, bottom: float) -> bool:
    return len({"%.6f" % x for x in np.linspace(top, bottom, contracts.N_DEPTH)}) == contracts.N_DEPTH


@st.composite
def ties(draw) -> dict:
    """Two or three ties on a line depth = d0 + slope * row, at rows 4 px apart or more (a third up to 1.5 px
    off the line), and an interval whose ends lie, on the ties' least-squares line (the contract's depth
    line), at a row in 2..10 and one in 50..61, so both strokes stay in view."""
    d0 = draw(st.floats(-1e6, 1e6))
    slope = draw(st.floats(1e-3, 1e3)) * draw(st.sampled_from([1, -1]))
    rows = draw(st.lists(st.integers(0, 5_000).map(lambda r: 4 * r), min_size=2, max_size=3, unique=True))
    off = [0.0, 0.0, draw(st.floats(-1.5, 1.5))]
    depths = [d0 + slope * (r + o) for r, o in zip(rows, off)]
    b, a = np.polyfit(rows, depths, 1)
    top, bottom = draw(st.floats(2, 10)), draw(st.floats(50, H - 3))
    return {"depth_ties": [{"row": r, "depth": d} for r, d in zip(rows, depths)],
            "top_depth": a + b * top, "bottom_depth": a + b * bottom}


# ----------------------------------------------------------------------------- one scan, built in code

def _scan():
    """A 64 x 48 PNG with a solid stroke at column 12 and a dashed one at column 34 that stops for rows
    20..40, and class probabilities that say so (so curve 2 has a bridged stretch)."""
    gray = np.full((H, W), 255, np.uint8)
    probs = np.zeros((3, H, W), np.float32)
    probs[0] = 1.0
    gray[:, 12] = 0
    probs[:, :, 12] = [[0.0], [1.0], [0.0]]
    rows = [r for r in range(H) if not 20 <= r <= 40 and r % 6 < 4]
    gray[rows, 34] = 0
    probs[:, rows, 34] = [[0.0], [0.0], [1.0]]
    return decode_scan(cv2.imencode(".png", gray)[1].tobytes()), probs


SCAN, PROBS = _scan()
_COUNTER = itertools.count()


def commit_load_audit(calibration: dict, root: str, tmp, fs=None) -> contracts.Digitisation:
    """Both routes' parsers agree; the result commits, loads back equal and audits clean."""
    online = parse_calibration(json.dumps(calibration))
    sidecar = tmp / f"scan{next(_COUNTER)}.json"
    sidecar.write_text(json.dumps(calibration))
    offline = sidecar_calibration(_local_fs(), str(sidecar), None)
    assert online == offline
    box = online.box(W, H)
    probs = PROBS[:, box.top_px:box.bottom_px, box.left_px:box.right_px]
    result = build_result(cut_track(SCAN, online), online, probs, model_version=MODEL_VERSION,
                          tracing=TracingParams())
    receipt = contracts.commit(result, root, fs=fs)
    assert receipt.written and receipt.request_id == result.request_id
    back = contracts.load(root, result.request_id, fs=fs)
    assert back.calibration == online
    assert back.coverage == {n: round(v, 6) for n, v in result.coverage.items()}
    for name, values in result.curves.items():
        assert np.allclose(back.curves[name], values, rtol=1e-12, atol=5.1e-7)
    report = contracts.audit(root, fs=fs)
    assert report.ok and report.summary["committed"] == 1, report.format_table()
    return back


def _local_fs():
    import fsspec
    return fsspec.filesystem("file")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(calibration=calibrations())
def test_every_valid_calibration_commits_loads_and_audits(calibration, tmp_path):
    commit_load_audit(calibration, str(tmp_path / f"root{next(_COUNTER)}"), tmp_path)


EDGE = {"depth_unit": "", "top_depth": -1e15, "bottom_depth": 1e15,
        "curves": [{"name": "A" * 32, "left": 2000.0, "right": 0.2, "scale": "log"},
                   {"name": "-" * 32, "left": 140, "right": 40, "unit": "us/ft"}]}


def test_an_edge_of_the_space_commits_on_s3(s3_fs, s3_bucket, tmp_path):
    commit_load_audit(EDGE, f"s3://{s3_bucket}/results", tmp_path, fs=s3_fs)


def test_defaults_commit(tmp_path):
    back = commit_load_audit({}, str(tmp_path / "root"), tmp_path)
    assert back.calibration == contracts.Calibration()


# ----------------------------------------------------------------------------- LAS says what the user said

def _las(calibration: dict) -> lasio.LASFile:
    result = build_result(SCAN, contracts.Calibration.from_dict(calibration), PROBS, model_version=MODEL_VERSION,
                          tracing=TracingParams())
    return lasio.read(contracts.serialise(result)["curves.las"].decode(), mnemonic_case="preserve")


def test_an_empty_depth_unit_stays_empty_in_the_las():
    las = _las({"top_depth": 1000, "bottom_depth": 1100})
    assert [c.unit for c in las.curves] == ["", "", ""]
    assert [las.well[k].unit for k in ("STRT", "STOP", "STEP")] == ["", "", ""]
    assert las.index_unit is None   # lasio infers no unit either


def test_a_given_depth_unit_is_written_everywhere():
    las = _las({"depth_unit": "ft", "curves": [{"name": "GR", "unit": "gAPI"}, {"name": "ILD", "unit": "ohm.m"}]})
    assert [c.unit for c in las.curves] == ["ft", "gAPI", "ohm.m"]
    assert [las.well[k].unit for k in ("STRT", "STOP", "STEP")] == ["ft", "ft", "ft"]


@pytest.mark.parametrize("unit", ["m s", " ", "a..b", ".5", "m.", "a,b", "\t"])
def test_units_a_las_line_cannot_carry_are_refused_up_front(unit):
    with pytest.raises(contracts.ContractViolation, match="depth_unit"):
        contracts.Calibration.from_dict({"depth_unit": unit})


def test_a_curve_named_like_the_las_depth_curve_is_refused():
    with pytest.raises(contracts.ContractViolation, match="reserved"):
        contracts.Calibration.from_dict({"curves": [{"name": "DEPT"}, {"name": "GR"}]})
