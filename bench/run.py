"""One benchmark command: the model alone, the offline job, the online route and a naive loop, measured in one
run; the headline ratios in bench/results/summary.json and the plots beside it.

    .venv/bin/python bench/run.py [--quick]          (pip install -e '.[bench]' for the plots: matplotlib)

Runs, each in its own process (a fresh local Ray each): segmenter_speed.py (images/s at batch 1/4/16),
batch_throughput.py (the model's limit, the job on a local and a moto S3 root, 1 and 2 actors, the naive
loop, the contract's storage cost), serve_load.py (1, 8 and 32 clients, batching 16 and 1), and in the full
run gpu_check.sh --device cpu (so the GPU check does not rot). Their JSON lands in bench/results/;
summary.json holds the ratios, each from this one run. --quick (64 scans, 1 actor, 1 and 32 clients: 5-6
minutes on a 2-core machine) is a smoke test whose short jobs weigh start-up more; quote the full run (about 15
minutes). Ratios on a shared machine are noisy, absolute rates more so.
"""
import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from common import REPO, RESULTS

BENCH = Path(__file__).resolve().parent

log = logging.getLogger("bench")

# (script, arguments) per mode; every script takes --out
PLANS = {
    "full": [("segmenter_speed.py", ["--repeats", "3", "--threads", "1"]),
             ("batch_throughput.py", ["--n", "192", "--replicas", "1", "2"]),
             ("serve_load.py", ["--levels", "1", "8", "32", "--requests", "96", "--max-seconds", "90"])],
    # quick: no batch 4, no 2-actor run and no 8-client level; three rounds of answers at 32 clients
    "quick": [("segmenter_speed.py", ["--repeats", "1", "--threads", "1", "--batch-sizes", "1", "16"]),
              ("batch_throughput.py", ["--n", "64", "--replicas", "1", "--naive-n", "16"]),
              ("serve_load.py", ["--levels", "1", "32", "--requests", "96", "--rounds", "3", "--max-seconds", "25",
                                 "--warmup", "2"])],
}


def run_scripts(plan, out_dir: Path) -> dict:
    results = {}
    for script, extra in plan:
        out = out_dir / script.replace(".py", ".json")
        t0 = time.monotonic()
        log.info("running %s %s", script, " ".join(extra))
        subprocess.run([sys.executable, str(BENCH / script), *extra, "--out", str(out)], cwd=REPO, check=True)
        log.info("%s done in %.0f s", script, time.monotonic() - t0)
        results[script[:-3]] = json.loads(out.read_text())
    return results


def serve_run(serve: dict, batch: int, clients: int) -> dict:
    return next(r for r in serve["runs"] if r["max_batch_size"] == batch and r["concurrency"] == clients)


def storage_figures(storage: dict) -> dict:
    """Storage calls and bytes per request on the S3 root (where each call costs a round trip; the local root
    when there is none), and the local root's calls beside them."""
    cost = storage.get("s3", storage["local"])
    return {"storage_calls_per_request": cost["storage_calls_per_request"],
            "storage_calls_per_request_local": storage["local"]["storage_calls_per_request"],
            "storage_calls_minimum": cost["minimum_calls_per_request"],
            "storage_bytes_per_request": cost["storage_bytes_written_per_request"]
            + cost["storage_bytes_read_per_request"],
            "storage_bytes_minimum": cost["minimum_bytes_per_request"]}


def summarise(r: dict, mode: str, seconds: float) -> dict:
    """The headline figures, each a ratio of two measurements of this run."""
    batch, serve, model = r["batch_throughput"], r["serve_load"], r["segmenter_speed"]
    jobs = batch["jobs"]
    on, off = serve_run(serve, 16, 32), serve_run(serve, 1, 32)
    return {
        "mode": mode, "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "bench_seconds": seconds,
        "pipeline_over_model_local": jobs["local_1"]["pipeline_over_model"],
        "pipeline_over_model_s3": jobs["s3_1"]["pipeline_over_model"],
        "pipeline_over_model_local_after_startup": jobs["local_1"]["pipeline_over_model_after_startup"],
        "pipeline_over_model_s3_after_startup": jobs["s3_1"]["pipeline_over_model_after_startup"],
        "job_startup_s_local": jobs["local_1"]["startup_s"], "job_scans": batch["n"],
        "first_job_first_result_s": batch["cold_job"]["first_result_s"],
        "serve_batching_speedup_32": on["ok_per_s"] / off["ok_per_s"],
        "mean_batch_32": on["mean_batch"],
        "p99_over_p50_32": on["p99_s"] / on["p50_s"],
        "commit_share_32": on["commit_share"],
        "naive_speedup": jobs["local_1"]["images_per_s"] / batch["naive_images_per_s"],
        **storage_figures(batch["storage"]),
        "images_per_s_1_actor": jobs["local_1"]["images_per_s"],
        "images_per_s_2_actors": jobs.get("local_2", {}).get("images_per_s"),
        "scaling_2_over_1": jobs["local_2"]["images_per_s"] / jobs["local_1"]["images_per_s"]
        if "local_2" in jobs else None,
        "model_batch16_over_batch1": model["batch_speedup"],
        "trace_over_segment": model["trace_over_segment"],
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer scans and requests (5-6 minutes on 2 cores)")
    p.add_argument("--out-dir", default=str(RESULTS))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mode = "quick" if args.quick else "full"
    t0 = time.monotonic()
    results = run_scripts(PLANS[mode], out_dir)
    summary = summarise(results, mode, time.monotonic() - t0)
    if mode == "full":   # keep the GPU check from rotting: the same steps on CPU, small counts
        check = subprocess.run([str(BENCH / "gpu_check.sh"), "--device", "cpu", "--out",
                                str(out_dir / "gpu_check_cpu.json")], cwd=REPO, env={**os.environ, "PYTHON": sys.executable})
        summary["gpu_check_cpu_exit_code"] = check.returncode
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    from plots import plot_all
    plot_all(results, out_dir)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
