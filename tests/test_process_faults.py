"""Process faults: SIGKILL a segmenter replica and the ingress while requests are in flight (Serve restarts
them; clients retry), and kill a batch job's own Ray (GCS and raylet) mid-job, then run the job again.
Afterwards: every acknowledged request is committed and valid, the unacknowledged converge on retry, nothing
is corrupt, and the re-run redoes nothing the interrupted run had committed. (The batch driver and segmenter
actor kills are in tests/test_batch.py, test_killed_worker_and_driver_then_rerun_commits_every_scan_once.)"""
import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests

import contracts
from batch_jobs import COMMITTED, SKIPPED
from builders import child_processes, serving
from digitiser.synth import render_scan
from serve_app import ServeConfig

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def online(ray_local, ink_weights, tmp_path_factory):
    """(url, results root) of an app with a local store."""
    store = str(tmp_path_factory.mktemp("killed") / "results")
    config = ServeConfig(store=store, weights=ink_weights, loopback_only=True, segmenter_num_cpus=0.25,
                         ingress_num_cpus=0.1, max_batch_size=2, batch_wait_timeout_s=0.05, retry_after_s=1)
    with serving(config, "killed") as url:
        yield url, store


def _payloads(n: int) -> list[tuple[bytes, str]]:
    scan = render_scan(1, height=400, width=200, style="clean")
    return [(scan.encoded, json.dumps({**scan.calibration, "top_depth": 500.0 + i})) for i in range(n)]


def _post(url: str, image: bytes, calibration: str):
    """(status, body) of one POST; a dropped connection is status 0."""
    try:
        r = requests.post(f"{url}/v1/digitise", timeout=120, files={"image": ("s.png", image, "image/png"),
                                                                     "calibration": ("c.json", calibration)})
        return r.status_code, (r.json() if r.headers.get("content-type", "").startswith("application/json") else {})
    except requests.RequestException:
        return 0, {}


def _post_until_answered(url: str, image: bytes, calibration: str, deadline_s: float = 240.0):
    """Retry 5xx and dropped connections (a killed replica) until a non-5xx answer or the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        status, body = _post(url, image, calibration)
        if 0 < status < 500 or time.monotonic() > end:
            return status, body
        time.sleep(1.0)


def _replica_pids(url: str) -> dict:
    stats = requests.get(f"{url}/v1/stats", timeout=60).json()
    return {"ingress": stats["ingress"]["pid"], "segmenter": stats["segmenter"]["pid"]}


def test_killed_replicas_under_load_lose_nothing_acknowledged(online):
    url, store = online
    pids = _replica_pids(url)
    payloads = _payloads(10)
    first: list = [None] * len(payloads)

    def client(i):
        first[i] = _post(url, *payloads[i])     # no retry: what a client saw when the kills hit

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(payloads))]
    for t in threads:
        t.start()
    time.sleep(1.0)
    os.kill(pids["segmenter"], signal.SIGKILL)
    time.sleep(1.0)
    os.kill(pids["ingress"], signal.SIGKILL)
    for t in threads:
        t.join(180)
    acked = {body["request_id"]: body for status, body in first if status == 200}
    for rid, body in acked.items():                  # acknowledged = committed, valid, what was answered
        assert contracts.load(store, rid).request_id == rid
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        retried = list(pool.map(lambda p: _post_until_answered(url, *p), payloads))
    assert [s for s, _ in retried] == [200] * len(payloads)
    assert {b["request_id"] for _, b in retried} >= set(acked)
    new = _replica_pids(url)
    assert new["segmenter"] != pids["segmenter"] and new["ingress"] != pids["ingress"]
    report = contracts.audit(store)
    assert report.ok and report.summary["committed"] == len(payloads) and report.summary["corrupt"] == 0
    assert sum(status == 200 for status, _ in first) < len(payloads), "the kills hit no request in flight"


# ----------------------------------------------------------------------------- the batch job's own Ray

def _cli_batch(src, dst, weights, env=None) -> subprocess.Popen:
    """`digitise batch` with a local Ray of its own (no --address), in its own session so it can be killed."""
    return subprocess.Popen([sys.executable, "-m", "cli", "batch", str(src), str(dst), "--batch-size", "2",
                             "--weights", weights], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, env={**os.environ, **(env or {})})


def test_ray_killed_mid_job_then_rerun_redoes_only_the_rest(ink_weights, tmp_path):
    n = 10
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for i, (image, calibration) in enumerate(_payloads(n)):
        (src / f"s{i:02d}.png").write_bytes(image)
        (src / f"s{i:02d}.json").write_text(calibration)
    manifests = lambda: sorted(dst.glob("*/manifest.json"))   # noqa: E731
    # With its GCS killed, a driver waits Ray's 60 s for it to come back before it dies; 5 s is as real a crash.
    proc = _cli_batch(src, dst, ink_weights, env={"RAY_gcs_rpc_server_reconnect_timeout_s": "5"})
    try:
        deadline = time.monotonic() + 240
        while not manifests() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        ray_core = [pid for pid, cmd in child_processes(proc.pid).items() if "gcs_server" in cmd or "raylet" in cmd]
        assert ray_core, "the job's own Ray was not found"
        for pid in ray_core:
            os.kill(pid, signal.SIGKILL)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
    finally:
        if proc.poll() is None:
            proc.kill()
        out = proc.communicate()[0]
        if _group_alive(proc.pid):   # what the dead job's Ray left behind (its session is its own)
            os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(1.0)
    done = manifests()
    assert 0 < len(done) < n, f"Ray was not killed mid-job ({len(done)} of {n} committed)\n{out[-3000:]}"
    resumed = _cli_batch(src, dst, ink_weights)
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out[-3000:]
    ledger = next(line.split("ledger: ", 1)[1] for line in out.splitlines() if line.startswith("  ledger: "))
    rows = pq.read_table(ledger.removeprefix("file://")).to_pylist()
    statuses = [r["status"] for r in rows]
    redone = {r["request_id"] for r in rows if r["status"] == COMMITTED} & {p.parent.name for p in done}
    assert redone == set(), f"the re-run committed again what the interrupted run had committed: {redone}"
    assert statuses.count(COMMITTED) + statuses.count(SKIPPED) == n and statuses.count(SKIPPED) >= len(done)
    report = contracts.audit(str(dst))
    assert report.ok and report.summary == {"committed": n, "uncommitted": 0, "corrupt": 0}


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
