"""The reliability campaign in one command: hostile input, storage faults on the wire, a soak.

    .venv/bin/python bench/reliability.py --quick      # 2-3 minutes on an idle 2-core machine
    .venv/bin/python bench/reliability.py              # full: more requests, a few hundred scans, 10-minute soak

1. Starts a moto S3 server and tests/s3_proxy.py's FaultProxy in front of it (seeded), a loopback-only local
   Ray, and the Serve app writing to s3://<bucket>/online through the proxy (the "ink detector" stand-in
   weights from tests/builders.py: the campaign measures the plumbing, not the model).
2. Hostile input: tests/hostile.py's corpus against the endpoint (and its raw multipart cases) and through a
   batch job; counts the cases and any 5xx.
3. Storage faults at 1%, 5% and 20% of storage calls: concurrent clients (retrying on 503) post distinct
   requests; a batch job converts scans to s3://<bucket>/batch through the proxy. Then with the proxy passing
   everything: acknowledged requests (200s, `committed` ledger rows) are checked committed and valid against
   the store directly, the unacknowledged are retried until they converge, and both roots are audited and
   listed for keys outside `<root>/<request_id>/` and `_ledger/`.
4. Soak at 1% faults and steady concurrency: p99 latency of the first and last window, replica RSS growth.

Writes bench/results/reliability.json (faults_injected by kind, acknowledged, committed, corrupt, lost,
outside_root, hostile_cases, hostile_5xx, rss_growth_mb, p99_first_min_s, p99_last_min_s, ...).
"""
import argparse
import json
import logging
import os
import re
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))   # the campaign's tools are test utilities (s3_proxy, hostile, builders)
log = logging.getLogger("reliability")
RID = re.compile(r"[0-9a-f]{32}")
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIARELIABILITYBENCH", "AWS_SECRET_ACCESS_KEY": "reliability-bench-secret",
               "AWS_DEFAULT_REGION": "us-east-1"}
TIMEOUTS = {"read_timeout": 2, "connect_timeout": 2}   # the proxy's delay fault waits 3 s


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a 2-3 minute version (CI-sized counts, 1-minute soak)")
    p.add_argument("--rates", type=float, nargs="+", default=[0.01, 0.05, 0.2])
    p.add_argument("--seed", type=int, default=20)
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "reliability.json"))
    args = p.parse_args(argv)
    args.requests, args.scans, args.soak_s, args.clients = (8, 8, 60, 4) if args.quick else (60, 300, 600, 4)
    return args


# ----------------------------------------------------------------------------- set-up

def start_services(args, tmp: Path):
    from moto.server import ThreadedMotoServer

    from s3_proxy import FaultProxy
    os.environ.update(CREDENTIALS)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    proxy = FaultProxy(endpoint, rate=0.0, seed=args.seed, delay_s=3.0).start()
    direct = s3(endpoint)
    bucket = f"rel-{uuid.uuid4().hex[:10]}"
    direct.mkdir(bucket)
    return moto, proxy, direct, bucket


def s3(endpoint: str):
    import s3fs
    return s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True, use_listings_cache=False)


def start_app(proxy, bucket: str, weights: str):
    from ray import serve

    import cluster
    from builders import free_port
    from serve_app import ServeConfig, build_app
    cluster.connect(num_cpus=4)
    config = ServeConfig(store=f"s3://{bucket}/online", weights=weights, loopback_only=True,
                         storage_options={"endpoint_url": proxy.url, "config_kwargs": TIMEOUTS},
                         segmenter_num_cpus=0.5, ingress_num_cpus=0.25, max_batch_size=4, batch_wait_timeout_s=0.02,
                         max_image_bytes=1 << 20, max_image_pixels=2_000_000, retry_after_s=1)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(config), name="reliability", route_prefix="/")
    return f"http://127.0.0.1:{port}"


# ----------------------------------------------------------------------------- clients

class Clients:
    """Distinct requests (one clean scan, a fresh top depth each), posted by retrying clients."""

    def __init__(self, url: str):
        from digitiser.synth import render_scan
        self.url, self.scan = url, render_scan(0, height=400, width=200, style="clean")
        self.serial, self.lock = 0, threading.Lock()
        self.records: list[dict] = []       # every request's outcome: t0, latency_s, status, attempts, rid

    def payload(self) -> str:
        with self.lock:
            self.serial += 1
            return json.dumps({**self.scan.calibration, "top_depth": -1.0e6 + self.serial})

    def post(self, calibration: str, attempts: int = 6) -> dict:
        import requests
        t0 = time.time()
        for attempt in range(1, attempts + 1):
            try:
                r = requests.post(f"{self.url}/v1/digitise", timeout=120, files={
                    "image": ("s.png", self.scan.encoded, "image/png"), "calibration": ("c.json", calibration)})
                status, body = r.status_code, r.json()
            except Exception:   # noqa: BLE001  (a dropped connection: retried like a 503)
                status, body = 0, {}
            if status not in (0, 503):
                break
            time.sleep(1.0)
        rec = {"t0": t0, "latency_s": time.time() - t0, "status": status, "attempts": attempt,
               "calibration": calibration, "rid": body.get("request_id")}
        with self.lock:
            self.records.append(rec)
        return rec

    def run(self, n: int | None = None, seconds: float | None = None, concurrency: int = 4) -> list[dict]:
        """n requests, or as many as fit in `seconds`, from `concurrency` closed-loop clients."""
        start, issued, out = time.time(), [0], []

        def client():
            while True:
                with self.lock:
                    if (n is not None and issued[0] >= n) or (seconds is not None and time.time() - start > seconds):
                        return
                    issued[0] += 1
                out.append(self.post(self.payload()))

        threads = [threading.Thread(target=client) for _ in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out


# ----------------------------------------------------------------------------- phases

def hostile(url: str, weights: str, tmp: Path) -> dict:
    import requests

    from batch_jobs import JobConfig, convert
    from digitiser.synth import render_scan
    from hostile import corpus, multipart_cases, post_case, send_raw
    scan = render_scan(0, height=400, width=200, style="clean")
    cases = corpus(scan)
    statuses = {c.name: post_case(url, c).status_code for c in cases}
    for raw in multipart_cases(scan.encoded):
        statuses[raw.name] = send_raw(url, "POST", "/v1/digitise", raw.headers, raw.body, raw.declared)
    src = tmp / "hostile"
    for c in cases:
        (src / c.name).mkdir(parents=True)
        name = Path(c.filename).name
        (src / c.name / name).write_bytes(c.image)
        if c.calibration is not None:
            text = c.calibration if isinstance(c.calibration, bytes) else c.calibration.encode()
            (src / c.name / (name.rsplit(".", 1)[0] + ".json")).write_bytes(text)
    summary = convert(JobConfig(str(src), str(tmp / "hostile-results"), weights=weights, batch_size=4))
    unexplained = [f for f in summary.failures if not (f.kind and f.message)]
    return {"hostile_cases": len(statuses) + summary.listed,
            "hostile_5xx": sum(s >= 500 for s in statuses.values()),
            "hostile_statuses": statuses, "hostile_batch_failed": summary.failed,
            "hostile_batch_unexplained": len(unexplained),
            "healthz_after_hostile": requests.get(f"{url}/healthz", timeout=60).status_code}


def wire(args, clients: Clients, proxy, direct, bucket: str, weights: str, tmp: Path, rate: float) -> dict:
    """One fault rate: online requests and a batch job through the proxy, then convergence without faults."""
    import fsspec

    from batch_jobs import COMMITTED, SKIPPED, JobConfig, convert
    proxy.rate = rate
    online = clients.run(n=args.requests, concurrency=args.clients)
    src = tmp / f"scans-{rate}"
    src.mkdir()
    for i in range(args.scans):
        (src / f"s{i:04d}.png").write_bytes(clients.scan.encoded)
        (src / f"s{i:04d}.json").write_text(json.dumps({**clients.scan.calibration, "top_depth": rate * 1e6 + i}))
    fsspec.config.conf["s3"] = {"endpoint_url": proxy.url, "config_kwargs": TIMEOUTS}
    try:
        job = convert(JobConfig(str(src), f"s3://{bucket}/batch", weights=weights, batch_size=8))
        proxy.rate = 0.0
        rows = ledger_rows(direct, job.ledger)
        unacked = [r for r in online if r["status"] != 200]
        converged = [clients.post(r["calibration"], attempts=10) for r in unacked]
        rerun = convert(JobConfig(str(src), f"s3://{bucket}/batch", weights=weights, batch_size=8))
    finally:
        fsspec.config.conf.pop("s3", None)
        proxy.rate = 0.0
    return {"rate": rate, "online_requests": len(online),
            "online_acknowledged": [r["rid"] for r in online if r["status"] == 200],
            "online_statuses": dict(Counter(str(r["status"]) for r in online)),
            "online_unacknowledged": len(unacked), "online_converged": sum(r["status"] == 200 for r in converged),
            "batch_scans": args.scans,
            "batch_acknowledged": [r["request_id"] for r in rows if r["status"] in (COMMITTED, SKIPPED)],
            "batch_failed_kinds": dict(Counter(r["error_kind"] for r in rows if r["status"] == "failed")),
            "batch_rerun_ok": rerun.ok, "batch_rerun_committed": rerun.committed}


def ledger_rows(direct, uri: str) -> list[dict]:
    import pyarrow.parquet as pq
    with direct.open(uri.removeprefix("s3://"), "rb") as f:
        return pq.read_table(f).to_pylist()


def soak(args, clients: Clients, proxy, url: str) -> dict:
    import requests
    stats = lambda: requests.get(f"{url}/v1/stats", timeout=60).json()   # noqa: E731
    clients.run(n=8, concurrency=args.clients)   # warm-up, outside the windows
    before = stats()
    proxy.rate = 0.01
    start = time.time()
    records = clients.run(seconds=args.soak_s, concurrency=args.clients)
    proxy.rate = 0.0
    after = stats()
    window = min(60.0, args.soak_s / 3)
    lat = lambda lo, hi: [r["latency_s"] for r in records if lo <= r["t0"] - start < hi and r["status"] == 200]  # noqa: E731
    first, last = lat(0, window), lat(args.soak_s - window, args.soak_s)
    return {"soak_s": args.soak_s, "soak_window_s": window, "soak_requests": len(records),
            "soak_statuses": dict(Counter(str(r["status"]) for r in records)),
            "soak_acknowledged": [r["rid"] for r in records if r["status"] == 200],
            "p99_first_min_s": float(np.percentile(first, 99)) if first else None,
            "p99_last_min_s": float(np.percentile(last, 99)) if last else None,
            "rss_mb": {k: [before[k]["rss_mb"], after[k]["rss_mb"]] for k in ("ingress", "segmenter")},
            "rss_growth_mb": max(after[k]["rss_mb"] - before[k]["rss_mb"] for k in ("ingress", "segmenter")),
            "replica_restarts": sum(after[k]["pid"] != before[k]["pid"] for k in ("ingress", "segmenter"))}


def verify(direct, bucket: str, acknowledged: dict[str, set]) -> dict:
    """Against the store directly: acknowledged requests committed and valid, audits, keys outside roots."""
    import contracts
    out = {"acknowledged": 0, "committed": 0, "lost": 0, "corrupt": 0, "outside_root": 0}
    for root_name, rids in acknowledged.items():
        root = f"s3://{bucket}/{root_name}"
        for rid in rids:
            out["acknowledged"] += 1
            try:
                contracts.load(root, rid, fs=direct)
                out["committed"] += 1
            except contracts.ContractError:
                out["lost"] += 1
        report = contracts.audit(root, fs=direct)
        out["corrupt"] += report.summary["corrupt"]
        out[f"audit_{root_name}"] = report.summary
    for key in direct.find(bucket):
        parts = key.split("/")[1:]
        if not (len(parts) == 3 and parts[0] in acknowledged and (RID.fullmatch(parts[1]) or parts[1] == "_ledger")):
            out["outside_root"] += 1
    return out


# ----------------------------------------------------------------------------- main

def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    from builders import ink_detector
    t_start = time.time()
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp_name:
        tmp = Path(tmp_name)
        weights = str(tmp / "ink.bin")
        ink_detector(weights)
        moto, proxy, direct, bucket = start_services(args, tmp)
        try:
            url = start_app(proxy, bucket, weights)
            clients = Clients(url)
            log.info("hostile input")
            result = {"mode": "quick" if args.quick else "full", "seed": args.seed, **hostile(url, weights, tmp)}
            phases = []
            for rate in args.rates:
                log.info("storage faults at %.0f%%", rate * 100)
                phases.append(wire(args, clients, proxy, direct, bucket, weights, tmp, rate))
            log.info("soak: %d s at 1%% faults", args.soak_s)
            result.update(soak(args, clients, proxy, url))
            acknowledged = {"online": {r for p in phases for r in p["online_acknowledged"]} |
                                      set(result.pop("soak_acknowledged")),
                            "batch": {r for p in phases for r in p["batch_acknowledged"]}}
            result.update(verify(direct, bucket, acknowledged))
            result.update(faults_injected=dict(proxy.counts), storage_calls=proxy.requests,
                          unacknowledged=sum(p["online_unacknowledged"] for p in phases),
                          converged=sum(p["online_converged"] for p in phases),
                          phases=[{k: v for k, v in p.items() if not k.endswith("_acknowledged")} |
                                  {"online_acknowledged": len(p["online_acknowledged"]),
                                   "batch_acknowledged": len(p["batch_acknowledged"])} for p in phases],
                          elapsed_s=round(time.time() - t_start, 1), weights="ink detector (tests/builders.py)",
                          cpus=os.cpu_count(), load_avg_at_end=os.getloadavg())
        finally:
            from ray import serve
            serve.shutdown()
            import ray
            ray.shutdown()
            proxy.stop()
            moto.stop()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    keys = ("faults_injected", "acknowledged", "committed", "corrupt", "lost", "outside_root", "hostile_cases",
            "hostile_5xx", "rss_growth_mb", "p99_first_min_s", "p99_last_min_s", "elapsed_s")
    print(json.dumps({k: result[k] for k in keys}, indent=1))
    bad = result["corrupt"] or result["lost"] or result["outside_root"] or result["hostile_5xx"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
