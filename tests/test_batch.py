"""The offline route (batch_jobs): listing, the per-batch steps without Ray, and whole jobs on the session Ray
against a local folder and the moto S3 endpoint: mixed archives, re-runs that write nothing, kill and resume."""
import functools
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tifffile

import contracts
from batch_jobs import COMMITTED, FAILED, LEDGER_FOLDER, SKIPPED, JobConfig, JobError, convert
from batch_jobs.job import LISTING_CPUS
from batch_jobs.ledger import TMP_PREFIX, LedgerWriter
from batch_jobs.listing import ScanListingDatasource, iter_scans, open_fs
from batch_jobs.stages import PENDING, ROW_SCHEMA, commit_batch, prepare_batch
from builders import CALIBRATION, TRACING, child_processes, make_result
from digitiser import TracingParams
from digitiser.synth import render_scan

REPO = Path(__file__).resolve().parents[1]
# Seeds of clean synthetic scans that the shipped weights digitise (checked with models 43cedd33f754,
# d93766913d8b, f1ba2e1e52ba, 3b0373db1f6d and 55430149d481): 400x200 px (one segmenter tile each), and one 20480x128 px track.
GOOD_SEEDS = (0, 1, 2, 4, 5, 8, 9, 10, 14, 15, 22, 24, 26, 30)
TALL_SEED = 0


@functools.lru_cache(maxsize=None)
def _scan(seed: int, height: int = 400, width: int = 200):
    return render_scan(seed, height=height, width=width, style="clean")


def put_scan(fs, path: str, seed: int, *, sidecar=True, height: int = 400, width: int = 200) -> bytes:
    """Write a synthetic scan's bytes (and its calibration sidecar) at `path`; returns the bytes."""
    scan = _scan(seed, height, width)
    fs.pipe_file(path, scan.encoded)
    if sidecar:
        fs.pipe_file(path.rsplit(".", 1)[0] + ".json", json.dumps(scan.calibration).encode())
    return scan.encoded


def lzw_tiff(gray: np.ndarray) -> bytes:
    return cv2.imencode(".tif", gray, [cv2.IMWRITE_TIFF_COMPRESSION, cv2.IMWRITE_TIFF_COMPRESSION_LZW])[1].tobytes()


def blank_png() -> bytes:
    return cv2.imencode(".png", np.full((400, 200), 255, np.uint8))[1].tobytes()


def put_bad_scans(fs, root: str):
    """Corrupt (truncated PNG), not an image, blank (no curves), and a good image with a broken sidecar."""
    fs.pipe_file(f"{root}/bad/truncated.png", _scan(2).encoded[: len(_scan(2).encoded) // 2])
    fs.pipe_file(f"{root}/bad/notes.png", b"field notes, not an image\n")
    fs.pipe_file(f"{root}/bad/blank.png", blank_png())
    fs.pipe_file(f"{root}/bad/sidecar.png", _scan(3).encoded)
    fs.pipe_file(f"{root}/bad/sidecar.json", b'{"top_depth": 10, ')


EXPECTED_FAILURES = {"bad/truncated.png": "corrupt", "bad/notes.png": "not_image",
                     "bad/blank.png": "curve_not_found", "bad/sidecar.png": "bad_calibration"}


def local(path) -> tuple[fsspec.AbstractFileSystem, str]:
    """A local filesystem that creates parent folders on write, and `path` as a string."""
    return fsspec.filesystem("file", auto_mkdir=True), str(path)


def read_ledger(uri: str) -> pa.Table:
    with fsspec.open(uri, "rb") as f:
        return pq.read_table(f)


def by_name(ledger: pa.Table, root_uri: str) -> dict[str, dict]:
    return {r["source"][len(root_uri) + 1:]: r for r in ledger.to_pylist()}


def snapshot(fs, root: str) -> dict[str, tuple]:
    """Every result object (ledgers excluded) with what would change if it were rewritten."""
    found = fs.find(root, detail=True) if fs.exists(root) else {}
    return {p: (info.get("mtime") or info.get("LastModified"), info.get("size"), info.get("ETag"))
            for p, info in found.items() if f"/{LEDGER_FOLDER}/" not in p}


# ----------------------------------------------------------------------------- listing (no Ray)

def test_listing_finds_nested_and_uppercase_scans_with_their_sidecars(tmp_path):
    fs, root = local(tmp_path)
    for rel in ("a.png", "B.PNG", "c.JpEg", "d.jpg", "sub/e.TIF", "sub/deeper/f.tiff", "sub/g.Tiff"):
        fs.pipe_file(f"{root}/{rel}", b"x")
    for rel in ("a.json", "sub/deeper/f.json", "notes.txt", "h.png.bak", ".hidden.png", ".tmp/i.png", "sub/j.npz"):
        fs.pipe_file(f"{root}/{rel}", b"x")
    rows = list(iter_scans(fs, root))
    names = [r["source"][len(fs.unstrip_protocol(root)) + 1:] for r in rows]
    assert names == ["B.PNG", "a.png", "c.JpEg", "d.jpg", "sub/e.TIF", "sub/g.Tiff", "sub/deeper/f.tiff"]
    sidecars = {n: r["sidecar"] for n, r in zip(names, rows)}
    assert sidecars["a.png"] == fs.unstrip_protocol(f"{root}/a.json")
    assert sidecars["sub/deeper/f.tiff"] == fs.unstrip_protocol(f"{root}/sub/deeper/f.json")
    assert sidecars["B.PNG"] is None and all(r["size"] == 1 for r in rows)


def test_listing_limit_takes_the_first_scans_in_walk_order(tmp_path):
    fs, root = local(tmp_path)
    for rel in ("z/1.png", "a.png", "b.png", "m/2.png"):
        fs.pipe_file(f"{root}/{rel}", b"x")
    assert [r["source"].rsplit("/", 2)[-2:] for r in iter_scans(fs, root, limit=3)] == \
        [[tmp_path.name, "a.png"], [tmp_path.name, "b.png"], ["m", "2.png"]]
    assert list(iter_scans(fs, root, limit=0)) == []


def test_listing_skips_the_results_root_inside_the_source(tmp_path):
    fs, root = local(tmp_path)
    fs.pipe_file(f"{root}/scan.png", b"x")
    fs.pipe_file(f"{root}/results/0123/mask.png", b"x")
    assert len(list(iter_scans(fs, root, exclude=(f"{root}/results",)))) == 1


def test_listing_streams_an_s3_prefix(s3_fs, s3_bucket):
    for rel in ("x/a.PNG", "x/a.json", "x/y/b.tif", "other/c.png"):
        s3_fs.pipe_file(f"{s3_bucket}/{rel}", b"xy")
    rows = list(iter_scans(s3_fs, f"{s3_bucket}/x"))
    assert [r["source"] for r in rows] == [f"s3://{s3_bucket}/x/a.PNG", f"s3://{s3_bucket}/x/y/b.tif"]
    assert rows[0]["sidecar"] == f"s3://{s3_bucket}/x/a.json" and rows[0]["size"] == 2


def test_job_defaults_to_full_batches_without_loading_torch_in_io_workers():
    from digitiser import MAX_BATCH
    assert JobConfig("a", "b").batch_size == MAX_BATCH
    code = "import sys, batch_jobs.stages; print('torch' in sys.modules)"   # what a prepare/commit worker imports
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


def test_listing_source_yields_pages_of_the_batch_size(tmp_path):
    fs, root = local(tmp_path)
    for i in range(7):
        fs.pipe_file(f"{root}/s{i}.png", b"x")
    (task,) = ScanListingDatasource(fs, root, page=3).get_read_tasks(1)
    pages = list(task())
    assert [p.num_rows for p in pages] == [3, 3, 1]
    assert [r["source"].rsplit("/", 1)[-1] for p in pages for r in p.to_pylist()] == [f"s{i}.png" for i in range(7)]
    with pytest.raises(ValueError, match="page"):
        ScanListingDatasource(fs, root, page=0)


# ----------------------------------------------------------------------------- the steps (no Ray)

def _prepare(tmp_path, files: dict[str, bytes], default=None, version="0" * 64, colour=False):
    fs, root = local(tmp_path / "src")
    for rel, data in files.items():
        fs.pipe_file(f"{root}/{rel}", data)
    listing = pa.Table.from_pylist(list(iter_scans(fs, root)))
    out = prepare_batch(listing, src_fs=fs, dst=str(tmp_path / "dst"), dst_fs=None, model_version=version,
                        tracing=TRACING, default_calibration=default, colour=colour)
    return {r["source"].rsplit("/", 1)[-1]: r for r in out.to_pylist()}


def test_prepare_passes_colour_on_only_to_a_segmenter_that_reads_it(tmp_path):
    bgr = cv2.merge([np.full((64, 32), v, np.uint8) for v in (200, 120, 40)])
    ok, png = cv2.imencode(".png", bgr)
    for colour in (False, True):
        scan = pickle.loads(_prepare(tmp_path / str(colour), {"c.png": png.tobytes()}, colour=colour)["c.png"]["scan"])
        assert (scan.colour is not None) == colour and scan.gray.shape == (64, 32)


def test_prepare_keys_requests_by_bytes_calibration_and_model(tmp_path):
    data = _scan(0).encoded
    rows = _prepare(tmp_path, {"s.png": data, "s.json": json.dumps(CALIBRATION).encode(), "t.png": data})
    assert rows["s.png"]["status"] == PENDING and pickle.loads(rows["s.png"]["scan"]).n_bytes == len(data)
    assert rows["s.png"]["request_id"] == contracts.request_id(data, CALIBRATION, "0" * 64, TRACING)
    assert rows["t.png"]["request_id"] == contracts.request_id(data, None, "0" * 64, TRACING)   # contract defaults
    assert json.loads(rows["t.png"]["calibration"]) == contracts.Calibration.from_dict(None).to_dict()


def test_prepare_applies_the_default_calibration_only_without_a_sidecar(tmp_path):
    data = _scan(0).encoded
    default = contracts.Calibration.from_dict(CALIBRATION).to_dict()
    rows = _prepare(tmp_path, {"s.png": data, "s.json": b"{}", "t.png": data}, default=default)
    assert json.loads(rows["t.png"]["calibration"]) == default
    assert json.loads(rows["s.png"]["calibration"]) == contracts.Calibration.from_dict({}).to_dict()


def test_prepare_fails_a_sheet_interval_outside_the_image(tmp_path):
    data = _scan(0).encoded   # 400 rows
    sidecar = {"depth_ties": [{"row": 0, "depth": 0.0}, {"row": 100, "depth": 10.0}],
               "top_depth": 5.0, "bottom_depth": 45.0}
    row = _prepare(tmp_path, {"s.png": data, "s.json": json.dumps(sidecar).encode()})["s.png"]
    assert (row["status"], row["error_kind"]) == (FAILED, "bad_calibration")
    assert "outside the scan's rows 0..399" in row["error_message"] and row["scan"] is None


def test_prepare_accepts_multipage_and_g4_tiffs(tmp_path):
    pages = np.stack([_scan(0).image, np.zeros_like(_scan(0).image)])
    multipage = tmp_path / "multi.tif"
    tifffile.imwrite(multipage, pages)
    g4 = render_scan(3, height=400, width=200, style="bilevel").encoded
    rows = _prepare(tmp_path, {"multi.TIFF": multipage.read_bytes(), "g4.tif": g4})
    assert {n: r["status"] for n, r in rows.items()} == {"multi.TIFF": PENDING, "g4.tif": PENDING}


def test_prepare_fails_bad_files_with_their_kind(tmp_path):
    rows = _prepare(tmp_path, {"cut.png": _scan(0).encoded[:500], "text.jpg": b"hello",
                               "ok.png": _scan(0).encoded, "ok.json": b'{"curves": 3}'})
    assert {n: (r["status"], r["error_kind"]) for n, r in rows.items()} == {
        "cut.png": (FAILED, "corrupt"), "text.jpg": (FAILED, "not_image"), "ok.png": (FAILED, "bad_calibration")}
    assert "ok.json" in rows["ok.png"]["error_message"] and "curves" in rows["ok.png"]["error_message"]
    assert all(r["scan"] is None for r in rows.values())


def test_commit_step_commits_once_then_reports_skipped(tmp_path):
    result = make_result()
    row = {"source": "file:///x.png", "request_id": result.request_id, "status": PENDING,
           "result": pickle.dumps(result)}
    batch = pa.Table.from_pylist([row], schema=ROW_SCHEMA)
    first = commit_batch(batch, dst=str(tmp_path), dst_fs=None).to_pylist()[0]
    again = commit_batch(batch, dst=str(tmp_path), dst_fs=None).to_pylist()[0]
    assert (first["status"], again["status"]) == (COMMITTED, SKIPPED)
    assert first["result"] is None and contracts.load(str(tmp_path), result.request_id).request_id == result.request_id


def test_job_refuses_qc_overlays_inside_the_results_root(tmp_path):
    (tmp_path / "src").mkdir()
    with pytest.raises(JobError, match="inside the results root"):
        convert(JobConfig(str(tmp_path / "src"), str(tmp_path / "dst"), qc_dir=str(tmp_path / "dst" / "qc")))


def test_job_refuses_a_missing_source_or_bad_default_calibration(tmp_path):
    (tmp_path / "cal.json").write_text('{"top_depth": 5, "bottom_depth": 5}')
    with pytest.raises(JobError, match="does not exist"):
        convert(JobConfig(str(tmp_path / "nope"), str(tmp_path / "dst")))
    with pytest.raises(JobError, match="cal.json"):
        convert(JobConfig(str(tmp_path), str(tmp_path / "dst"), default_calibration=str(tmp_path / "cal.json")))


# ----------------------------------------------------------------------------- whole jobs on Ray

def job(src: str, dst: str, weights, **kw) -> JobConfig:
    return JobConfig(src, dst, weights=weights, progress_every_s=2.0, **kw)


@pytest.fixture(scope="module")
def local_mixed(ray_local, weights, tmp_path_factory):
    """A local archive with good scans (sidecars, nested, upper case, one without a sidecar that takes the
    default calibration) and bad files, converted once and then again."""
    base = tmp_path_factory.mktemp("mixed")
    fs, src = local(base / "src")
    good = {"g0.png": put_scan(fs, f"{src}/g0.png", GOOD_SEEDS[0]),
            "deep/er/G1.PNG": put_scan(fs, f"{src}/deep/er/G1.PNG", GOOD_SEEDS[1]),
            "nosidecar.png": put_scan(fs, f"{src}/nosidecar.png", GOOD_SEEDS[2], sidecar=False)}
    put_bad_scans(fs, src)
    default = base / "default.json"
    default.write_text(json.dumps(CALIBRATION))
    dst = str(base / "dst")
    first = convert(job(src, dst, weights, default_calibration=str(default)))
    before = snapshot(*open_fs(dst))
    second = convert(job(src, dst, weights, default_calibration=str(default)))
    return dict(src=fs.unstrip_protocol(src), dst=dst, good=good, first=first, second=second, before=before,
                after=snapshot(*open_fs(dst)), model_version=first.model_version)


def test_local_job_commits_the_good_scans(local_mixed):
    s = local_mixed["first"]
    assert (s.listed, s.committed, s.skipped, s.failed) == (7, 3, 0, 4)
    ledger = by_name(read_ledger(s.ledger), local_mixed["src"])
    assert {n for n, r in ledger.items() if r["status"] == COMMITTED} == set(local_mixed["good"])


def test_local_job_fails_bad_files_with_clear_errors(local_mixed):
    s = local_mixed["first"]
    ledger = by_name(read_ledger(s.ledger), local_mixed["src"])
    assert {n: r["error_kind"] for n, r in ledger.items() if r["status"] == FAILED} == EXPECTED_FAILURES
    assert "truncated" in ledger["bad/truncated.png"]["error_message"]
    assert "sidecar.json" in ledger["bad/sidecar.png"]["error_message"]
    assert {f.kind for f in s.failures} == set(EXPECTED_FAILURES.values()) and not s.ok


def test_local_job_ledger_records_ids_sizes_and_timings(local_mixed):
    ledger = read_ledger(local_mixed["first"].ledger)
    assert ledger.schema.names[:7] == ["source", "request_id", "status", "error_kind", "error_message",
                                       "input_bytes", "read_s"]
    meta = json.loads(ledger.schema.metadata[b"digitise_batch"])
    assert meta["model_version"] == local_mixed["model_version"]
    rows = by_name(ledger, local_mixed["src"])
    g0 = rows["g0.png"]
    assert g0["request_id"] == contracts.request_id(local_mixed["good"]["g0.png"], _scan(GOOD_SEEDS[0]).calibration,
                                                    local_mixed["model_version"], TracingParams().to_dict())
    assert meta["tracing"] == TracingParams().to_dict()
    assert g0["input_bytes"] == len(local_mixed["good"]["g0.png"])
    assert all(g0[k] is not None and g0[k] >= 0 for k in ("read_s", "decode_s", "segment_s", "trace_s", "commit_s"))


def test_the_next_job_removes_the_temporary_ledger_of_a_driver_that_is_gone(tmp_path, monkeypatch):
    """A driver killed outright leaves its temporary ledger behind (as large as its rows so far): the next
    job's ledger sweeps the files of pids that are gone, and leaves a live driver's file alone."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = tmp_path / f"{TMP_PREFIX}{int(gone.stdout)}-x1.parquet"
    live = tmp_path / f"{TMP_PREFIX}{os.getppid()}-x2.parquet"   # pytest's parent: alive, not this process
    for f in (dead, live):
        f.write_bytes(b"PAR1")
    with LedgerWriter({"job_id": "j"}) as ledger:
        assert not dead.exists() and live.exists()
        assert Path(ledger._tmp).name.startswith(f"{TMP_PREFIX}{os.getpid()}-")
    assert sorted(tmp_path.iterdir()) == [live]   # its own file went at the end of the job


def test_local_job_results_are_committed_and_audit_clean(local_mixed):
    report = contracts.audit(local_mixed["dst"])
    assert report.ok and report.summary == {"committed": 3, "uncommitted": 0, "corrupt": 0}
    rows = by_name(read_ledger(local_mixed["first"].ledger), local_mixed["src"])
    result = contracts.load(local_mixed["dst"], rows["nosidecar.png"]["request_id"])
    assert result.calibration == contracts.Calibration.from_dict(CALIBRATION)   # --default-calibration


def test_local_rerun_skips_everything_done_and_writes_nothing(local_mixed):
    s = local_mixed["second"]
    assert (s.listed, s.committed, s.skipped, s.failed) == (7, 0, 3, 4)
    assert local_mixed["after"] == local_mixed["before"]
    ledgers = open_fs(local_mixed["dst"])[0].ls(f"{local_mixed['dst']}/{LEDGER_FOLDER}")
    assert len(ledgers) == 2 and s.ledger != local_mixed["first"].ledger


def test_an_actor_with_several_cpus_traces_in_processes_to_the_same_bytes(local_mixed, weights, tmp_path):
    """cpus_per_replica >= 2 (beside a GPU, where tracing is the bottleneck) traces in worker processes: the same
    outcomes, the same objects, byte for byte."""
    dst = str(tmp_path / "dst")
    s = convert(job(local_mixed["src"], dst, weights, cpus_per_replica=2,
                    default_calibration=str(Path(local_mixed["dst"]).parent / "default.json")))
    rows, before = by_name(read_ledger(s.ledger), local_mixed["src"]), by_name(read_ledger(local_mixed["first"].ledger),
                                                                                local_mixed["src"])
    assert {n: (r["status"], r["error_kind"]) for n, r in rows.items()} == \
        {n: (r["status"], r["error_kind"]) for n, r in before.items()}
    for name, row in rows.items():
        if row["status"] == COMMITTED:
            assert row["trace_s"] > 0
            assert contracts.read_objects(dst, row["request_id"]) == \
                contracts.read_objects(local_mixed["dst"], row["request_id"]), name


def test_folder_without_sidecars_commits_with_the_contract_defaults(ray_local, weights, tmp_path):
    """No sidecars and no --default-calibration: every scan commits under the contract defaults."""
    fs, src = local(tmp_path / "src")
    for seed in GOOD_SEEDS[5:7]:
        put_scan(fs, f"{src}/s{seed}.png", seed, sidecar=False)
    dst, qc = str(tmp_path / "dst"), tmp_path / "qc"
    summary = convert(job(src, dst, weights, qc_dir=str(qc)))
    assert (summary.committed, summary.failed) == (2, 0), summary.format()
    report = contracts.audit(dst)
    assert report.ok and report.summary["committed"] == 2
    assert all(contracts.load(dst, e.request_id).calibration == contracts.Calibration() for e in report.entries)
    overlays = sorted(p.name for p in qc.iterdir())   # --qc: one overlay per converted scan, outside DST
    assert overlays == sorted(f"s{seed}-{e}.qc.png" for seed, e in
                              zip(GOOD_SEEDS[5:7], [_rid(summary, dst, f"s{s}.png") for s in GOOD_SEEDS[5:7]]))
    assert cv2.imread(str(qc / overlays[0])).shape == (400, 200, 3)


def _rid(summary, dst: str, name: str) -> str:
    rows = read_ledger(summary.ledger).to_pylist()
    return next(r["request_id"] for r in rows if r["source"].endswith("/" + name))


def test_s3_job_converts_then_rerun_writes_nothing(ray_local, weights, s3_fs, s3_bucket, tmp_path):
    """Source and results on the moto S3 endpoint; one tall (20k rows) LZW TIFF among the scans."""
    src, dst = f"{s3_bucket}/archive", f"s3://{s3_bucket}/results"
    put_scan(s3_fs, f"{src}/a/one.png", GOOD_SEEDS[3])
    put_scan(s3_fs, f"{src}/b/TWO.PNG", GOOD_SEEDS[4])
    tall = _scan(TALL_SEED, 20480, 128)
    s3_fs.pipe_file(f"{src}/tall.TIFF", lzw_tiff(tall.image))
    s3_fs.pipe_file(f"{src}/tall.json", json.dumps(tall.calibration).encode())
    put_bad_scans(s3_fs, src)
    first = convert(job(f"s3://{src}", dst, weights))
    rows = by_name(read_ledger(first.ledger), f"s3://{src}")
    assert {n: r["status"] for n, r in rows.items() if r["status"] != FAILED} == \
        {"a/one.png": COMMITTED, "b/TWO.PNG": COMMITTED, "tall.TIFF": COMMITTED}
    assert {n: r["error_kind"] for n, r in rows.items() if r["status"] == FAILED} == EXPECTED_FAILURES
    assert contracts.load(dst, rows["tall.TIFF"]["request_id"], fs=s3_fs).mask.shape == (20480, 128)
    before = snapshot(s3_fs, f"{s3_bucket}/results")
    second = convert(job(f"s3://{src}", dst, weights))
    assert (second.committed, second.skipped, second.failed) == (0, 3, 4)
    assert snapshot(s3_fs, f"{s3_bucket}/results") == before
    assert contracts.audit(dst, fs=s3_fs).summary == {"committed": 3, "uncommitted": 0, "corrupt": 0}


def test_limit_lists_at_most_k_scans(ray_local, weights, tmp_path):
    fs, src = local(tmp_path / "src")
    for name in ("a.png", "b.png", "c.png"):
        fs.pipe_file(f"{src}/{name}", b"not an image")
    s = convert(job(src, str(tmp_path / "dst"), weights, limit=2))
    assert s.listed == 2 and [f.source.rsplit("/", 1)[-1] for f in s.failures] == ["a.png", "b.png"]


def test_job_runs_on_only_the_cpus_its_steps_ask_for(ray_local, weights, tmp_path):
    """Other work holds every CPU but the actor's one, the listing's share and one I/O task's: the job still
    finishes (no step waits for a whole CPU it would not use)."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    fs, src = local(tmp_path / "src")
    for i, seed in enumerate(GOOD_SEEDS[:4]):
        put_scan(fs, f"{src}/s{i}.png", seed)
    need = 1.0 + LISTING_CPUS + JobConfig(src, src).io_cpus
    hold = ray.available_resources().get("CPU", 0.0) - need
    held = placement_group([{"CPU": hold}]) if hold > 0 else None   # the other work: reserved, idle
    try:
        if held is not None:
            ray.get(held.ready(), timeout=60)
        proc = _cli(src, str(tmp_path / "dst"), "--batch-size", "2", "--weights", str(weights),
                    "--address", ray_local.address_info["address"])
        try:
            out = proc.communicate(timeout=240)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"the job stalled with {need:g} CPUs free:\n{proc.communicate()[0][-3000:]}")
    finally:
        if held is not None:
            remove_placement_group(held)
    assert proc.returncode == 0, out[-3000:]
    assert contracts.audit(str(tmp_path / "dst")).summary == {"committed": 4, "uncommitted": 0, "corrupt": 0}


def _cli(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cli", "batch", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _segmenter_actor() -> int | None:
    """Pid of the DigitiseBatch actor worker on the session Ray, whose raylet this test process started."""
    raylets = [pid for pid, cmd in child_processes(os.getpid()).items() if "raylet/raylet" in cmd]
    actors = [pid for r in raylets for pid, cmd in child_processes(r).items() if "DigitiseBatch" in cmd]
    return actors[0] if actors else None


def _wait_for(condition, proc, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    return None


def test_killed_worker_and_driver_then_rerun_commits_every_scan_once(ray_local, weights, tmp_path):
    """SIGKILL the segmenter actor mid-job (Ray restarts it; the job goes on), then SIGKILL the driver
    mid-job; the same command run again finishes: every scan committed once, nothing partial left."""
    n = 10
    fs, src = local(tmp_path / "src")
    for i, seed in enumerate(GOOD_SEEDS[:n]):
        put_scan(fs, f"{src}/s{i:02d}.png", seed)
    dst = str(tmp_path / "dst")
    manifests = lambda: fs.glob(f"{dst}/*/manifest.json")   # noqa: E731
    args = [src, dst, "--batch-size", "2", "--weights", str(weights), "--address", ray_local.address_info["address"]]
    proc = _cli(*args)
    try:
        first = _wait_for(manifests, proc)
        os.kill(_wait_for(_segmenter_actor, proc) or pytest.fail("no segmenter actor found"), signal.SIGKILL)
        more = _wait_for(lambda: len(manifests()) > len(first) and manifests(), proc)
    finally:
        proc.kill()
    out = proc.communicate()[0]
    assert first and more and len(more) < n, f"not killed mid-job: {first}, {more}\n{out[-3000:]}"
    done = manifests()   # what the killed runs committed: the re-run must redo none of it
    orphans = lambda: list(Path(tempfile.gettempdir()).glob(f"{TMP_PREFIX}{proc.pid}-*.parquet"))   # noqa: E731
    assert orphans(), "the killed driver left no temporary ledger (the sweep below would test nothing)"
    resumed = _cli(*args)
    out = resumed.communicate(timeout=240)[0]
    assert resumed.returncode == 0, out[-3000:]
    assert orphans() == []   # the re-run removed it
    ledger_uri = next(line.split("ledger: ", 1)[1] for line in out.splitlines() if line.startswith("  ledger: "))
    rows = read_ledger(ledger_uri).to_pylist()
    statuses = [r["status"] for r in rows]
    assert statuses.count(COMMITTED) + statuses.count(SKIPPED) == n
    redone = {r["request_id"] for r in rows if r["status"] == COMMITTED} & {p.rsplit("/", 2)[-2] for p in done}
    assert redone == set(), f"the re-run committed again what the killed runs had committed: {redone}"
    report = contracts.audit(dst)
    assert report.ok and report.summary == {"committed": n, "uncommitted": 0, "corrupt": 0}
    assert {e.request_id for e in report.entries} == {r["request_id"] for r in rows}
    leftovers = [p for p in fs.find(dst) if f"/{LEDGER_FOLDER}/" not in p and p.rsplit("/", 1)[-1].startswith(".")]
    assert leftovers == []
