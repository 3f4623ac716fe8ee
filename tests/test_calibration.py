"""Calibration rules (contract v2, and v1 for stored results): defaults, normalisation, and every rejection."""
import math

import pytest

import contracts
from builders import CALIBRATION

C = contracts.Calibration


def with_curve(i, **fields):
    curves = [dict(c) for c in CALIBRATION["curves"]]
    curves[i].update(fields)
    return {**CALIBRATION, "curves": curves}


def test_defaults_when_absent():
    d = C.from_dict({}).to_dict()
    assert d == {"top_depth": 0.0, "bottom_depth": 1.0, "depth_unit": "",
                 "curves": [{"name": "curve1", "left": 0.0, "right": 1.0, "scale": "linear", "unit": ""},
                            {"name": "curve2", "left": 0.0, "right": 1.0, "scale": "linear", "unit": ""}]}
    assert C.from_dict(None) == C.from_dict({})


def test_normalised_form_is_a_fixed_point():
    d = C.from_dict(CALIBRATION).to_dict()
    assert C.from_dict(d).to_dict() == d
    assert isinstance(d["curves"][0]["left"], float)


def test_reversed_scale_is_allowed():
    assert C.from_dict(with_curve(0, left=140, right=40)).curves[0].left == 140.0


def test_negative_zero_normalises():
    assert math.copysign(1, C.from_dict({"top_depth": -0.0}).top_depth) == 1


@pytest.mark.parametrize("calibration, match", [
    ({"top_depth": 5, "bottom_depth": 5}, "depth range"),
    ({"top_depth": float("nan")}, "finite"),
    ({"bottom_depth": float("inf")}, "finite"),
    ({"top_depth": "1000"}, "number"),
    ({"top_depth": True}, "number"),
    ({"depth": 3}, "unknown fields"),
    ({"depth_unit": "f,t"}, "depth_unit"),
    ({"curves": [{"name": "a"}]}, "exactly 2"),
    ({"curves": [{"name": "a"}, {"name": "b"}, {"name": "c"}]}, "exactly 2"),
    ({"curves": "GR"}, "exactly 2"),
    ([1, 2], "JSON object"),
])
def test_bad_calibration_is_rejected(calibration, match):
    with pytest.raises(contracts.ContractViolation, match=match):
        C.from_dict(calibration)


@pytest.mark.parametrize("fields, match", [
    ({"scale": "log", "left": 0, "right": 10}, "log scale"),
    ({"scale": "log", "left": -1, "right": 10}, "log scale"),
    ({"scale": "sqrt"}, "scale"),
    ({"left": 3, "right": 3}, "span"),
    ({"colour": "red"}, "unknown fields"),
    ({"left": None}, "number"),
    ({"unit": 5}, "unit"),
])
def test_bad_curve_is_rejected(fields, match):
    with pytest.raises(contracts.ContractViolation, match=match):
        C.from_dict(with_curve(1, **fields))


@pytest.mark.parametrize("name", ["../x", "a/b", "a\\b", "", "x" * 33, "GR.csv", "mask", "Manifest", "CURVES",
                                  "héllo", " GR", 7])
def test_curve_name_that_could_escape_or_shadow_is_rejected(name):
    with pytest.raises(contracts.ContractViolation, match="name"):
        C.from_dict(with_curve(0, name=name))


def test_curve_names_must_differ_ignoring_case():
    with pytest.raises(contracts.ContractViolation, match="distinct"):
        C.from_dict(with_curve(1, name="gr"))


T = {"min_coverage": 0.5, "revision": "r1"}


def test_request_id_is_32_hex_and_deterministic():
    rid = contracts.request_id(b"abc", CALIBRATION, "m1", T)
    assert len(rid) == 32 and int(rid, 16) >= 0
    assert rid == contracts.request_id(b"abc", C.from_dict(CALIBRATION), "m1", dict(T))


def test_request_id_ignores_spelling_of_equal_calibrations():
    explicit = C.from_dict({}).to_dict()
    assert contracts.request_id(b"abc", {}, "m", T) == contracts.request_id(b"abc", explicit, "m", T)


@pytest.mark.parametrize("image, calibration, model, tracing", [
    (b"abd", CALIBRATION, "m1", T),
    (b"abc", with_curve(0, right=151), "m1", T),
    (b"abc", CALIBRATION, "m2", T),
    (b"abc", CALIBRATION, "m1", {**T, "revision": "r2"}),     # a new tracer revision
    (b"abc", CALIBRATION, "m1", {**T, "min_coverage": 0.6}),  # other tracing parameters
])
def test_request_id_changes_with_each_input(image, calibration, model, tracing):
    assert contracts.request_id(image, calibration, model, tracing) != contracts.request_id(b"abc", CALIBRATION, "m1", T)


def test_v2_rules_refuse_what_v1_accepted_and_could_not_write():
    for bad, match in [({"top_depth": 2e15}, "within"), ({"curves": [{"name": "dept"}, {"name": "x"}]}, "DEPT"),
                       ({"top_depth": 0, "bottom_depth": 1e-5}, "too close")]:
        with pytest.raises(contracts.ContractViolation, match=match):
            C.from_dict(bad)
        C.from_dict(bad, version="1")   # a stored v1 manifest still parses under the v1 rules
