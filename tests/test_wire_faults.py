"""Storage faults on the wire: both routes write to the moto S3 server through tests/s3_proxy.py, which drops,
delays, truncates, fakes and fails a seeded 20% of the storage calls. Then, with the proxy passing everything:
every acknowledged request (a 200, a `committed` ledger row) is committed and valid, nothing committed is
corrupt, every unacknowledged request converges on retry, and nothing exists outside `<root>/<request_id>/`
and `<root>/_ledger/`. (bench/reliability.py runs the same at 1%, 5% and 20% with more requests.)"""
import concurrent.futures
import json
import math
import re
import time
import uuid

import fsspec
import pytest
import requests

import contracts
from batch_jobs import COMMITTED, FAILED, SKIPPED, JobConfig, convert
from builders import make_s3fs, serving
from digitiser.synth import render_scan
from s3_proxy import KINDS, FaultProxy
from serve_app import ServeConfig

RATE = 0.2
CLIENT_TIMEOUTS = {"read_timeout": 2, "connect_timeout": 2}   # the proxy's delay fault waits 3 s
RID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(scope="module")
def proxy(s3_server):
    with FaultProxy(s3_server, rate=0.0, seed=20, delay_s=3.0) as p:
        yield p


@pytest.fixture(scope="module")
def bucket(s3_server) -> str:
    name = f"wire-{uuid.uuid4().hex[:12]}"
    make_s3fs(s3_server).mkdir(name)
    return name


@pytest.fixture(scope="module")
def online(ray_local, proxy, bucket, ink_weights):
    config = ServeConfig(store=f"s3://{bucket}/online", weights=ink_weights, loopback_only=True,
                         storage_options={"endpoint_url": proxy.url, "config_kwargs": CLIENT_TIMEOUTS},
                         segmenter_num_cpus=0.25, ingress_num_cpus=0.1, max_batch_size=4, batch_wait_timeout_s=0.02,
                         retry_after_s=1)
    with serving(config, "wire") as url:
        yield url


def requests_for(n: int) -> list[tuple[bytes, str]]:
    """n distinct requests: one clean scan, each with its own top depth (so its own request id)."""
    scan = render_scan(0, height=400, width=200, style="clean")
    return [(scan.encoded, json.dumps({**scan.calibration, "top_depth": 1000.0 + i})) for i in range(n)]


def post_retrying(url: str, image: bytes, calibration: str, attempts: int = 6) -> requests.Response:
    """A client that retries on 503, waiting Retry-After (capped at 2 s)."""
    for _ in range(attempts):
        r = requests.post(f"{url}/v1/digitise", timeout=120, files={"image": ("s.png", image, "image/png"),
                                                                     "calibration": ("c.json", calibration)})
        if r.status_code != 503:
            return r
        time.sleep(min(2.0, float(r.headers.get("retry-after", 1))))
    return r


def stray_keys(fs, root: str) -> list[str]:
    """Keys under `root` that are neither `<request_id>/<object>` nor `_ledger/<file>`."""
    out = []
    for key in fs.find(root):
        parts = key[len(root) + 1:].split("/")
        if not (len(parts) == 2 and (RID.fullmatch(parts[0]) or parts[0] == "_ledger")):
            out.append(key)
    return out


def test_online_route_through_faults(online, proxy, bucket, s3_server):
    payloads = requests_for(16)
    proxy.rate, before = RATE, sum(proxy.counts.values())
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda p: post_retrying(online, *p), payloads))
    proxy.rate = 0.0
    assert sum(proxy.counts.values()) > before, "no fault was injected"
    acked = {r.json()["request_id"]: r.json() for r in answers if r.status_code == 200}
    assert {r.status_code for r in answers} <= {200, 503}, [r.text[:200] for r in answers if r.status_code not in
                                                            (200, 503)]
    direct = make_s3fs(s3_server)
    root = f"s3://{bucket}/online"
    for rid, body in acked.items():   # acknowledged = committed and valid, exactly what was answered
        stored = contracts.load(root, rid, fs=direct).curves
        assert {n: [None if math.isnan(x) else x for x in v.tolist()] for n, v in stored.items()} == body["curves"]
    retried = [post_retrying(online, *p) for p, r in zip(payloads, answers) if r.status_code != 200]
    assert [r.status_code for r in retried] == [200] * len(retried)   # the unacknowledged converge
    report = contracts.audit(root, fs=direct)
    assert report.ok and report.summary["committed"] == len(payloads) and report.summary["corrupt"] == 0
    assert stray_keys(direct, f"{bucket}/online") == []


def test_batch_route_through_faults(ray_local, proxy, bucket, ink_weights, s3_server, tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    for i, (image, calibration) in enumerate(requests_for(12)):
        (src / f"s{i:02d}.png").write_bytes(image)
        (src / f"s{i:02d}.json").write_text(calibration)
    # through the proxy: fsspec's config puts the endpoint into the S3 filesystem the job pickles to its tasks
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": proxy.url, "config_kwargs": CLIENT_TIMEOUTS})
    dst = f"s3://{bucket}/batch"
    proxy.rate, before = RATE, sum(proxy.counts.values())
    first = convert(JobConfig(str(src), dst, weights=ink_weights, batch_size=4))
    proxy.rate = 0.0
    assert sum(proxy.counts.values()) > before, "no fault was injected"
    rows = _ledger_rows(first.ledger, s3_server)
    assert len(rows) == 12 and {r["error_kind"] for r in rows if r["status"] == FAILED} <= {"storage"}
    direct = make_s3fs(s3_server)
    committed = {r["request_id"] for r in rows if r["status"] == COMMITTED}
    for rid in committed:               # acknowledged = committed and valid
        contracts.load(dst, rid, fs=direct)
    second = convert(JobConfig(str(src), dst, weights=ink_weights, batch_size=4))   # converges
    again = _ledger_rows(second.ledger, s3_server)
    assert second.ok and {r["request_id"] for r in again if r["status"] == SKIPPED} >= committed
    report = contracts.audit(dst, fs=direct)
    assert report.ok and report.summary == {"committed": 12, "uncommitted": 0, "corrupt": 0}
    assert stray_keys(direct, f"{bucket}/batch") == []


def _ledger_rows(uri: str, endpoint: str) -> list[dict]:
    import pyarrow.parquet as pq
    fs = make_s3fs(endpoint)
    with fs.open(uri.removeprefix("s3://"), "rb") as f:
        return pq.read_table(f).to_pylist()


def test_every_fault_kind_was_injected(proxy):
    """Runs last in this module: the seeded schedule over both routes used every kind at least once."""
    assert set(proxy.counts) == set(KINDS), proxy.counts
