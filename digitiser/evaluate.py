"""`digitise eval DIR`: digitise scans that have ground truth (written by `digitise synth`) and score them.

Per scan: MAE and p95 position error per curve (fraction of track width), swap rate, IoU per curve class,
or the failure, the scan's width and height in px and the kind of its pixels (colour, grey, or bilevel: only
black and white, as a 1-bit scan decodes; the summary breaks the means down by width and by pixels), and how
legible each curve is by its truth (failures on scans whose curve is hidden are counted apart). The summary
goes to stdout as a table and to --json (with the per-scan records and the tracing parameters); --qc writes
overlays of the worst scans. Each record also has the truth's roughness (`metrics.roughness`), and the summary a
breakdown by it; and each curve's MAE split by what the reading lies on where it is off (an edge, the other curve,
the third line, elsewhere: `metrics.error_by_cause`), so that a change is seen to take the error it aimed at.

`--sweep NAME=V1,V2` segments the folder once and scores it per value of one tracing parameter (`run_sweep`),
each report its own; every report records a digest of the truths it scored (`truth_digest`), so that `digitise
compare` pairs only reports of the same scans.

`--probs-cache DIR` keeps each scan's class probabilities (exact float32) keyed by everything they depend on, so a
tracer change is measured on a folder in the time tracing takes, without segmenting it again.

`--perfect-segmenter` traces the truth masks instead of the segmenter's probabilities: what the tracer and the
family's drawing alone leave (a floor no segmenter can go under with this tracer), so that a figure can be split
into the segmenter's share and the tracer's.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np

import contracts
from digitiser.imageio import decode_scan
from digitiser.metrics import (error_by_cause, legible_fraction, on_third_line, qc_overlay, roughness, scan_record,
                               summarise)
from digitiser.predictor import MAX_BATCH, Digitiser
from digitiser.scale import to_fractions
from digitiser.tracing import TracingParams

log = logging.getLogger(__name__)


def truth_files(folder) -> list[Path]:
    return sorted(Path(folder).glob("*.truth.npz"))


def truth_digest(truths: list[Path]) -> str:
    """sha256 over the truth files' names and arrays (not their bytes: a zip records when it was written), so
    two reports with one digest scored the same truths, however often the folder was drawn again."""
    h = hashlib.sha256()
    for t in truths:
        h.update(t.name.encode())
        with np.load(t) as truth:
            for key in sorted(truth.files):
                h.update(key.encode() + np.ascontiguousarray(truth[key]).tobytes())
    return h.hexdigest()


def image_for(truth: Path) -> Path:
    stem = truth.name[: -len(".truth.npz")]
    found = [p for p in truth.parent.glob(stem + ".*") if not p.name.endswith((".json", ".truth.npz"))]
    assert len(found) == 1, f"expected one image for {truth}, found {found}"
    return found[0]


def evaluate(folder, digitiser: Digitiser, qc_dir=None, worst_k: int = 5, perfect_segmenter: bool = False,
             probs_cache=None) -> dict:
    """Score every scan with ground truth in `folder`; returns the summary (see metrics.summarise).
    perfect_segmenter: trace each scan's truth mask instead of the segmenter's probabilities.
    probs_cache: a folder keeping the segmenter's probabilities between runs (`ProbsCache`)."""
    summary = evaluate_tracings(folder, digitiser, [digitiser.tracing], worst_k, perfect_segmenter, probs_cache)[0]
    if qc_dir:
        cache = ProbsCache(probs_cache, digitiser) if probs_cache else None
        _write_overlays(folder, summary.get("worst", []), digitiser, Path(qc_dir), perfect_segmenter, cache)
    return summary


def evaluate_tracings(folder, digitiser: Digitiser, tracings: list[TracingParams], worst_k: int = 5,
                      perfect_segmenter: bool = False, probs_cache=None) -> list[dict]:
    """`evaluate` once per tracing of the same probabilities: each scan is segmented once, so sweeping a tracing
    parameter (e.g. min_prob, which trades refusals for error) costs one segmentation of the folder."""
    truths = truth_files(folder)
    assert truths, f"no *.truth.npz files in {folder}: make some with `digitise synth {folder} --n 300`"
    records, t0 = [[] for _ in tracings], time.monotonic()
    cache = ProbsCache(probs_cache, digitiser) if probs_cache else None
    for start in range(0, len(truths), MAX_BATCH):
        for kept, new in zip(records, _evaluate_batch(truths[start:start + MAX_BATCH], digitiser, tracings,
                                                      perfect_segmenter, cache)):
            kept += new
        done = len(records[0])
        log.info("eval: %d/%d scans (%.2f s/scan)", done, len(truths), (time.monotonic() - t0) / done)
    seconds = (time.monotonic() - t0) / len(truths)
    digest = truth_digest(truths)
    summaries = []
    for tracing, recs in zip(tracings, records):
        summary = summarise(recs, worst_k=worst_k, min_coverage=tracing.min_coverage)
        summary["seconds_per_scan"] = seconds   # segmenting once and tracing each way
        summary["model_version"] = digitiser.model_version
        summary["probabilities"] = "truth masks" if perfect_segmenter else "segmenter"
        summary["tracing"] = tracing.to_dict()
        summary["truth_digest"] = digest   # `digitise compare` pairs only reports of the same truth
        summary["per_scan"] = recs  # so a changed figure can be traced to the scans that changed it
        summaries.append(summary)
    return summaries


def _evaluate_batch(truths: list[Path], digitiser: Digitiser, tracings: list[TracingParams],
                    perfect_segmenter: bool, cache: ProbsCache | None = None) -> list[list[dict]]:
    """Per tracing, the records of one batch of scans (segmented once)."""
    scans = [decode_scan(image_for(t).read_bytes()) for t in truths]
    cals = [contracts.Calibration.from_dict(json.loads(t.with_name(image_for(t).stem + ".json").read_text()))
            for t in truths]
    loaded = [np.load(t) for t in truths]
    probabilities = _probabilities([truth["mask"] for truth in loaded], scans, digitiser, perfect_segmenter, cache)
    return [[_record(t, truth, scan, cal, probs, digitiser, tracing)
             for t, truth, scan, cal, probs in zip(truths, loaded, scans, cals, probabilities)]
            for tracing in tracings]


def _record(t: Path, truth, scan, cal: contracts.Calibration, probs: np.ndarray, digitiser: Digitiser,
            tracing: TracingParams) -> dict:
    scan_id = t.name[: -len(".truth.npz")]
    legible = legible_fraction(truth["mask"], truth["x_frac"], tracing.observe_px)
    try:
        result = digitiser.finish(scan, cal, probs, tracing)
    except ValueError as e:
        rec = scan_record(scan_id, error=e, legible=legible)
    else:
        pred_x = _fractions(result, cal)
        rec = scan_record(scan_id, pred_x=pred_x, true_x=truth["x_frac"],
                          pred_mask=result.mask, true_mask=truth["mask"], legible=legible)
        third_x = truth["third_x"] if "third_x" in truth and np.isfinite(truth["third_x"]).any() else None
        if third_x is not None:
            rec["on_third_1"], rec["on_third_2"] = on_third_line(pred_x, truth["x_frac"], third_x, scan.width)
        rec["cause"] = error_by_cause(pred_x, truth["x_frac"], third_x)
    return {**rec, "width": scan.width, "height": scan.height, "pixels": pixel_kind(scan),
            "roughness": roughness(truth["x_frac"]),
            **{k: [str(f) for f in truth[k]] for k in ("features", "styles") if k in truth}}


def _probabilities(masks: list[np.ndarray], scans, digitiser: Digitiser, perfect_segmenter: bool,
                   cache: ProbsCache | None = None) -> list[np.ndarray]:
    """The segmenter's class probabilities of each scan (kept in `cache` where given), or (perfect_segmenter) its
    truth mask as certainties."""
    if perfect_segmenter:
        return [np.stack([m == c for c in range(3)]).astype(np.float32) for m in masks]
    return cache.probabilities(scans) if cache else digitiser.segment_scans(scans)


class ProbsCache:
    """The segmenter's class probabilities of scans, kept in a folder between eval runs. A file is named by a hash
    of everything the probabilities depend on (the model version, the tiling, the device and its arithmetic: bfloat16
    kernels or float32 ones change the last bits; and the pixels read), holds them exactly (float32, compressed)
    and is written whole or not at all; one that does not load is segmented again and replaced."""

    def __init__(self, folder, digitiser: Digitiser):
        self.folder, self.digitiser = Path(folder), digitiser
        self.salt = json.dumps([digitiser.model_version, repr(digitiser.tiles), digitiser.device.type,
                                digitiser.arithmetic]).encode()

    def path(self, scan) -> Path:
        pixels = np.ascontiguousarray(self.digitiser.pixels(scan))
        h = hashlib.sha256(self.salt + repr((pixels.shape, pixels.dtype.str)).encode() + pixels.tobytes())
        return self.folder / f"{h.hexdigest()[:40]}.npz"

    def probabilities(self, scans) -> list[np.ndarray]:
        paths = [self.path(scan) for scan in scans]
        probs = [self._load(p) for p in paths]
        missing = [i for i, p in enumerate(probs) if p is None]
        if missing:   # made on first use: a run that keeps nothing makes no folder
            self.folder.mkdir(parents=True, exist_ok=True)
        for i, p in zip(missing, self.digitiser.segment_scans([scans[i] for i in missing])):
            self._store(paths[i], p)
            probs[i] = p
        return probs

    @staticmethod
    def _load(path: Path) -> np.ndarray | None:
        if not path.exists():
            return None
        try:
            with np.load(path) as f:
                return f["probs"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            log.warning("probabilities cache: %s does not load (%s): segmenting the scan again", path, e)
            return None

    @staticmethod
    def _store(path: Path, probs: np.ndarray) -> None:
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
        np.savez_compressed(tmp, probs=probs.astype(np.float32, copy=False))
        os.replace(tmp, path)


def pixel_kind(scan) -> str:
    """"colour" (a colour file whose channels differ), "bilevel" (only 0 and 255), else "grey"."""
    if scan.colour is not None:
        return "colour"
    return "bilevel" if not np.any((scan.gray > 0) & (scan.gray < 255)) else "grey"


def _fractions(result: contracts.Digitisation, cal: contracts.Calibration) -> np.ndarray:
    """Curve values back to fractions of track width (inverse of the calibration), (300, 2)."""
    return np.stack([to_fractions(result.curves[c.name], c.left, c.right, c.scale) for c in cal.curves], axis=1)


def _write_overlays(folder, worst_ids, digitiser: Digitiser, qc_dir: Path, perfect_segmenter: bool,
                    cache: ProbsCache | None = None):
    qc_dir.mkdir(parents=True, exist_ok=True)
    for scan_id in worst_ids:
        truth_path = Path(folder) / f"{scan_id}.truth.npz"
        scan = decode_scan(image_for(truth_path).read_bytes())
        cal = contracts.Calibration.from_dict(json.loads((Path(folder) / f"{scan_id}.json").read_text()))
        truth = np.load(truth_path)
        probs = _probabilities([truth["mask"]], [scan], digitiser, perfect_segmenter, cache)[0]
        try:
            pred = _fractions(digitiser.finish(scan, cal, probs), cal)
        except ValueError:
            pred = np.full((contracts.N_DEPTH, 2), np.nan)
        cv2.imwrite(str(qc_dir / f"{scan_id}.qc.png"), qc_overlay(scan.gray, pred, truth["x_frac"]))
    log.info("wrote %d QC overlays to %s", len(worst_ids), qc_dir)


def run(folder: str | Path, weights: str | Path | None = None, json_path: str | Path | None = None,
        qc_dir: str | Path | None = None, perfect_segmenter: bool = False,
        tracing: TracingParams = TracingParams(), probs_cache: str | Path | None = None) -> dict:
    """`digitise eval`: evaluate `weights` (None: the shipped ones) traced with `tracing` on `folder`; the summary
    is returned and, with json_path, written there as JSON. The caller prints `format_table(summary)`."""
    summary = evaluate(folder, Digitiser(weights, tracing=tracing), qc_dir=qc_dir, perfect_segmenter=perfect_segmenter,
                       probs_cache=probs_cache)
    if json_path:
        _write_json(Path(json_path), summary)
    return summary


def run_sweep(folder: str | Path, tracings: dict[str, TracingParams], weights: str | Path | None = None,
              json_path: str | Path | None = None, perfect_segmenter: bool = False,
              probs_cache: str | Path | None = None) -> dict[str, dict]:
    """`digitise eval --sweep NAME=V1,V2,..`: one summary per labelled tracing (label "NAME=V"), the folder
    segmented once; with json_path each is written beside it as a report of its own (`sweep_path`), so that
    `digitise compare` can pair any two. The caller prints `format_sweep(summaries)`."""
    summaries = dict(zip(tracings, evaluate_tracings(folder, Digitiser(weights), list(tracings.values()),
                                                     perfect_segmenter=perfect_segmenter, probs_cache=probs_cache)))
    if json_path:
        for label, summary in summaries.items():
            _write_json(sweep_path(json_path, label), summary)
    return summaries


def sweep_path(json_path: str | Path, label: str) -> Path:
    """Where a sweep writes the report of one value: report.json -> report.min_prob=0.35.json."""
    path = Path(json_path)
    return path.with_name(f"{path.stem}.{label}{path.suffix or '.json'}")


def _write_json(path: Path, summary: dict) -> None:
    path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
