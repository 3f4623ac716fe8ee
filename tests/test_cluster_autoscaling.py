"""Both routes on a real autoscaling multi-node Ray cluster on this machine (tests/multinode.py): a head with 2
CPUs and no GPU, and a `gpu_worker` type (1 CPU + 1 logical GPU, 0-2 nodes, released 6 s after going idle)
that Ray's autoscaler launches and terminates. Every process runs in a private loopback-only namespace.

One cluster for the module; the tests run in file order and each leaves the cluster with no GPU node. A
watcher process (tests/cluster_tools.py watch) records `cluster.snapshot()` every second; scale-up and
scale-down times are read from that timeline and printed (`pytest -s` shows them).
Marked `multinode` (about 4.5 minutes on the 2-core CI machine); CI runs them.
"""
import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import yaml

import contracts
from digitiser import DEFAULT_WEIGHTS, Digitiser
from digitiser.synth import digitisable_scans
from multinode import ROOT, FakeCluster, can_run

pytestmark = [pytest.mark.multinode, pytest.mark.skipif(can_run() is not None, reason=str(can_run()))]

N_SCANS = 6
TOOLS = str(Path(__file__).parent / "cluster_tools.py")
URL = "http://127.0.0.1:8000"
APP = "digitiser"
LOAD_S = 25   # from nothing, a GPU node and a replica are up in ~8 s; then ~1 answer a second on this machine


# ----------------------------------------------------------------------------- fixtures and helpers

@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Path:
    """N_SCANS clean 400 x 200 scans (PNG + calibration sidecar) the shipped weights digitise."""
    folder = tmp_path_factory.mktemp("scans")
    found = digitisable_scans(Digitiser(DEFAULT_WEIGHTS, device="cpu"), N_SCANS, tries=60, height=400, width=200)
    if len(found) < N_SCANS:
        pytest.fail(f"the shipped weights digitise only {len(found)} of 60 clean synthetic scans")
    for i, scan in enumerate(found):
        (folder / f"scan{i:03d}.png").write_bytes(scan.encoded)
        (folder / f"scan{i:03d}.json").write_text(json.dumps(scan.calibration))
    return folder


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """The started cluster, with its watcher; torn down (every process in its namespace) at module end."""
    cluster = FakeCluster(tmp_path_factory.mktemp("fake_cluster"))
    cluster.start()
    try:
        cluster.timeline = cluster.workdir / "timeline.jsonl"
        cluster.popen([sys.executable, TOOLS, "watch", cluster.address, str(cluster.timeline)],
                      log=cluster.workdir / "watch.log")
        yield cluster
    finally:
        cluster.stop()


def _timeline(fake, since: float = 0.0) -> list[dict]:
    if not fake.timeline.exists():
        return []
    rows = [json.loads(line) for line in fake.timeline.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["t"] >= since and "error" not in r]


def _wait_for(fake, predicate, timeout_s: float, since: float, what: str) -> dict:
    """The first timeline row at or after `since` satisfying `predicate`, waiting up to timeout_s."""
    deadline = time.time() + timeout_s
    while True:
        hit = next((r for r in _timeline(fake, since) if predicate(r)), None)
        if hit is not None:
            return hit
        if time.time() > deadline:
            tail = _timeline(fake, since)[-5:]
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}; last rows: {tail}")
        time.sleep(1)


def _report(name: str, seconds: float):
    print(f"\n[cluster timing] {name}: {seconds:.1f} s")


def _committed(root: Path) -> list[str]:
    return sorted(p.parent.name for p in root.glob("*/manifest.json"))


def _wait_exit(proc, timeout_s: float) -> int:
    try:
        return proc.wait(timeout=timeout_s)
    except Exception:
        proc.kill()
        raise


# ----------------------------------------------------------------------------- status

def test_status_shows_an_idle_head_without_gpus(fake):
    snap = fake.status()
    (head,) = [n for n in snap["nodes"] if n["state"] != "DEAD"]
    assert head["node_type"] == "head" and head["cpus_total"] == 2 and head["gpus_total"] == 0
    assert snap["demands"] == [] and snap["apps"] == []
    assert not [j for j in snap["jobs"] if j["kind"] == "batch"]


# ----------------------------------------------------------------------------- batch

def test_batch_job_launches_gpu_workers_commits_each_scan_once_and_releases_them(fake, scans, tmp_path):
    dst = tmp_path / "results"
    start = time.time()
    job = fake.popen([sys.executable, "-m", "cli", "batch", str(scans), str(dst), "--address",
                      fake.address, "--num-gpus", "1", "--replicas", "auto", "--batch-size", "2", "--device", "cpu"],
                     log=tmp_path / "batch.log")
    up = _wait_for(fake, lambda r: r["gpu_nodes"] >= 1, 180, start, "a GPU node for the batch job")
    during = fake.status()   # the status command against the cluster while the job runs
    assert [j for j in during["jobs"] if j["kind"] == "batch" and str(scans) in j["entrypoint"]]
    assert [n for n in during["nodes"] if n["node_type"] == "gpu_worker" and n["state"] != "DEAD"
            and n["gpus_total"] == 1]
    assert _wait_exit(job, 300) == 0, (tmp_path / "batch.log").read_text()[-4000:]
    done = time.time()
    assert len(_committed(dst)) == N_SCANS
    assert contracts.audit(str(dst)).ok
    last_commit = max(p.stat().st_mtime for p in dst.glob("*/manifest.json"))
    down = _wait_for(fake, lambda r: r["gpu_nodes"] == 0, 90, last_commit, "the GPU nodes to be released")
    peak = max(r["gpu_nodes"] for r in _timeline(fake, start) if r["t"] <= done)
    _report("batch scale-up (job start -> first GPU node alive)", up["t"] - start)
    _report("batch scale-down (last scan committed -> no GPU node)", down["t"] - last_commit)
    print(f"[cluster timing] batch: {N_SCANS} scans in {done - start:.1f} s, at most {peak} GPU node(s)")


def test_batch_job_submitted_as_a_ray_job(fake, scans, tmp_path):
    """The Jobs SDK path (as `ray job submit`): the driver runs on the cluster, not here."""
    dst = tmp_path / "results"
    entrypoint = (f"{sys.executable} -m cli batch {scans} {dst} --address auto --num-gpus 0 "
                  "--batch-size 4 --limit 3")
    script = (f"from ray.job_submission import JobSubmissionClient, JobStatus\n"
              f"import time, sys\n"
              f"c = JobSubmissionClient({fake.dashboard!r})\n"
              f"job = c.submit_job(entrypoint={entrypoint!r}, "
              f"runtime_env={{'env_vars': {{'PYTHONPATH': {str(ROOT)!r}}}}})\n"
              f"deadline = time.time() + 240\n"
              f"while c.get_job_status(job) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):\n"
              f"    assert time.time() < deadline, 'job still running'\n"
              f"    time.sleep(1)\n"
              f"print(c.get_job_status(job).value)\n"
              f"print(c.get_job_logs(job)[-3000:], file=sys.stderr)\n")
    proc = fake.run([sys.executable, "-c", script], timeout=300)
    assert proc.stdout.strip().splitlines()[-1] == "SUCCEEDED", proc.stderr
    assert len(_committed(dst)) == 3 and contracts.audit(str(dst)).ok


# ----------------------------------------------------------------------------- online

def _get(fake, path: str, timeout_s: float = 30) -> tuple[int, str]:
    script = ("import requests, sys\n"
              f"r = requests.get({URL + path!r}, timeout={timeout_s})\nprint(r.status_code)\nprint(r.text)")
    out = fake.run([sys.executable, "-c", script], timeout=timeout_s + 60, check=False).stdout.splitlines()
    return (int(out[0]), "\n".join(out[1:])) if out else (0, "")


def test_serve_address_deploys_onto_the_cluster_and_removes_the_app_on_sigterm(fake, scans, tmp_path):
    store = tmp_path / "online"
    proc = fake.popen([sys.executable, "-m", "cli", "serve", "--address", fake.address, "--store",
                       str(store), "--replicas", "1", "--num-gpus", "0"], log=tmp_path / "serve.log")
    deadline = time.time() + 180
    while _get(fake, "/healthz")[0] != 200:
        assert proc.poll() is None and time.time() < deadline, (tmp_path / "serve.log").read_text()[-4000:]
        time.sleep(2)
    load = fake.run([sys.executable, TOOLS, "load", URL, str(scans), str(tmp_path / "r.json"), "--clients", "1",
                     "--seconds", "1"], timeout=200)
    answers = json.loads((tmp_path / "r.json").read_text())
    assert answers and all(a["status"] == 200 for a in answers), (answers, load.stderr[-2000:])
    proc.send_signal(signal.SIGTERM)
    assert _wait_exit(proc, 60) == 0
    assert fake.status()["apps"] == []


def _serve_config(store: Path, min_replicas: int) -> dict:
    """serve_app/config.yaml scaled to this machine: a GPU Segmenter autoscaling min_replicas..2 on fast
    delays, batches of 4, one small Ingress replica on the head, a local results root."""
    config = yaml.safe_load((ROOT / "serve_app" / "config.yaml").read_text())
    (app,) = config["applications"]
    # device cpu: the fake GPU nodes grant a GPU that torch cannot use (num_gpus: 1 alone means cuda)
    app["args"].update(store=str(store), device="cpu", segmenter_num_cpus=1, ingress_num_cpus=0.25,
                       max_batch_size=4, segmenter_max_ongoing_requests=4, segmenter_max_queued_requests=16,
                       retry_after_s=1)
    deployments = {d["name"]: d for d in app["deployments"]}
    seg, ing = deployments["Segmenter"], deployments["Ingress"]
    seg["autoscaling_config"] = {"min_replicas": min_replicas, "max_replicas": 2, "target_ongoing_requests": 2,
                                 "upscale_delay_s": 1, "downscale_delay_s": 4, "downscale_to_zero_delay_s": 4,
                                 "metrics_interval_s": 0.5, "look_back_period_s": 2}
    seg.update(max_ongoing_requests=4, max_queued_requests=16, ray_actor_options={"num_cpus": 1, "num_gpus": 1},
               user_config={"max_batch_size": 4, "batch_wait_timeout_s": 0.05}, backpressure_config={"retry_after_s": 1})
    ing.pop("autoscaling_config")
    ing.update(num_replicas=1, ray_actor_options={"num_cpus": 0.25}, backpressure_config={"retry_after_s": 1})
    return config


def _deploy(fake, tmp_path, store: Path, min_replicas: int):
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(_serve_config(store, min_replicas)))
    fake.run(["serve", "deploy", str(path), "--address", fake.dashboard], timeout=120)
    deadline = time.time() + 180
    while True:
        app = next((a for a in fake.status()["apps"] if a["name"] == APP), None)
        if app and app["status"] == "RUNNING" and _get(fake, "/docs")[0] == 200:   # the proxy has the route
            return
        assert time.time() < deadline, f"the app did not reach RUNNING: {app}"
        time.sleep(2)


def _check_answers(answers: list[dict], store: Path) -> list[dict]:
    """Only 200 and 503 + Retry-After; a request's 200s (one request: same scan and calibration, retried
    after a 503) share one request id and one result; every acknowledged request id is committed in the store.
    Returns the 200s."""
    bad = [a for a in answers if a["status"] not in (200, 503)]
    assert not bad, (bad[:5], f"{len(answers)} answers from {answers[0]['t']:.1f}")
    assert all(a["retry_after"] for a in answers if a["status"] == 503)
    ok = [a for a in answers if a["status"] == 200]
    ids, results = {}, {}
    for a in answers:
        if a["request_id"]:
            ids.setdefault(a["key"], set()).add(a["request_id"])
    for a in ok:
        results.setdefault(a["key"], set()).add(a["curves_sha256"])
    assert all(len(v) == 1 for v in ids.values()), {k: v for k, v in ids.items() if len(v) > 1}
    assert all(len(v) == 1 for v in results.values())
    for a in ok:
        contracts.load(str(store), a["request_id"])   # raises NotCommitted / Corrupt
    return ok


def test_serve_scales_replicas_and_nodes_out_under_load_and_back_to_zero(fake, scans, tmp_path):
    store = tmp_path / "online"
    _deploy(fake, tmp_path, store, min_replicas=0)
    replicas = lambda r: r["replicas"].get(f"{APP}/Segmenter", 0)  # noqa: E731
    start = time.time()
    fake.run([sys.executable, TOOLS, "load", URL, str(scans), str(tmp_path / "load.json"), "--clients", "6",
              "--seconds", str(LOAD_S)], timeout=400)
    end = time.time()
    answers = json.loads((tmp_path / "load.json").read_text())
    ok = _check_answers(answers, store)
    assert len(ok) >= N_SCANS, f"only {len(ok)} answers in {LOAD_S} s"
    up = _wait_for(fake, lambda r: r["gpu_nodes"] >= 1, 0, start, "a GPU node under load")
    first = _wait_for(fake, lambda r: replicas(r) >= 1, 0, start, "a Segmenter replica under load")
    peak = max(replicas(r) for r in _timeline(fake, start) if r["t"] <= end)
    zero = _wait_for(fake, lambda r: replicas(r) == 0, 120, end, "Segmenter replicas back to 0")
    gone = _wait_for(fake, lambda r: r["gpu_nodes"] == 0, 120, zero["t"], "the GPU nodes released")
    _report("online scale-up (load start -> first GPU node alive)", up["t"] - start)
    _report("online scale-up (load start -> first Segmenter replica running)", first["t"] - start)
    _report("online scale-down (load end -> 0 replicas)", zero["t"] - end)
    _report("online scale-down (0 replicas -> no GPU node)", gone["t"] - zero["t"])
    print(f"[cluster timing] online: {len(ok)} answers 200, {sum(a['status'] == 503 for a in answers)} x 503 "
          f"in {end - start:.0f} s; peak {peak} Segmenter replica(s)")
    assert peak >= 1


def test_killing_a_segmenter_replica_under_load_keeps_the_app_answering(fake, scans, tmp_path):
    store = tmp_path / "online"
    _deploy(fake, tmp_path, store, min_replicas=1)
    _wait_for(fake, lambda r: r["replicas"].get(f"{APP}/Segmenter", 0) >= 1, 180, 0, "a Segmenter replica")
    load = fake.popen([sys.executable, TOOLS, "load", URL, str(scans), str(tmp_path / "load.json"), "--clients", "4",
                       "--seconds", "30"], log=tmp_path / "load.log")
    time.sleep(8)
    victims = fake.process_pids(f"ServeReplica:{APP}:Segmenter")
    assert victims, "no Segmenter replica process found"
    killed_at = time.time()
    for pid in victims[:1]:
        os.kill(pid, signal.SIGKILL)
    assert _wait_exit(load, 300) == 0, (tmp_path / "load.log").read_text()[-3000:]
    answers = json.loads((tmp_path / "load.json").read_text())
    ok = _check_answers(answers, store)
    assert [a for a in ok if a["t"] > killed_at + 1], "no answer after the replica was killed"
    fake.run(["serve", "shutdown", "-y", "--address", fake.dashboard], timeout=120)
    _wait_for(fake, lambda r: r["gpu_nodes"] == 0, 120, time.time(), "the GPU nodes released after Serve")


# ----------------------------------------------------------------------------- node loss

def test_killing_a_worker_raylet_mid_job_then_a_rerun_commits_each_scan_exactly_once(fake, scans, tmp_path):
    dst = tmp_path / "results"
    args = [sys.executable, "-m", "cli", "batch", str(scans), str(dst), "--address", fake.address,
            "--num-gpus", "1", "--replicas", "auto", "--batch-size", "1", "--device", "cpu"]
    job = fake.popen(args, log=tmp_path / "batch.log")
    deadline = time.time() + 240
    while not _committed(dst):   # mid-job: the first scan is committed, the others are not yet all
        assert job.poll() is None and time.time() < deadline, (tmp_path / "batch.log").read_text()[-3000:]
        time.sleep(0.5)
    raylets = [p for p in fake.process_pids("raylet/raylet") if p not in fake.process_pids("--head")]
    assert raylets, "no worker raylet running"
    os.kill(raylets[0], signal.SIGKILL)
    committed_at_kill = len(_committed(dst))
    first = _wait_exit(job, 400)
    if first != 0:   # the job may fail with its node: the same command resumes
        rerun = fake.popen(args, log=tmp_path / "rerun.log")
        assert _wait_exit(rerun, 400) == 0, (tmp_path / "rerun.log").read_text()[-3000:]
    print(f"\n[cluster fault] raylet killed with {committed_at_kill}/{N_SCANS} committed; first run exit {first}")
    assert len(_committed(dst)) == N_SCANS
    report = contracts.audit(str(dst))
    assert report.ok, report.format_table()
    _wait_for(fake, lambda r: r["gpu_nodes"] == 0, 120, time.time(), "the GPU nodes released")
