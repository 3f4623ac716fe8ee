"""Load on the online route: throughput and p50/p99 latency at several concurrency levels, batching on vs off.

    .venv/bin/python bench/serve_load.py [--levels 1 8 32] [--batch-sizes 16 1] [--requests 96] [--max-seconds 60]
    (or: digitise bench bench/serve_load.py --requests 32 --max-seconds 20)

1. Starts a loopback-only local Ray and the Serve app (serve_app.build_app) on 127.0.0.1 with a fresh
   temporary local results root and the given weights (default: the shipped weights).
2. Picks one clean synthetic scan the weights digitise (checked locally), so every request runs the whole
   path: upload, decode, batched segmentation, tracing, commit, read-back. Each request carries a different
   calibration (top_depth), so each has its own request id: nothing is answered from the store or merged
   by single flight.
3. For each max_batch_size (the segmenter's user_config; the other settings are ServeConfig's defaults for
   that batch size unless given) and each concurrency level: a warm-up, then closed-loop clients (one thread
   each, requests.Session) until --requests answers or --max-seconds, whichever comes first. Reports
   answers/s in the steady state (`steady_rate`; answers / wall time as ok_per_s_overall), p50/p99 latency
   of 200s, status counts, and from the app's /v1/stats counters the mean batch
   the segmenter formed, segmenting and tracing seconds per answer, and the commit's share of request time.
Writes bench/results/serve_load.json and bench/results/serve_load.md. The load generator shares the
machine's cores with the server: on a small machine it costs the server some throughput.
"""
import argparse
import json
import logging
import os
import platform
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from common import RESULTS, start_local_ray

log = logging.getLogger("serve_load")
MIN_ANSWERS = 16


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_args(p)
    p.add_argument("--out", default=str(RESULTS / "serve_load.json"))
    return p.parse_args(argv)


def add_args(p: argparse.ArgumentParser):
    p.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32], help="concurrent clients")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 1], help="max_batch_size settings")
    p.add_argument("--requests", type=int, default=96, help="answers per (batch size, level), at most")
    p.add_argument("--rounds", type=int, default=None, help="at most this many answers per client (at least "
                   f"{MIN_ANSWERS} a run), within --requests: a short run at one client, three rounds at 32")
    p.add_argument("--max-seconds", type=float, default=60.0, help="time per (batch size, level), at most")
    p.add_argument("--warmup", type=int, default=2, help="requests before each measurement")
    p.add_argument("--height", type=int, default=1000)
    p.add_argument("--width", type=int, default=300)
    p.add_argument("--weights", help="segmenter weights (default: the shipped weights)")
    p.add_argument("--segmenter-cpus", type=float, default=1.0, help="CPUs (torch threads) of the segmenter")
    p.add_argument("--batch-wait-timeout-s", type=float, default=None, help="default: ServeConfig's")
    p.add_argument("--busy-wait-fraction", type=float, default=None, help="default: ServeConfig's")
    p.add_argument("--segmenter-ongoing", type=int, default=None, help="segmenter max_ongoing_requests "
                                                                         "(default: ServeConfig's)")
    p.add_argument("--device", default=None, help="torch device of the segmenter (default: cuda if available)")
    p.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per segmenter replica")
    p.add_argument("--port", type=int, default=0, help="HTTP port on 127.0.0.1 (0: a free one)")


def easy_scan(args):
    """A clean scan of the requested size that the weights digitise (curves found), tried over seeds."""
    from digitiser import Digitiser
    from digitiser.synth import digitisable_scans
    digitiser = Digitiser(args.weights, device=args.device)
    found = digitisable_scans(digitiser, 1, tries=50, height=args.height, width=args.width)
    if not found:
        raise SystemExit(f"no clean {args.height}x{args.width} scan among 50 seeds is digitised by these weights")
    return found[0], digitiser.model_version


class Load:
    """Closed-loop clients posting the same image with a fresh calibration each time."""

    def __init__(self, url: str, scan):
        self.url, self.image, self.calibration = url, scan.encoded, scan.calibration
        self.serial = 0
        self.lock = threading.Lock()

    def _payload(self):
        with self.lock:
            self.serial += 1
            cal = dict(self.calibration, top_depth=float(self.calibration["top_depth"]) - self.serial)
        return {"image": ("scan.png", self.image, "image/png"), "calibration": ("c.json", json.dumps(cal))}

    def run(self, concurrency: int, max_requests: int, max_seconds: float) -> dict:
        import requests
        latencies, statuses, issued, done_at, stopped = [], Counter(), [0], [], [float("inf")]
        start = time.perf_counter()
        deadline = start + max_seconds

        def client():
            session = requests.Session()
            while True:
                with self.lock:
                    if issued[0] >= max_requests or time.perf_counter() > deadline:
                        stopped[0] = min(stopped[0], time.perf_counter())   # the drain begins
                        return
                    issued[0] += 1
                t0 = time.perf_counter()
                r = session.post(f"{self.url}/v1/digitise", files=self._payload(), timeout=600)
                dt = time.perf_counter() - t0
                with self.lock:
                    statuses[r.status_code] += 1
                    done_at.append(time.perf_counter())
                    if r.status_code == 200:
                        latencies.append(dt)

        threads = [threading.Thread(target=client) for _ in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - start
        lat = np.array(latencies) if latencies else np.array([np.nan])
        return {"concurrency": concurrency, "answers": sum(statuses.values()), "ok": len(latencies),
                "statuses": {str(k): v for k, v in sorted(statuses.items())}, "wall_s": wall,
                "ok_per_s": steady_rate(done_at, concurrency, stopped[0]) * len(latencies) / max(len(done_at), 1),
                "ok_per_s_overall": len(latencies) / wall, "p50_s": float(np.percentile(lat, 50)),
                "p99_s": float(np.percentile(lat, 99)), "mean_s": float(lat.mean())}


def steady_rate(done_at: list[float], concurrency: int, stopped: float) -> float:
    """Answers/s in the steady state of a closed loop: from the answer that completes the first round (every
    client has had one) to the last answer before the clients stopped issuing. Answers / wall time would
    count the ramp (all clients wait for the first batch together) and the drain (the last batches run with
    nothing beside them), which on a short run weigh as much as the steady state. Falls back to that when
    the run is too short for a steady window."""
    t = sorted(done_at)
    k = min(concurrency, len(t) - 1)
    end = int(np.searchsorted(t, stopped, side="right")) - 1
    if k < 1 or end <= k - 1:
        return len(t) / max(t[-1] - t[0], 1e-9) if len(t) > 1 else float("nan")
    return (end - (k - 1)) / (t[end] - t[k - 1])


def stats(url: str) -> dict:
    import requests
    return requests.get(f"{url}/v1/stats", timeout=60).json()


def busy(before: dict, after: dict, run: dict) -> dict:
    """Where the answered requests' time went, from the app's own counters: the commit's share of request
    time (ingress), segmenting and tracing seconds per answer (segmenter)."""
    def delta(side, key):
        return after[side]["seconds"].get(key, 0.0) - before[side]["seconds"].get(key, 0.0)
    ok = max(run["ok"], 1)
    return {"commit_share": delta("ingress", "commit") / max(delta("ingress", "request"), 1e-9),
            "commit_s_per_answer": delta("ingress", "commit") / ok,
            "segment_s_per_answer": delta("segmenter", "segment") / ok,
            "trace_s_per_answer": delta("segmenter", "trace") / ok}


def answers_per_run(args, level: int) -> int:
    """--requests, or with --rounds that many per client (a p99 needs some answers even at one client)."""
    return args.requests if args.rounds is None else min(args.requests, max(MIN_ANSWERS, args.rounds * level))


def measure(args, scan, store: str, url: str) -> list[dict]:
    from ray import serve
    from serve_app import ServeConfig, build_app
    load, runs = Load(url, scan), []
    for batch in args.batch_sizes:
        tuning = {k: v for k, v in (("batch_wait_timeout_s", args.batch_wait_timeout_s),
                                    ("busy_wait_fraction", args.busy_wait_fraction),
                                    ("segmenter_max_ongoing_requests", args.segmenter_ongoing)) if v is not None}
        config = ServeConfig(store=store, weights=args.weights, loopback_only=True, max_batch_size=batch,
                             segmenter_num_cpus=args.segmenter_cpus, ingress_num_cpus=0.25, device=args.device,
                             num_gpus=args.num_gpus, segmenter_max_queued_requests=-1, **tuning)
        serve.run(build_app(config), name="serve-load", route_prefix="/")
        for level in args.levels:
            load.run(min(level, args.warmup) or 1, args.warmup, args.max_seconds)
            before = stats(url)
            run = load.run(level, answers_per_run(args, level), args.max_seconds)
            after = stats(url)
            seg0, seg1 = before["segmenter"], after["segmenter"]
            batches = seg1["batches"] - seg0["batches"]
            run.update(max_batch_size=batch, batches=batches, mean_batch=(seg1["scans"] - seg0["scans"]) / max(batches, 1),
                       largest_batch_so_far=seg1["max_batch_formed"], **busy(before, after, run),
                       batch_wait_timeout_s=config.batch_wait_timeout_s,
                       segmenter_max_ongoing_requests=config.segmenter_ongoing)
            log.info("batch %d, %d clients: %.2f ok/s, p50 %.2f s, p99 %.2f s, mean batch %.1f, commit %.0f%% of "
                     "request time, statuses %s", batch, level, run["ok_per_s"], run["p50_s"], run["p99_s"],
                     run["mean_batch"], 100 * run["commit_share"], run["statuses"])
            runs.append(run)
    return runs


def table(runs: list[dict]) -> str:
    rows = ["| max_batch_size | clients | answers | ok/s | p50 s | p99 s | mean batch | statuses |",
            "|---:|---:|---:|---:|---:|---:|---:|---|"]
    rows += [f"| {r['max_batch_size']} | {r['concurrency']} | {r['answers']} | {r['ok_per_s']:.2f} | "
             f"{r['p50_s']:.2f} | {r['p99_s']:.2f} | {r['mean_batch']:.1f} | {r['statuses']} |" for r in runs]
    return "\n".join(rows)


def run_all(args) -> dict:
    """Every (batch size, level) run on a fresh local Ray and Serve; the result dict (also for bench/run.py)."""
    scan, model_version = easy_scan(args)
    import socket
    from ray import serve
    port = args.port
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    ray = start_local_ray()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
            runs = measure(args, scan, str(Path(tmp) / "results"), f"http://127.0.0.1:{port}")
    finally:
        serve.shutdown()
        ray.shutdown()
    result = {"bench": "serve_load", "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "host": platform.node(), "cpus": os.cpu_count(), "model_version": model_version,
              "scan": f"{args.height}x{args.width} clean png, {len(scan.encoded)} bytes",
              "segmenter_cpus": args.segmenter_cpus, "requests_per_run": args.requests,
              "max_seconds_per_run": args.max_seconds, "runs": runs}
    return result


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = run_all(args)
    runs, model_version = result["runs"], result["model_version"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    md = (f"# serve_load {result['date_utc']}\n\n{result['cpus']} CPUs, scan {result['scan']}, model "
          f"{model_version[:12]}, segmenter {args.segmenter_cpus:g} CPU, at most {args.requests} answers or "
          f"{args.max_seconds:g} s per row.\n\n{table(runs)}\n")
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
