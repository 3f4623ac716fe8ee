"""bench/gpu_check.sh's preflight: on a machine without a usable CUDA torch it says exactly what is missing and
runs nothing; with --device cpu it passes wherever the project's dependencies are installed. The online load
benchmark's steady-state rate and per-run answer budget, and the offline one's storage count on both backends."""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def _preflight(tmp_path, *args) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path / "preflight.json"
    proc = subprocess.run([str(REPO / "bench" / "gpu_check.sh"), "--preflight-only", "--out", str(out), *args],
                          env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True, timeout=300)
    return proc, out


def test_gpu_check_says_what_is_missing_for_cuda(tmp_path):
    proc, out = _preflight(tmp_path, "--device", "cuda")
    if torch.cuda.is_available():
        assert proc.returncode == 0, proc.stderr
        assert json.loads(out.read_text())["gpu"]
    else:
        assert proc.returncode == 3 and not out.exists()
        expected = "is CPU-only" if torch.version.cuda is None else "sees none"
        assert "MISSING: a" in proc.stderr and expected in proc.stderr and torch.__version__ in proc.stderr


def test_gpu_check_preflight_passes_on_cpu_here(tmp_path):
    proc, out = _preflight(tmp_path, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    found = json.loads(out.read_text())
    assert found["missing"] == [] and found["device"] == "cpu" and found["ray"] == "2.60.0"


def test_gpu_check_refuses_an_unknown_device(tmp_path):
    proc, _ = _preflight(tmp_path, "--device", "tpu")
    assert proc.returncode == 2 and "cuda or cpu" in proc.stderr


def test_serve_load_rate_leaves_out_the_ramp_and_the_drain():
    sys.path.insert(0, str(REPO / "bench"))
    from serve_load import steady_rate
    # 4 clients, batches of 4 answered every second; issuing stopped at 5.5 s, then two small drain batches
    done = [1.0] * 4 + [2.0] * 4 + [3.0] * 4 + [4.0] * 4 + [5.0] * 4 + [7.0] * 2 + [9.0]
    assert steady_rate(done, 4, 5.5) == 4.0            # answers/wall would say 23 / 9 s
    assert steady_rate([1.0, 2.0], 8, 9.0) == 1.0       # no second round: answers over their span


def test_serve_load_rounds_size_each_run_by_its_clients():
    sys.path.insert(0, str(REPO / "bench"))
    from serve_load import MIN_ANSWERS, answers_per_run, parse_args
    args = parse_args(["--requests", "96", "--rounds", "3"])
    assert [answers_per_run(args, c) for c in (1, 8, 32, 64)] == [MIN_ANSWERS, 24, 96, 96]
    assert answers_per_run(parse_args(["--requests", "40"]), 1) == 40     # without --rounds: --requests


def test_storage_cost_counts_the_commit_on_both_backends(store):
    """The storage-call count wraps the filesystem `contracts` writes through: it must offer every method the
    commit uses (it once lacked `invalidate_cache`, which the S3 commit calls, and the full benchmark died)."""
    sys.path.insert(0, str(REPO / "bench"))
    from batch_throughput import storage_cost
    from builders import make_result
    fs, _ = store.resolve()
    results = [make_result(image=b"scan %d" % i, seed=i) for i in range(2)]
    cost = storage_cost(results, store.root, fs)
    assert cost["storage_requests"] == 2
    assert cost["storage_calls_per_request"] >= cost["minimum_calls_per_request"] == 5
    assert cost["storage_bytes_written_per_request"] >= cost["minimum_bytes_per_request"] > 0
