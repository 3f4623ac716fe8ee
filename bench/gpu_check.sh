#!/usr/bin/env bash
# The GPU run, ready for when a machine with one CUDA GPU is lent (under 8 minutes there):
#   1. preflight: a CUDA-enabled torch and every other import this project needs; says exactly what is missing
#      and stops (exit 3) before running anything;
#   2. the tests that put work on the GPU (the Serve segmenter picks cuda when torch sees one; training on CUDA
#      is seeded and resumes to the same bytes);
#   3. the segmenter alone: images/s at batch 1, 4 and 16 (bench/segmenter_speed.py);
#   4. the offline job on 500 scans against the model's limit, one actor with the GPU (bench/batch_throughput.py);
#   5. the online route at 32 clients, batching 16 (bench/serve_load.py);
# and writes one JSON (--out, default bench/results/gpu_check.json) with every step's result and exit code.
#
#   bench/gpu_check.sh [--device cuda|cpu] [--out FILE] [--preflight-only]
#
# Runs from a copy of the working tree with no package registry: nothing is installed; PYTHON (default:
# .venv/bin/python if there, else python3) must already have the project's dependencies. `--device cpu` runs
# the same steps with small counts and CUDA hidden, so the script can be checked on any machine (bench/run.py
# does, and tests/test_bench.py checks the preflight).
set -u
cd "$(dirname "$0")/.."
DEVICE=cuda
OUT=bench/results/gpu_check.json
PREFLIGHT_ONLY=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --preflight-only) PREFLIGHT_ONLY=1; shift ;;
    *) echo "gpu_check: unknown argument $1 (use --device cuda|cpu, --out FILE, --preflight-only)" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in cuda|cpu) ;; *) echo "gpu_check: --device must be cuda or cpu, not $DEVICE" >&2; exit 2 ;; esac
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=$(command -v python3 || true); fi
fi
if [ -z "$PYTHON" ] || ! "$PYTHON" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  echo "gpu_check: MISSING: Python >= 3.11 (set PYTHON=/path/to/python)" >&2; exit 3
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" RAY_USAGE_STATS_ENABLED=0
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
if [ "$DEVICE" = cpu ]; then
  export CUDA_VISIBLE_DEVICES=""
  N_SCANS=24; REQUESTS=32; NUM_GPUS=0; REPEATS=1; TESTS="tests/test_predictor.py"; CPUS=1
else
  # the segmenter's CPUs trace beside the GPU (tracing costs ~10x its forward pass there); 4 left for the rest
  CPUS=$(( $(nproc) > 6 ? $(nproc) - 4 : 2 ))
  N_SCANS=500; REQUESTS=192; NUM_GPUS=1; REPEATS=3; TESTS="tests/test_predictor.py tests/test_model.py tests/test_serve.py tests/test_training.py::test_training_on_cuda_is_seeded_and_resumable"
fi

# 1. preflight ---------------------------------------------------------------------------------------------
"$PYTHON" - "$DEVICE" "$WORK/preflight.json" <<'EOF' || exit 3
import importlib, json, sys
device, out = sys.argv[1], sys.argv[2]
missing, info = [], {"python": sys.version.split()[0]}
try:
    import torch
    info.update(torch=torch.__version__, torch_cuda=torch.version.cuda)
    if device == "cuda":
        if torch.version.cuda is None:
            missing.append(f"a CUDA build of torch: torch {torch.__version__} is CPU-only (install the CUDA wheel "
                           "of torch==2.13.0 matching the driver, e.g. from download.pytorch.org/whl/cu128)")
        elif not torch.cuda.is_available():
            missing.append(f"a visible CUDA device: torch {torch.__version__} (CUDA {torch.version.cuda}) sees none "
                           "(check nvidia-smi, the driver version, CUDA_VISIBLE_DEVICES)")
        else:
            info.update(gpu=torch.cuda.get_device_name(0), gpus=torch.cuda.device_count())
except ImportError as e:
    missing.append(f"torch ({e})")
for module, package in [("ray", "ray[serve,data]==2.60.0"), ("ray.data", "ray[data]"), ("ray.serve", "ray[serve]"),
                        ("numpy", "numpy"), ("cv2", "opencv-python-headless"), ("pyarrow", "pyarrow"),
                        ("fsspec", "fsspec"), ("s3fs", "s3fs"), ("lasio", "lasio"), ("tifffile", "tifffile"),
                        ("multipart", "python-multipart"), ("fastapi", "fastapi"), ("pydantic", "pydantic"),
                        ("pytest", "pytest (test extra)"), ("moto", "moto[server] (test extra)"),
                        ("requests", "requests (test extra)"), ("hypothesis", "hypothesis (test extra)")]:
    try:
        importlib.import_module(module)
    except Exception as e:  # an ImportError, or a broken install
        missing.append(f"{package} (import {module}: {type(e).__name__}: {e})")
try:
    import ray
    info["ray"] = ray.__version__
    if ray.__version__ != "2.60.0":
        missing.append(f"ray 2.60.0 (found {ray.__version__})")
except ImportError:
    pass
from pathlib import Path
if not Path("digitiser/weights/segmenter.pt").exists():
    missing.append("the shipped weights digitiser/weights/segmenter.pt (copy the whole working tree)")
json.dump({"device": device, "missing": missing, **info}, open(out, "w"), indent=1)
for m in missing:
    print(f"gpu_check: MISSING: {m}", file=sys.stderr)
print(f"gpu_check: preflight {'ok' if not missing else 'FAILED'}: " + ", ".join(f"{k} {v}" for k, v in info.items()),
      file=sys.stderr)
sys.exit(3 if missing else 0)
EOF
[ "$PREFLIGHT_ONLY" = 1 ] && { mkdir -p "$(dirname "$OUT")"; cp "$WORK/preflight.json" "$OUT"; exit 0; }

# 2-5. the steps, each bounded in time (465 s in all, so the whole check ends within 8 minutes); a failing or
# timed-out step (exit code 124) is recorded and the next one runs -------------------------------------------
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  echo "gpu_check: $name ..." >&2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$WORK/$name.log" 2>&1
  echo "$? $((SECONDS - t0))" > "$WORK/$name.rc"
  tail -3 "$WORK/$name.log" >&2
}
step tests 150 "$PYTHON" -m pytest -q -x -p no:cacheprovider $TESTS
step segmenter_speed 45 "$PYTHON" bench/segmenter_speed.py --device "$DEVICE" --repeats "$REPEATS" \
  --out "$WORK/segmenter_speed.json"
step batch_job 180 "$PYTHON" bench/batch_throughput.py --n "$N_SCANS" --roots local --replicas 1 \
  --num-gpus "$NUM_GPUS" --cpus-per-replica "$CPUS" --naive-n 32 --out "$WORK/batch_job.json"
step serve_32 90 "$PYTHON" bench/serve_load.py --levels 32 --batch-sizes 16 --requests "$REQUESTS" \
  --max-seconds 60 --num-gpus "$NUM_GPUS" --segmenter-cpus "$CPUS" --device "$DEVICE" --out "$WORK/serve_32.json"

"$PYTHON" - "$WORK" "$OUT" <<'EOF'
import json, sys
from pathlib import Path
work, out = Path(sys.argv[1]), Path(sys.argv[2])
result = {"preflight": json.loads((work / "preflight.json").read_text())}
for name in ("tests", "segmenter_speed", "batch_job", "serve_32"):
    rc, seconds = (work / f"{name}.rc").read_text().split()
    log = (work / f"{name}.log").read_text().splitlines()
    step = {"exit_code": int(rc), "seconds": int(seconds), "log_tail": log[-5:]}
    if (work / f"{name}.json").exists():
        step["result"] = json.loads((work / f"{name}.json").read_text())
    result[name] = step
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps(result, indent=1) + "\n")
failed = [n for n in ("tests", "segmenter_speed", "batch_job", "serve_32") if result[n]["exit_code"] != 0]
print(f"gpu_check: wrote {out}; " + (f"FAILED steps: {', '.join(failed)}" if failed else "every step passed"),
      file=sys.stderr)
sys.exit(1 if failed else 0)
EOF
