"""Golden files and round-trip properties of the one serialiser.

The golden files pin the bytes of contract v1 (frozen: results written before v2) and v2: a change to them is
a format change, to be made on purpose (regenerate v2 with `UPDATE_GOLDEN=1 pytest
tests/test_contract_format.py`, review the diff, bump the contract version if readers could notice). The v1
files are never regenerated.
"""
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import contracts
from contracts.format import parse
from builders import make_result, make_v1_result

GOLDEN = Path(__file__).parent / "golden"
MAKERS = {"v1": make_v1_result, "v2": make_result}


@pytest.mark.parametrize("version", sorted(MAKERS))
def test_serialised_bytes_match_golden_files(version):
    folder, objects = GOLDEN / version, contracts.serialise(MAKERS[version]())
    if os.environ.get("UPDATE_GOLDEN") and version != "v1":
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in objects.items():
            (folder / name).write_bytes(data)
    assert sorted(p.name for p in folder.iterdir()) == sorted(objects)
    for name, data in objects.items():
        assert (folder / name).read_bytes() == data, f"{version}/{name} changed: a contract format change?"


@pytest.mark.parametrize("version", sorted(MAKERS))
def test_golden_set_is_valid_and_loads(version):
    objects = {p.name: p.read_bytes() for p in (GOLDEN / version).iterdir()}
    contracts.validate(MAKERS[version]().request_id, objects)
    assert parse(objects).contract_version == version[1:]


def test_v2_manifest_lists_the_bridged_intervals():
    result = make_result()
    m = json.loads(contracts.serialise(result)["manifest.json"])
    d = [float("%.6f" % x) for x in result.depth]
    assert m["bridged"] == {"GR": [[d[100], d[129]]], "ILD": [[d[0], d[4]], [d[290], d[299]]]}
    assert m["coverage"] == {"GR": 0.9, "ILD": 0.95}


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=1e-3, max_value=1e5, allow_nan=False)
names = st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True).filter(
    lambda n: n.lower() not in {"mask", "manifest", "curves"})


@st.composite
def calibrations(draw):
    top, bottom = draw(finite), draw(finite)
    if abs(top - bottom) < 1:
        bottom = top + 1.0
    n1 = draw(names)
    n2 = draw(names.filter(lambda n: n.lower() != n1.lower()))
    curves = []
    for name in (n1, n2):
        if draw(st.booleans()):
            left, right = draw(positive), draw(positive)
            curves.append({"name": name, "left": left, "right": right if right != left else left * 2, "scale": "log"})
        else:
            left, right = draw(finite), draw(finite)
            curves.append({"name": name, "left": left, "right": right if right != left else left + 1})
    return {"top_depth": top, "bottom_depth": bottom, "depth_unit": "m", "curves": curves}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calibration=calibrations(), seed=st.integers(0, 2**31), width=st.integers(1, 64), height=st.integers(1, 64))
def test_round_trip(calibration, seed, width, height):
    result = make_result(calibration=calibration, seed=seed, width=width, height=height)
    objects = contracts.serialise(result)
    contracts.validate(result.request_id, objects)
    back = parse(objects)
    assert back.request_id == result.request_id and back.calibration == result.calibration
    assert np.array_equal(back.mask, result.mask)
    for name, values in result.curves.items():
        assert np.allclose(back.curves[name], values, rtol=0, atol=5.1e-7)
    assert np.allclose(back.depth, result.depth, rtol=0, atol=5.1e-7)
    assert contracts.serialise(back) == objects  # reading and writing again is byte-stable
