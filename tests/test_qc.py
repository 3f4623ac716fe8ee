"""QC overlays: the committed curves drawn over the track, as `digitise qc` and `digitise batch --qc` write them."""
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import contracts
from digitiser import DEFAULT_WEIGHTS, TracingParams, cut_track, decode_scan
from digitiser.checkpoint import sha256_file
from digitiser.result import build_result
from digitiser.qc import COLOURS, PALE, bridged_points, overlay_png, positions

REPO = Path(__file__).resolve().parents[1]
H, W = 300, 160
WINDOW = {"left_px": 20, "right_px": 140}    # a 120 px wide track inside a 160 px sheet


def _sheet():
    """Two strokes inside the window: a solid one drifting right, a dashed one with a gap in rows 100..160;
    probabilities (for the window) that say so; and a dark line outside the window the overlay must not show."""
    gray = np.full((H, W), 255, np.uint8)
    probs = np.zeros((3, H, 120), np.float32)
    probs[0] = 1
    for r in range(H):
        c1, c2 = 40 + r // 20, 90
        gray[r, c1] = 0
        probs[:, r, c1 - 20] = (0, 1, 0)
        if not 100 <= r <= 160 and r % 8 < 5:
            gray[r, c2] = 0
            probs[:, r, c2 - 20] = (0, 0, 1)
    gray[:, 5] = 0
    return cv2.imencode(".png", gray)[1].tobytes(), probs


CALIBRATION = {"window": WINDOW, "top_depth": 500.0, "bottom_depth": 800.0, "depth_unit": "ft",
               "curves": [{"name": "GR", "left": 0, "right": 150, "unit": "gAPI"},
                          {"name": "RES", "left": 0.2, "right": 2000, "scale": "log", "unit": "ohm.m"}]}


@pytest.fixture(scope="module")
def committed(tmp_path_factory):
    """(scan bytes, result, root): the sheet's result made as the routes make it, committed."""
    if not DEFAULT_WEIGHTS.exists():
        pytest.skip("no shipped weights: `digitise qc` derives the request id from them")
    data, probs = _sheet()
    cal = contracts.Calibration.from_dict(CALIBRATION)
    scan = cut_track(decode_scan(data), cal)
    result = build_result(scan, cal, probs, model_version=sha256_file(DEFAULT_WEIGHTS), tracing=TracingParams())
    root = str(tmp_path_factory.mktemp("qc") / "results")
    contracts.commit(result, root)
    return data, contracts.load(root, result.request_id), root


def _decode(png: bytes) -> np.ndarray:
    assert png.startswith(b"\x89PNG")
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)


def _near(img: np.ndarray, y: float, x: float, colour, r: int = 1) -> bool:
    patch = img[max(int(round(y)) - r, 0):int(round(y)) + r + 1, max(int(round(x)) - r, 0):int(round(x)) + r + 1]
    return bool((np.abs(patch.astype(int) - colour).sum(axis=2) < 60).any())


def test_the_overlay_is_a_png_of_the_windows_size_with_the_curves_where_the_csvs_say(committed):
    data, result, _ = committed
    img = _decode(overlay_png(decode_scan(data), result))
    assert img.shape == (H, 120, 3)
    rows = result.calibration.box(W, H).rows
    x = positions(result) * 120 - 0.5
    strip = 40   # the scale at the top covers the first rows
    for k in range(2):
        bridged = bridged_points(result, result.calibration.names[k])
        seen = [_near(img, rows[i], x[i, k], COLOURS[k]) for i in range(300) if rows[i] > strip and not bridged[i]]
        assert np.mean(seen) > 0.95, f"curve {k + 1} drawn at {np.mean(seen):.0%} of its observed depth points"
    assert bridged_points(result, "RES").any() and not bridged_points(result, "GR").any()


def test_bridged_stretches_are_marked_differently(committed):
    data, result, _ = committed
    img = _decode(overlay_png(decode_scan(data), result))
    rows, x = result.calibration.box(W, H).rows, positions(result) * 120 - 0.5
    bridged = np.flatnonzero(bridged_points(result, "RES"))
    assert not any(_near(img, rows[i], x[i, 1], COLOURS[1], r=0) for i in bridged[2:-2])
    assert any(_near(img, rows[i], x[i, 1], PALE[1]) for i in bridged)
    assert (np.abs(img[int(rows[bridged[len(bridged) // 2]]), -2].astype(int) - COLOURS[1]).sum() < 60)  # edge bar


def test_digitise_qc_draws_the_committed_result(committed, tmp_path):
    data, result, root = committed
    (tmp_path / "sheet.png").write_bytes(data)
    (tmp_path / "sheet.json").write_text(json.dumps(CALIBRATION))
    out = tmp_path / "qc" / "overlay.png"
    args = [sys.executable, "-m", "cli", "qc", str(tmp_path / "sheet.png"), str(tmp_path / "sheet.json"),
            root, "-o", str(out)]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert result.request_id in proc.stdout
    assert out.read_bytes() == overlay_png(decode_scan(data), result)


def test_digitise_qc_says_when_nothing_is_committed(committed, tmp_path):
    data, _, _ = committed
    (tmp_path / "sheet.png").write_bytes(data)
    (tmp_path / "other.json").write_text(json.dumps({**CALIBRATION, "top_depth": 400.0}))
    args = [sys.executable, "-m", "cli", "qc", str(tmp_path / "sheet.png"), str(tmp_path / "other.json"),
            str(tmp_path / "empty"), "-o", str(tmp_path / "o.png")]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "not committed" in proc.stderr and not (tmp_path / "o.png").exists()
