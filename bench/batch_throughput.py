"""The offline route against the model's own limit, measured in one run, on a local root and on a moto S3 root.

    .venv/bin/python bench/batch_throughput.py [--n 96] [--roots local s3] [--replicas 1 2] [--batch-size 16]

1. Renders N synthetic scans (clean style, --height x --width) with calibration sidecars into a temporary
   archive (and, for the s3 root, uploads it to a bucket on a moto S3 server on 127.0.0.1).
2. The model's limit: the decoded scans through `Digitiser.segment` in batches of --batch-size and
   `Digitiser.finish` (tracing, the result) per scan, on --cpus-per-replica torch threads: what one segmenter
   actor does per scan, with no I/O, no Ray and nothing else on its core.
3. End to end: `batch_jobs.convert` into a fresh results root per (root, replicas): listing, reading, decoding,
   segmenting, tracing, committing, the ledger; actor start-up included. A first job of two scans runs before
   them (`cold_job`): on a fresh Ray it pays ~4 s more start-up (Ray Data's own actors, worker processes) that
   every later job on a running cluster skips. The per-stage seconds come from the
   job's own ledger; the listing is timed apart (the same walk, alone).
`pipeline_over_model` = end-to-end images/s over the model's limit (x replicas), the limit measured on 32 of
the scans just before each job (a shared machine's speed drifts by the minute; the first job's is the one
reported as `model_images_per_s`). Where the rest went:
`contention_s` (the same model work took longer inside the job than alone: the job's other steps and other
users share the cores), `startup_s` before the first result, and `model_busy` (the actors' segmenting and
tracing over the wall time: above 1 when an actor's two batches overlap).
4. The naive baseline: a plain loop over the first N/2 scans (decode, model at batch 1, trace, write the same
   objects straight to files), and the contract's storage cost on each root: calls and bytes per request of
   the job's storage steps, counted at the filesystem, against the minimum (each object written once).
Writes --out (bench/results/batch_throughput.json).
"""
import argparse
import contextlib
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

from common import RESULTS, moto_s3, start_local_ray

log = logging.getLogger("batch_throughput")
LIMIT_SCANS = 32     # the model's limit is measured on this many of the scans, just before each job
STAGES = ("read_s", "decode_s", "segment_s", "trace_s", "commit_s")


def add_args(p: argparse.ArgumentParser):
    p.add_argument("--n", type=int, default=96, help="synthetic scans")
    p.add_argument("--height", type=int, default=800)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--roots", nargs="+", default=["local", "s3"], choices=["local", "s3"])
    p.add_argument("--replicas", type=int, nargs="+", default=[1], help="segmenter actors (on the local root)")
    p.add_argument("--cpus-per-replica", type=float, default=1.0)
    p.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per actor (and the model's limit on cuda)")
    p.add_argument("--weights", help="segmenter weights (default: the shipped weights)")
    p.add_argument("--naive-n", type=int, default=None, help="scans for the naive loop (default: N/2; 0: skip)")


def render_archive(folder: Path, n: int, height: int, width: int, seed: int) -> int:
    """Write n scans and their sidecars under folder; returns their total pixels."""
    from digitiser.synth import render_scan, scan_seed
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        scan = render_scan(scan_seed(seed, i), style="clean", height=height, width=width)
        (folder / f"scan_{i:05d}.{scan.ext}").write_bytes(scan.encoded)
        (folder / f"scan_{i:05d}.json").write_text(json.dumps(scan.calibration))
    return n * height * width


def load_archive(folder: Path) -> list[tuple]:
    """[(DecodedScan, Calibration)] for every scan in folder, sorted (the job's order)."""
    import contracts
    from digitiser import decode_scan
    out = []
    for path in sorted(p for p in folder.iterdir() if p.suffix != ".json"):
        calibration = json.loads(path.with_suffix(".json").read_text())
        out.append((decode_scan(path.read_bytes()), contracts.Calibration.from_dict(calibration)))
    return out


def model_limit(scans: list[tuple], batch_size: int, threads: float, device: str, weights=None) -> dict:
    """Seconds for segment (batched) + finish (per scan) over all scans, as one actor runs them, no I/O."""
    import torch

    from digitiser import Digitiser
    torch.set_num_threads(max(1, int(threads)))
    digitiser = Digitiser(weights, device=device)
    digitiser.segment_scans([scans[0][0]])   # warm-up (allocator, oneDNN kernels)
    segment_s = trace_s = 0.0
    for i in range(0, len(scans), batch_size):
        group = scans[i:i + batch_size]
        t0 = time.perf_counter()
        probs = digitiser.segment_scans([s for s, _ in group])
        t1 = time.perf_counter()
        for (scan, calibration), p in zip(group, probs):
            try:
                digitiser.finish(scan, calibration, p)
            except ValueError:   # CurveNotFound: the job spends the same time and fails the scan
                pass
        segment_s, trace_s = segment_s + t1 - t0, trace_s + time.perf_counter() - t1
    total = segment_s + trace_s
    return {"model_scans": len(scans), "model_s": total, "model_segment_s": segment_s, "model_trace_s": trace_s,
            "model_images_per_s": len(scans) / total, "torch_threads": torch.get_num_threads(),
            "device": str(digitiser.device), "model_version": digitiser.model_version}


def upload(folder: Path, fs, prefix: str):
    for path in sorted(folder.iterdir()):
        fs.pipe_file(f"{prefix}/{path.name}", path.read_bytes())


def naive_loop(folder: Path, out: Path, n: int, threads: float, device: str, weights=None) -> dict:
    """The script a user would write instead: for each of the first n scans read, decode, segment alone
    (batch 1), trace, and write the same objects straight to files (no validation, no read-back, no
    manifest-last, no ledger, no resume). Images/s over those scans, model load excluded."""
    import torch

    import contracts
    from digitiser import Digitiser, decode_scan
    torch.set_num_threads(max(1, int(threads)))
    digitiser = Digitiser(weights, device=device)
    paths = sorted(p for p in folder.iterdir() if p.suffix != ".json")[:n]
    digitiser.segment_scans([decode_scan(paths[0].read_bytes())])   # warm-up, as for the model's limit
    t0 = time.perf_counter()
    for path in paths:
        scan = decode_scan(path.read_bytes())
        calibration = contracts.Calibration.from_dict(json.loads(path.with_suffix(".json").read_text()))
        try:
            result = digitiser.finish(scan, calibration, digitiser.segment_scans([scan])[0])
        except ValueError:
            continue
        (out / result.request_id).mkdir(parents=True, exist_ok=True)
        for name, data in contracts.serialise(result).items():
            (out / result.request_id / name).write_bytes(data)
    seconds = time.perf_counter() - t0
    return {"naive_n": len(paths), "naive_s": seconds, "naive_images_per_s": len(paths) / seconds}


def sample_results(folder: Path, n: int, weights=None) -> list:
    """The first `n` archive scans that digitise, digitised (for the storage cost)."""
    import contracts
    from digitiser import Digitiser, decode_scan
    digitiser, results = Digitiser(weights), []
    for path in sorted(p for p in folder.iterdir() if p.suffix != ".json"):
        scan = decode_scan(path.read_bytes())
        calibration = contracts.Calibration.from_dict(json.loads(path.with_suffix(".json").read_text()))
        try:
            results.append(digitiser.finish(scan, calibration, digitiser.segment_scans([scan])[0]))
        except ValueError:
            continue
        if len(results) == n:
            break
    return results


class CountingFS:
    """Counts the whole-object calls `contracts` makes on `inner` (all it uses to commit), and their bytes."""

    def __init__(self, inner):
        self.inner, self.calls, self.written, self.read = inner, 0, 0, 0
        self.protocol = inner.protocol    # contracts verifies by listing on S3 only

    def _strip_protocol(self, path):
        return self.inner._strip_protocol(path)

    def pipe_file(self, path, value, *a, **k):
        self.calls, self.written = self.calls + 1, self.written + len(value)
        return self.inner.pipe_file(path, value, *a, **k)

    def cat_file(self, path, *a, **k):
        self.calls += 1
        data = self.inner.cat_file(path, *a, **k)
        self.read += len(data)
        return data

    def exists(self, path, **k):
        self.calls += 1
        return self.inner.exists(path, **k)

    def ls(self, path, **k):
        self.calls += 1
        return self.inner.ls(path, **k)

    def invalidate_cache(self, path=None):
        return self.inner.invalidate_cache(path)   # drops s3fs's local listing cache: no storage call


def storage_cost(results: list, root: str, fs) -> dict:
    """Storage calls and bytes per request of the job's two storage steps (the is-committed check in
    prepare, contracts.commit), counted at the filesystem, against the contract's minimum: each object put
    once, whole (the naive loop's writes)."""
    import contracts
    counting = CountingFS(fs)
    for r in results:
        contracts.is_committed(root, r.request_id, fs=counting)
        contracts.commit(r, root, fs=counting)
    k, minimum = len(results), [contracts.serialise(r) for r in results]
    return {"storage_requests": k, "storage_calls_per_request": counting.calls / k,
            "storage_bytes_written_per_request": counting.written / k,
            "storage_bytes_read_per_request": counting.read / k,
            "minimum_calls_per_request": sum(len(o) for o in minimum) / k,
            "minimum_bytes_per_request": sum(len(b) for o in minimum for b in o.values()) / k}


def listing_seconds(src: str) -> float:
    """The job's walk over src, alone."""
    from batch_jobs.listing import iter_scans, open_fs
    t0 = time.perf_counter()
    sum(1 for _ in iter_scans(*open_fs(src)))
    return time.perf_counter() - t0


def end_to_end(src: str, dst: str, args, replicas: int) -> dict:
    """One job; its counts, wall time and per-stage seconds (means per scan, from its ledger)."""
    import fsspec
    import pyarrow.parquet as pq

    from batch_jobs import JobConfig, convert
    config = JobConfig(src, dst, batch_size=args.batch_size, replicas=replicas, num_gpus=args.num_gpus,
                       cpus_per_replica=args.cpus_per_replica, weights=args.weights)
    t0 = time.perf_counter()
    s = convert(config)
    wall = time.perf_counter() - t0
    with fsspec.open(s.ledger, "rb") as f:
        ledger = pq.read_table(f, columns=list(STAGES))
    sums = {k: float(sum(v or 0.0 for v in ledger.column(k).to_pylist())) for k in STAGES}
    return {"replicas": replicas, "wall_s": wall, "images_per_s": s.listed / wall, "listed": s.listed,
            "committed": s.committed, "failed": s.failed, "failure_kinds": sorted({f.kind for f in s.failures}),
            "first_result_s": s.first_result_s, "ledger_s": s.ledger_s,
            "per_scan_s": {k[:-2]: v / max(s.listed, 1) for k, v in sums.items()},
            "job_model_s": (sums["segment_s"] + sums["trace_s"]) / replicas}


def first_job(archive: str, tmp: Path, args) -> dict:
    """The first job on a fresh Ray pays for what a running cluster already has: Ray Data's own actors (its
    resource budget waits for their autoscaling coordinator) and idle worker processes. Run it on two scans so
    that the measured jobs start like every later job on a cluster; its first-result time is reported apart."""
    from batch_jobs import JobConfig, convert
    s = convert(JobConfig(str(archive), str(tmp / "first-job-results"), batch_size=args.batch_size, limit=2,
                          num_gpus=args.num_gpus, cpus_per_replica=args.cpus_per_replica, weights=args.weights))
    log.info("first job on this Ray (2 scans): first result after %.1f s", s.first_result_s)
    return {"scans": s.listed, "first_result_s": s.first_result_s, "wall_s": s.elapsed_s}


def gap(job: dict, limit: dict, n: int, batch_size: int) -> dict:
    """pipeline_over_model (against `limit`, measured just before the job: the machine's speed drifts) and
    where the job's wall time went besides the model's own time. startup_s: the first result's wait beyond
    the model time of its batch (job start, actor start, first reads). model_busy: the actors' share of the
    wall time spent segmenting and tracing (at whatever speed they ran)."""
    k = limit["model_scans"]
    segment, trace = limit["model_segment_s"] / k, limit["model_trace_s"] / k    # per scan
    model_s = (segment + trace) * n / job["replicas"]       # the job's scans at the model's limit, per actor
    startup = max(0.0, job["first_result_s"] - (segment * min(batch_size, n) + trace))
    return {"pipeline_over_model": model_s / job["wall_s"], "model_images_per_s_before": k / limit["model_s"],
            "model_s": model_s, "contention_s": job["job_model_s"] - model_s,
            "startup_s": startup,
            "pipeline_over_model_after_startup": model_s / max(job["wall_s"] - startup, 1e-9),
            "model_busy": job["job_model_s"] / job["wall_s"]}


def measure(args, tmp: Path) -> dict:
    """Every measurement of this benchmark in one run (also called by bench/run.py)."""
    archive = tmp / "archive"
    pixels = render_archive(archive, args.n, args.height, args.width, args.seed)
    device = "cuda" if args.num_gpus > 0 else "cpu"
    scans = load_archive(archive)
    naive_n = args.n // 2 if args.naive_n is None else min(args.naive_n, args.n)
    naive = naive_loop(archive, tmp / "naive", naive_n, args.cpus_per_replica, device, args.weights) if naive_n else {}
    from contracts.store import AtomicLocalFileSystem
    sample = sample_results(archive, 8, args.weights)
    storage = {"local": storage_cost(sample, str(tmp / "storage"), AtomicLocalFileSystem())}
    jobs, limit = {}, None
    with contextlib.ExitStack() as stack:
        s3 = stack.enter_context(moto_s3()) if "s3" in args.roots else None
        if s3 is not None:
            s3.mkdir("storage")
            storage["s3"] = storage_cost(sample, "s3://storage", s3)
        # CPUs are Ray's scheduling tokens: room for every actor plus the I/O steps beside them
        ray = start_local_ray(max(os.cpu_count() or 1, int(max(args.replicas) * args.cpus_per_replica) + 1))
        stack.callback(ray.shutdown)
        cold = first_job(str(archive), tmp, args)
        for root in args.roots:
            if root == "s3":
                s3.mkdir("bench")
                upload(archive, s3, "bench/archive")
                src, dst = "s3://bench/archive", "s3://bench/results"
            else:
                src, dst = str(archive), str(tmp / "results")
            for replicas in (args.replicas if root == "local" else [min(args.replicas)]):
                near = model_limit(scans[:LIMIT_SCANS], args.batch_size, args.cpus_per_replica, device, args.weights)
                if limit is None:   # the model's limit reported: the one measured just before the first job
                    limit = near
                    log.info("model's limit: %.2f images/s (%.3f s segment + %.3f s trace per scan)",
                             near["model_images_per_s"], near["model_segment_s"] / near["model_scans"],
                             near["model_trace_s"] / near["model_scans"])
                job = end_to_end(src, f"{dst}-{replicas}", args, replicas)
                job.update(gap(job, near, args.n, args.batch_size), listing_s_per_scan=listing_seconds(src) / args.n)
                log.info("%s root, %d actor(s): %.2f images/s, %.0f%% of the model's limit", root, replicas,
                         job["images_per_s"], 100 * job["pipeline_over_model"])
                jobs[f"{root}_{replicas}"] = job
    return {"bench": "batch_throughput", "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": platform.node(), "cpus": os.cpu_count(), "n": args.n, "size": f"{args.height}x{args.width}",
            "mean_megapixels": pixels / args.n / 1e6, "batch_size": args.batch_size,
            "cpus_per_replica": args.cpus_per_replica, "num_gpus": args.num_gpus, **limit, **naive, "storage": storage,
            "cold_job": cold, "jobs": jobs}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_args(p)
    p.add_argument("--out", default=str(RESULTS / "batch_throughput.json"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="batch-bench-") as tmp:
        result = measure(args, Path(tmp))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
