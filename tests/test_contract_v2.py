"""Contract v2 beside v1: ids that cover the tracer, bridged intervals, and v1 results that stay readable."""
import json
from pathlib import Path

import numpy as np
import pytest

import contracts
import digitiser.tracing
from builders import edit_manifest, make_result, make_v1_result
from digitiser import TracingParams
from digitiser.result import build_result
from test_calibration_space import PROBS, SCAN

V1_GOLDEN = Path(__file__).parent / "golden" / "v1"
V = contracts.ContractViolation


def put_v1_golden(store) -> str:
    """The v1 golden result placed under a root as a v1 writer left it; returns its request id."""
    fs, base = store.resolve()
    rid = make_v1_result().request_id
    for p in V1_GOLDEN.iterdir():
        fs.pipe_file(f"{base}/{rid}/{p.name}", p.read_bytes())
    return rid


def test_v1_results_load_and_audit_beside_v2(store):
    rid = put_v1_golden(store)
    v2 = make_result()
    contracts.commit(v2, store.root, fs=store.fs)
    old = contracts.load(store.root, rid, fs=store.fs)
    assert old.contract_version == "1" and old.bridged == {} and old.coverage == {"GR": 0.9, "ILD": 0.9}
    assert contracts.load(store.root, v2.request_id, fs=store.fs).contract_version == "2"
    report = contracts.audit(store.root, fs=store.fs)
    assert report.ok and {e.request_id: e.contract_version for e in report.entries} == {rid: "1", v2.request_id: "2"}


def test_a_v2_writer_never_touches_a_v1_result(tmp_path):
    root = str(tmp_path / "results")
    fs, base = contracts.filesystem(root)
    rid = make_v1_result().request_id
    for p in V1_GOLDEN.iterdir():
        fs.pipe_file(f"{base}/{rid}/{p.name}", p.read_bytes())
    receipt = contracts.commit(make_result(), root)   # the same scan and calibration, now under v2
    assert receipt.request_id != rid
    assert {p.name: p.read_bytes() for p in (tmp_path / "results" / rid).iterdir()} == \
        {p.name: p.read_bytes() for p in V1_GOLDEN.iterdir()}


def test_v1_results_are_read_only(tmp_path):
    with pytest.raises(V, match="read-only"):
        contracts.commit(make_v1_result(), str(tmp_path))
    assert not (tmp_path / make_v1_result().request_id).exists()


def test_two_tracer_revisions_over_one_scan_are_two_committed_results(tmp_path, monkeypatch):
    cal, root, ids = contracts.Calibration(), str(tmp_path / "results"), []
    for revision in ("2026-12-03", "2027-01-01"):
        monkeypatch.setattr(digitiser.tracing, "REVISION", revision)
        result = build_result(SCAN, cal, PROBS, model_version="f" * 64, tracing=TracingParams())
        assert result.tracing["revision"] == revision
        assert contracts.commit(result, root).written
        ids.append(result.request_id)
    assert len(set(ids)) == 2
    report = contracts.audit(root)
    assert report.ok and sorted(e.request_id for e in report.entries) == sorted(ids)
    assert [contracts.load(root, i).tracing["revision"] for i in ids] == ["2026-12-03", "2027-01-01"]


def test_bridged_intervals_follow_the_observed_flags():
    depth = np.linspace(1000, 1299, 300)
    observed = np.ones(300, bool)
    observed[[0, 1, 50, 299]] = False
    assert contracts.bridged_intervals(depth, observed) == [[1000.0, 1001.0], [1050.0, 1050.0], [1299.0, 1299.0]]
    assert contracts.bridged_intervals(depth, np.ones(300, bool)) == []


def test_the_real_tracer_reports_the_dashed_curves_gap_as_bridged():
    result = build_result(SCAN, contracts.Calibration(), PROBS, model_version="f" * 64, tracing=TracingParams())
    [[first, last]] = result.bridged["curve2"]
    assert 0.3 < first < last < 0.65 and result.bridged["curve1"] == []   # rows 20..40 of 64, depth 0..1
    assert result.coverage["curve2"] == pytest.approx(1 - sum(first <= d <= last for d in result.depth) / 300)


@pytest.mark.parametrize("bridged, match", [
    ({"GR": [], "ILD": [[1000.0, 1001.0]]}, "covers"),                       # coverage says otherwise
    ({"GR": [[1000.1, 1000.2]], "ILD": []}, "depth grid"),                   # off the grid
    ({"GR": [[1100.0, 1000.0]], "ILD": []}, "grid order"),                   # backwards
    ({"GR": []}, "each of"),                                                 # a curve missing
    ({"GR": "none", "ILD": []}, "list of"),
])
def test_bad_bridged_intervals_are_rejected(bridged, match):
    result = make_result()
    objects = edit_manifest(contracts.serialise(result), bridged=bridged)
    with pytest.raises(V, match=match):
        contracts.validate(result.request_id, objects)


def test_adjacent_runs_must_be_one_run():
    result = make_result()
    m = json.loads(contracts.serialise(result)["manifest.json"])
    (a, b), = m["bridged"]["GR"]
    d = [float("%.6f" % x) for x in result.depth]
    split = {**m["bridged"], "GR": [[d[100], d[110]], [d[111], d[129]]]}
    with pytest.raises(V, match="grid order"):
        contracts.validate(result.request_id, edit_manifest(contracts.serialise(result), bridged=split))
