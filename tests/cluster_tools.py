"""Processes the multi-node tests run inside a FakeCluster's namespace (`python tests/cluster_tools.py ...`).

  watch ADDRESS OUT        every second, one JSON line from `cluster.snapshot()`: time, alive GPU nodes, nodes
                           being launched, running replicas per Serve deployment, running jobs
  load URL SCANS OUT       `--clients` threads post the scans (PNG + sidecar JSON) for `--seconds`, each post a
                           new request (its calibration's depths shifted by a per-request step, so the request
                           id is new and the segmenter does the work: a repeat would be answered from the
                           store); a 503 is retried with the same bytes after its Retry-After (capped); a
                           dropped connection or any other status is recorded, not retried. Writes every
                           response to OUT (JSON), `key` naming the request (scan # variant).
"""
import argparse
import hashlib
import json
import sys
import threading
import time
from pathlib import Path


def watch(address: str, out: str, interval_s: float):
    import cluster
    cluster.connect(address)
    with open(out, "a") as f:
        while True:
            try:
                snap = cluster.snapshot()
            except Exception as e:   # a node dying mid-read, a controller restarting: keep watching
                f.write(json.dumps({"t": time.time(), "error": f"{type(e).__name__}: {e}"[:300]}) + "\n")
            else:
                f.write(json.dumps({
                    "t": time.time(), "gpu_nodes": len(snap.alive("gpu_worker")),
                    "launching": sum(snap.pending_launches.values()),
                    "replicas": {f"{a.name}/{d.name}": d.running for a in snap.apps for d in a.deployments},
                    "ongoing": {f"{a.name}/{d.name}": d.ongoing_requests for a in snap.apps for d in a.deployments},
                    "jobs": len(snap.jobs)}) + "\n")
            f.flush()
            time.sleep(interval_s)


def load(url: str, scans_dir: str, out: str, clients: int, seconds: float, max_wait_s: float):
    import requests
    scans = sorted(Path(scans_dir).glob("*.png"))
    assert scans, f"no scans in {scans_dir}"
    payloads = [(p.name, p.read_bytes(), p.with_suffix(".json").read_text()) for p in scans]
    responses, lock = [], threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(index: int):
        n = 0
        while time.monotonic() < stop_at:
            name, image, calibration = payloads[(index + n * clients) % len(payloads)]
            variant = index + n * clients
            record = _post(requests, url, name, image, _shifted(calibration, variant))
            record["key"] = f"{name}#{variant}"
            with lock:
                responses.append({"client": index, **record})
            if record["status"] == 503:
                time.sleep(min(float(record.get("retry_after") or 1), max_wait_s))
                continue   # the same scan again
            n += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    Path(out).write_text(json.dumps(responses))


def _shifted(calibration: str, step: int) -> str:
    cal = json.loads(calibration)
    cal["top_depth"] = cal.get("top_depth", 0.0) + step
    cal["bottom_depth"] = cal.get("bottom_depth", 1.0) + step
    return json.dumps(cal)


def _post(requests, url: str, name: str, image: bytes, calibration: str) -> dict:
    start = time.time()
    try:
        r = requests.post(f"{url}/v1/digitise", timeout=180,
                          files={"image": (name, image, "image/png"),
                                 "calibration": ("c.json", calibration, "application/json")})
    except requests.RequestException as e:
        return {"scan": name, "status": None, "error": f"{type(e).__name__}: {e}"[:300], "t": start}
    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
    return {"scan": name, "status": r.status_code, "request_id": body.get("request_id"), "t": start,
            "s": time.time() - start, "retry_after": r.headers.get("Retry-After"), "error": body.get("error"),
            "curves_sha256": hashlib.sha256(json.dumps(body.get("curves"), sort_keys=True).encode()).hexdigest()
            if r.status_code == 200 else None}


def main(argv=None):
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("watch")
    w.add_argument("address")
    w.add_argument("out")
    w.add_argument("--interval-s", type=float, default=1.0)
    ld = sub.add_parser("load")
    ld.add_argument("url")
    ld.add_argument("scans")
    ld.add_argument("out")
    ld.add_argument("--clients", type=int, default=6)
    ld.add_argument("--seconds", type=float, default=30)
    ld.add_argument("--max-wait-s", type=float, default=2)
    args = p.parse_args(argv)
    if args.command == "watch":
        watch(args.address, args.out, args.interval_s)
    else:
        load(args.url, args.scans, args.out, args.clients, args.seconds, args.max_wait_s)


if __name__ == "__main__":
    sys.exit(main())
