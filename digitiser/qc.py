"""QC overlays: a committed result's curves drawn over its track, for people to check by eye (not part of the
contract; written outside results roots).

The overlay has the track box's size (the window's columns, the depth interval's rows: what the mask covers).
Curve 1 is red, curve 2 blue, drawn from the CSV values at the depth points' rows; stretches the tracer bridged
rather than observed are dotted in a pale tone, with a bar of the curve's colour along the track's left (curve 1)
or right (curve 2) edge. The top carries the calibration's scale: each curve's left and right values at the
track's edges, and the depth at the top and bottom.
"""
import logging
from pathlib import Path

import cv2
import numpy as np

import contracts
from digitiser.imageio import DecodedScan, decode_scan
from digitiser.track import cut_track

log = logging.getLogger(__name__)

COLOURS = ((0, 0, 220), (200, 80, 0))             # BGR: curve 1 red, curve 2 blue
PALE = ((150, 150, 255), (255, 190, 140))         # their bridged stretches
_SHIFT = 4                                        # cv2 fixed-point bits for sub-pixel drawing
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def positions(result: contracts.Digitisation) -> np.ndarray:
    """(300, 2) curve positions as fractions of track width, from the stored values through each scale."""
    out = []
    for spec in result.calibration.curves:
        v = np.asarray(result.curves[spec.name], dtype=np.float64)
        if spec.scale == "log":
            f = (np.log10(v) - np.log10(spec.left)) / (np.log10(spec.right) - np.log10(spec.left))
        else:
            f = (v - spec.left) / (spec.right - spec.left)
        out.append(f)
    return np.stack(out, axis=1)


def bridged_points(result: contracts.Digitisation, name: str) -> np.ndarray:
    """(300,) bool: depth points inside the curve's bridged runs (none for a v1 result)."""
    written = np.array([contracts.written_depth(d) for d in result.depth])
    out = np.zeros(len(written), bool)
    for first, last in result.bridged.get(name, []):
        lo, hi = min(first, last), max(first, last)
        out |= (written >= lo) & (written <= hi)
    return out


def overlay(track: np.ndarray, result: contracts.Digitisation) -> np.ndarray:
    """The result drawn over `track` (HxW uint8 gray: the scan cut to its track box). Returns HxWx3 BGR uint8."""
    box = result.calibration.box(result.input.width, result.input.height)
    assert track.shape == box.shape, f"track {track.shape} is not the result's track box {box.shape}"
    out = cv2.cvtColor((track // 2 + 128).astype(np.uint8), cv2.COLOR_GRAY2BGR)   # paper light, ink grey
    h, w = track.shape
    thick = max(2, round(w / 250))   # at least 2 px: a 1 px anti-aliased line is a pale smear
    xs = positions(result) * w - 0.5   # cv2 pixel coordinates: column c's centre at c
    for k, spec in enumerate(result.calibration.curves):
        _draw_curve(out, xs[:, k], box.rows, bridged_points(result, spec.name), k, thick)
    _draw_scale(out, result)
    return out


def _draw_curve(out: np.ndarray, x: np.ndarray, y: np.ndarray, bridged: np.ndarray, k: int, thick: int):
    pts = np.round(np.stack([x, y], axis=1) * 2**_SHIFT).astype(np.int32)
    h, w = out.shape[:2]
    period = max(1, int(round(4 / max(y[1] - y[0], 1e-9))))   # dots and gaps about 4 px long
    for i in range(len(x) - 1):
        if bridged[i] or bridged[i + 1]:
            if (i // period) % 2 == 0:
                cv2.line(out, tuple(pts[i]), tuple(pts[i + 1]), PALE[k], thick, cv2.LINE_AA, _SHIFT)
        else:
            cv2.line(out, tuple(pts[i]), tuple(pts[i + 1]), COLOURS[k], thick, cv2.LINE_AA, _SHIFT)
    bar = slice(0, 3) if k == 0 else slice(w - 3, w)
    for i in np.flatnonzero(bridged):
        lo, hi = int(np.floor(y[max(i - 1, 0)])), int(np.ceil(y[min(i + 1, len(y) - 1)]))
        out[max(lo, 0):min(hi + 1, h), bar] = COLOURS[k]


def _draw_scale(out: np.ndarray, result: contracts.Digitisation):
    """Each curve's left and right values at the track's edges, one line each, over a light strip."""
    h, w = out.shape[:2]
    scale = min(0.45, max(0.3, w / 900))
    line_h = int(24 * scale) + 4
    strip = out[:min(h, 2 * line_h + 4)]
    strip[:] = (strip * 0.35 + 255 * 0.65).astype(np.uint8)
    for k, spec in enumerate(result.calibration.curves):
        unit = f" {spec.unit}" if spec.unit else ""
        left, right = f"{spec.left:g}", f"{spec.right:g}{unit}"
        y = (k + 1) * line_h
        label = f"{spec.name}{' log' if spec.scale == 'log' else ''}"
        (lw, _), _ = cv2.getTextSize(left, _FONT, scale, 1)
        (rw, _), _ = cv2.getTextSize(right, _FONT, scale, 1)
        (nw, _), _ = cv2.getTextSize(label, _FONT, scale, 1)
        cv2.putText(out, left, (2, y), _FONT, scale, COLOURS[k], 1, cv2.LINE_AA)
        cv2.putText(out, right, (max(w - rw - 2, 0), y), _FONT, scale, COLOURS[k], 1, cv2.LINE_AA)
        if lw + nw + 16 < w - rw:   # the name between the two values, where it fits
            cv2.putText(out, label, (lw + 8, y), _FONT, scale, COLOURS[k], 1, cv2.LINE_AA)
    unit = f" {result.calibration.depth_unit}" if result.calibration.depth_unit else ""
    for depth, y in ((result.depth[0], len(strip) + line_h), (result.depth[-1], h - 6)):
        cv2.putText(out, f"{depth:g}{unit}", (6, y), _FONT, scale, (255, 255, 255), 3, cv2.LINE_AA)   # halo
        cv2.putText(out, f"{depth:g}{unit}", (6, y), _FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)


def overlay_png(scan: DecodedScan, result: contracts.Digitisation) -> bytes:
    """PNG bytes of the overlay of `result` on `scan` (whole, or already cut to its track)."""
    track = cut_track(scan, result.calibration).gray
    ok, buf = cv2.imencode(".png", overlay(track, result))
    assert ok, "PNG encoding failed"
    return buf.tobytes()


def qc_request(scan_path: str, calibration_path: str | None, root: str, out: str, *, weights=None,
               tracing=None) -> str:
    """`digitise qc`: the committed result of (scan, calibration) under `root`, drawn over the scan into `out`.
    The request id is derived as the routes derive it (model version of `weights`, default the shipped ones;
    `tracing`: TracingParams, default the defaults). Returns the request id. Raises contracts.NotCommitted
    when that request is not committed under `root`, ContractViolation for a bad calibration."""
    import json

    from digitiser.checkpoint import sha256_file
    from digitiser.predictor import DEFAULT_WEIGHTS
    from digitiser.tracing import TracingParams

    data = Path(scan_path).read_bytes()
    calibration = contracts.Calibration.from_dict(
        json.loads(Path(calibration_path).read_text()) if calibration_path else None)
    identity = (sha256_file(weights or DEFAULT_WEIGHTS), (tracing or TracingParams()).to_dict())
    rid = contracts.request_id(data, calibration, *identity)
    result = contracts.load(root, rid)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_bytes(overlay_png(decode_scan(data), result))
    log.info("request %s: overlay written to %s", rid, out)
    return rid
