"""The job's per-batch steps, as plain functions over pyarrow tables (Ray Data calls them; tests can too).

Every step takes and returns ROW_SCHEMA tables, one row per listed scan. A row stays `pending` while it still
has work to do and becomes `committed`, `skipped` or `failed` (with error kind and message) at the step that
settles it; later steps pass settled rows through untouched. Rows carry the decoded scan (pickled
`DecodedScan`: its pixels, 1 byte each) into the segmenter step, so the actor, the job's bottleneck, never
decodes, and the pickled `contracts.Digitisation` (its mask, 1 byte a pixel, not the 12-byte probabilities) from
there to the commit step; each is dropped as soon as it is used, so settled rows are a few hundred bytes. The
segmenter step hands each scan on as soon as it is traced, so committing overlaps the rest of its batch.

Everything that reaches storage goes through `contracts.commit`; skipping uses `contracts.request_id` and
`contracts.is_committed`, exactly as the online route does. Ray retries tasks, so each step is idempotent.
"""
import functools
import json
import logging
import pickle
import threading
import time
from collections.abc import Callable, Iterator

import pyarrow as pa

import contracts
from batch_jobs.config import COMMITTED, FAILED, SKIPPED
from digitiser import BadImage, cut_track, decode_scan   # torch-free: the I/O steps' workers never load it
from digitiser.qc import overlay_png
from digitiser.tracer_pool import TracerPool, trace_scan   # torch-free too

log = logging.getLogger(__name__)

PENDING = "pending"
SEGMENT_PIXELS = 32_000_000    # scans per segmenter call are capped by total pixels (probabilities: 12 B/px)
STORAGE_ATTEMPTS = 3

ROW_SCHEMA = pa.schema([
    ("source", pa.string()), ("sidecar", pa.string()), ("request_id", pa.string()),
    ("status", pa.string()), ("error_kind", pa.string()), ("error_message", pa.string()),
    ("input_bytes", pa.int64()),
    # seconds: read_s bytes + sidecar; decode_s decoding (once, before the actor); segment_s this scan's pixel
    # share of its segmenter call; trace_s tracing + result; commit_s the is-committed check + the commit
    ("read_s", pa.float64()), ("decode_s", pa.float64()), ("segment_s", pa.float64()),
    ("trace_s", pa.float64()), ("commit_s", pa.float64()),
    ("calibration", pa.string()),      # normalised calibration JSON, while pending
    ("scan", pa.large_binary()),       # pickled DecodedScan, until segmented
    ("result", pa.large_binary()),     # pickled contracts.Digitisation, until committed
    ("qc", pa.large_binary()),         # the QC overlay PNG (with --qc), until written after the commit
])
TRANSIT = ("sidecar", "calibration", "scan", "result", "qc")
LEDGER_SCHEMA = pa.schema([f for f in ROW_SCHEMA if f.name not in TRANSIT])


MAX_MESSAGE = 2000   # an error may quote the input; a hostile input must not become a 1 MB ledger cell


def _fail(row: dict, kind: str, message: str) -> dict:
    message = message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + " [...]"
    row.update(status=FAILED, error_kind=kind, error_message=message, scan=None, result=None, calibration=None,
               qc=None)
    return row


def _table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=ROW_SCHEMA)


def _with_storage_retries(fn, *args, **kwargs):
    """contracts raises StorageError for a store failure that a retry may fix; try a few times."""
    for attempt in range(1, STORAGE_ATTEMPTS + 1):
        try:
            return fn(*args, **kwargs)
        except contracts.StorageError as e:
            if attempt == STORAGE_ATTEMPTS:
                raise
            log.warning("storage error (attempt %d of %d), retrying: %s", attempt, STORAGE_ATTEMPTS, e)
            time.sleep(0.5 * 2 ** attempt)


# ----------------------------------------------------------------------------- 1. read, check, validate

def prepare_batch(listing: pa.Table, *, src_fs, dst: str, dst_fs, model_version: str, tracing: dict,
                  default_calibration: dict | None, colour: bool = False) -> pa.Table:
    """Listing rows -> ROW_SCHEMA rows: read the bytes and sidecar, validate the calibration, derive the
    request id, skip what DST already holds (no decode, no model), and decode the image and cut it to its track.
    Pending rows leave with the decoded track (its colour too when the segmenter reads colour) and the normalised
    calibration."""
    identity = (model_version, tracing)
    return _table([_prepare(row, src_fs, dst, dst_fs, identity, default_calibration, colour)
                   for row in listing.to_pylist()])


def _prepare(listed: dict, src_fs, dst, dst_fs, identity: tuple[str, dict], default_calibration, colour) -> dict:
    row = {"source": listed["source"], "sidecar": listed["sidecar"], "status": PENDING,
           "input_bytes": listed["size"]}
    t0 = time.perf_counter()
    try:
        data = src_fs.cat_file(src_fs._strip_protocol(row["source"]))
    except (OSError, ValueError) as e:   # vanished since listing, permission, network
        return _fail(row, "read_error", f"cannot read the scan: {type(e).__name__}: {e}")
    row["input_bytes"] = len(data)
    try:
        calibration = _calibration(src_fs, row["sidecar"], default_calibration)
    except contracts.ContractViolation as e:
        return _fail(row, "bad_calibration", str(e))
    row["read_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    row["request_id"] = contracts.request_id(data, calibration, *identity)
    try:
        done = _with_storage_retries(contracts.is_committed, dst, row["request_id"], fs=dst_fs)
    except contracts.StorageError as e:
        return _fail(row, "storage", str(e))
    row["commit_s"] = time.perf_counter() - t0
    if done:
        row["status"] = SKIPPED
        return row
    t0 = time.perf_counter()
    try:
        # here, so a bad file never takes a segmenter slot
        scan = cut_track(decode_scan(data, colour=colour), calibration)
    except BadImage as e:
        return _fail(row, e.kind, str(e))
    except contracts.ContractViolation as e:   # a window or depth interval outside this image
        return _fail(row, "bad_calibration", f"the calibration does not fit this scan: {e}")
    row.update(decode_s=time.perf_counter() - t0, scan=pickle.dumps(scan, protocol=pickle.HIGHEST_PROTOCOL),
               calibration=json.dumps(calibration.to_dict()))
    return row


def _calibration(fs, sidecar: str | None, default: dict | None) -> contracts.Calibration:
    """The sidecar's calibration, else the job default, else the contract defaults. Raises ContractViolation
    naming the sidecar when it cannot be read, is not JSON, or breaks the contract."""
    if sidecar is None:
        return contracts.Calibration.from_dict(default)
    try:
        raw = contracts.loads_strict(fs.cat_file(fs._strip_protocol(sidecar)))
    except (OSError, ValueError) as e:   # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise contracts.ContractViolation(f"calibration sidecar {sidecar} is unreadable or not JSON "
                                          f"({type(e).__name__}: {e}); fix or remove it") from e
    try:
        return contracts.Calibration.from_dict(raw)
    except contracts.ContractViolation as e:
        raise contracts.ContractViolation(f"calibration sidecar {sidecar}: {e}") from e


# ----------------------------------------------------------------------------- 2. segment and trace

class DigitiseBatch:
    """Ray Data callable class: holds one `Digitiser` (loaded once per actor, on `device`) and turns pending
    rows into pickled results (segment the batch, then trace each scan, yielding it at once). Raises
    CheckpointError if the weights it loads are not the model version the job derived its request ids from.

    Two batches run at once in an actor (job.ACTOR_CALLS threads), one forward pass at a time (`_model`): while
    one batch is traced (Python, holding the GIL), the next one's forward pass runs (torch, releasing it), so
    the model is not idle while tracing, which costs half as much as segmenting on a CPU. With `tracers` > 1
    (an actor that reserved several CPUs, e.g. beside a GPU, where tracing costs 10x the forward pass) the
    scans are traced in that many worker processes instead (digitiser.tracer_pool), side by side."""

    def __init__(self, weights: str, model_version: str, device: str = "cpu", qc: bool = False, tracers: int = 1):
        from digitiser import CheckpointError, Digitiser
        t0 = time.perf_counter()
        self.digitiser = Digitiser(weights, device=device)   # "cuda" only where the actor reserved a GPU
        self.qc = qc
        self._model = threading.Lock()
        self._tracers = TracerPool(tracers) if tracers > 1 else None
        log.info("segmenter actor: model %s on %s, loaded in %.1f s", self.digitiser.model_version[:12],
                 self.digitiser.device, time.perf_counter() - t0)
        if self.digitiser.model_version != model_version:
            raise CheckpointError(f"segmenter weights {weights} are model version {self.digitiser.model_version} "
                                  f"on this worker, but the job keys requests by {model_version}: the weights "
                                  "changed during the job; run it again")

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        rows = batch.to_pylist()
        settled = [r for r in rows if r["status"] != PENDING]
        if settled:
            yield _table(settled)
        for group in _groups([r for r in rows if r["status"] == PENDING], SEGMENT_PIXELS):
            for row in self._digitise(group):
                yield _table([row])

    def _digitise(self, group: list[tuple[dict, object, contracts.Calibration]]) -> Iterator[dict]:
        try:
            with self._model:   # the wait for the other batch's forward pass is not this batch's segment_s
                t0 = time.perf_counter()
                probs = self.digitiser.segment_scans([scan for _, scan, _ in group])
        except Exception as e:   # one bad batch must not stop the job: its scans fail, visibly
            log.exception("segmenting %d scans failed", len(group))
            for row, _, _ in group:
                yield _fail(row, "internal", f"segmentation failed: {type(e).__name__}: {e}")
            return
        share = (time.perf_counter() - t0) / sum(s.gray.size for _, s, _ in group)
        for (row, scan, calibration), traced in zip(group, self._trace(group, probs)):
            row["segment_s"], row["scan"] = share * scan.gray.size, None
            try:
                t = traced()
            except ValueError as e:   # ContractViolation and other bad input to result building
                _fail(row, "invalid_result", f"{type(e).__name__}: {e}")
                yield row
                continue
            row["trace_s"] = t.trace_s
            if t.not_found is not None:
                _fail(row, "curve_not_found", t.not_found["message"])
            else:
                assert t.result.request_id == row["request_id"], \
                    f"{row['source']}: result id {t.result.request_id} != planned id {row['request_id']}"
                row["result"] = pickle.dumps(t.result, protocol=pickle.HIGHEST_PROTOCOL)
                row["qc"] = overlay_png(scan, t.result) if self.qc else None
            yield row

    def _trace(self, group, probs) -> list[Callable]:
        """Per scan, a call returning its Traced: tracing here when called, or waiting for the tracing processes,
        which are sent the whole batch at once."""
        d = self.digitiser
        args = [(scan, calibration, p, d.tracing, d.model_version) for (_, scan, calibration), p in zip(group, probs)]
        if self._tracers is None:
            return [functools.partial(trace_scan, *a) for a in args]
        return [self._tracers.submit(*a).result for a in args]

    def __del__(self):
        if getattr(self, "_tracers", None) is not None:
            self._tracers.close()


def _groups(pending: list[dict], max_pixels: int):
    """Yield the pending rows as [(row, DecodedScan, Calibration)] groups of at most `max_pixels` track pixels in
    total (a larger track goes alone). Segmentation is per-sample identical whatever the batch, so grouping
    changes nothing but peak memory."""
    group, pixels = [], 0
    for row in pending:
        scan = pickle.loads(row["scan"])
        calibration = contracts.Calibration.from_dict(json.loads(row["calibration"]))
        if group and pixels + scan.gray.size > max_pixels:
            yield group
            group, pixels = [], 0
        group.append((row, scan, calibration))
        pixels += scan.gray.size
    if group:
        yield group


# ----------------------------------------------------------------------------- 3. commit

def commit_batch(batch: pa.Table, *, dst: str, dst_fs, qc: tuple | None = None) -> pa.Table:
    """Commit each pending row's result through `contracts.commit` (idempotent: a retried or duplicate
    commit writes nothing and reports `skipped`); then, with `qc` = (filesystem, folder), write its overlay
    there as `<stem>-<request id>.qc.png` (outside the contract: a failed overlay write is only logged)."""
    rows = batch.to_pylist()
    for row in rows:
        if row["status"] == PENDING:
            _commit(row, dst, dst_fs)
        if row["qc"] is not None and qc is not None and row["status"] != FAILED:
            _write_overlay(row, *qc)
        row["qc"] = None
    return _table(rows)


def _write_overlay(row: dict, fs, folder: str):
    stem = row["source"].rsplit("/", 1)[-1].rsplit(".", 1)[0]
    path = f"{folder}/{stem}-{row['request_id']}.qc.png"
    try:
        fs.makedirs(folder, exist_ok=True)
        fs.pipe_file(path, row["qc"])
    except Exception as e:   # noqa: BLE001  (an overlay is a convenience; the result is committed)
        log.warning("could not write the QC overlay %s: %s: %s", path, type(e).__name__, e)


def _commit(row: dict, dst: str, dst_fs):
    assert row["result"] is not None, f"{row['source']}: pending without a result after segmentation"
    result = pickle.loads(row["result"])
    row["result"] = None
    t0 = time.perf_counter()
    try:
        receipt = _with_storage_retries(contracts.commit, result, dst, fs=dst_fs)
    except contracts.ConflictError as e:
        _fail(row, "conflict", str(e))
    except contracts.StorageError as e:
        _fail(row, "storage", str(e))
    except contracts.ContractViolation as e:
        _fail(row, "contract_violation", str(e))
    else:
        row["status"] = COMMITTED if receipt.written else SKIPPED
    row["commit_s"] = (row["commit_s"] or 0.0) + time.perf_counter() - t0
