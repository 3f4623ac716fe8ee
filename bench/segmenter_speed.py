"""The model alone: images/s of the segmenter at several batch sizes, and tracing's time next to it.

    .venv/bin/python bench/segmenter_speed.py [--batch-sizes 1 4 16] [--repeats 3] [--device cpu|cuda] [--weights W]

On 16 clean 1000 x 300 px scans: `Digitiser.segment` in batches of each size (after a warm-up), then
`tracing.trace_track` on each scan's probabilities and grey pixels, as both routes trace (timed only where it
found the curves: a failed trace stops early). Writes --out (bench/results/segmenter_speed.json). Quote ratios
(batch 16 over batch 1, tracing over segmenting) when the machine is shared: both are measured in one run.
"""
import argparse
import json
import platform
import time
from pathlib import Path


from common import RESULTS


def add_args(p: argparse.ArgumentParser):
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--repeats", type=int, default=3, help="passes over the 16 scans per batch size (best kept)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--weights", default=None, help="weights file (default: the shipped weights)")
    p.add_argument("--bfloat16-kernels", action="store_true",
                   help="bfloat16 weights on bfloat16 kernels even where the device only emulates them (as before "
                        "2026-12-08), to compare with the float32 kernels chosen there")


def measure(args) -> dict:
    import torch

    from digitiser import CurveNotFound, Digitiser, decode_scan
    from digitiser.synth import render_scan
    from digitiser.tracing import trace_track
    if args.threads:
        torch.set_num_threads(args.threads)
    d = Digitiser(args.weights, device=args.device)
    d.model.bfloat16_kernels |= args.bfloat16_kernels
    scans = [decode_scan(render_scan(1000 + i, height=1000, width=300).encoded) for i in range(16)]
    grays = [d.pixels(scan) for scan in scans]
    d.segment(grays[:2])  # warm-up (allocations, kernel selection)
    rates = {}
    for b in args.batch_sizes:
        best = float("inf")
        for _ in range(args.repeats):
            t = time.perf_counter()
            for i in range(0, len(grays), b):
                d.segment(grays[i:i + b])
            if d.device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
        rates[str(b)] = len(grays) / best
    traced = []   # seconds of each trace that found its curves; a failed trace stops early and would flatter
    for p, scan in zip(d.segment(grays), scans):
        t = time.perf_counter()
        try:
            trace_track(p, scan.gray, d.tracing)   # as `build_result` traces: the grid's skew read too
        except CurveNotFound:
            continue
        traced.append(time.perf_counter() - t)
    if not traced:
        raise SystemExit("no scan was traced: these weights find no curves on the benchmark scans")
    trace_s = sum(traced) / len(traced)
    b_max = str(max(args.batch_sizes))
    return {"bench": "segmenter_speed", "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "scan_px": [1000, 300], "device": str(d.device), "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(), "repeats": args.repeats,
            "images_per_s": rates, "segment_s_per_scan": 1 / rates[b_max], "trace_s_per_scan": trace_s,
            "traced": f"{len(traced)}/{len(grays)}",
            "trace_over_segment": trace_s * rates[b_max],
            "batch_speedup": rates[b_max] / rates[str(min(args.batch_sizes))], "model_version": d.model_version,
            "precision": d.model.config.precision, "arithmetic": d.arithmetic}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_args(p)
    p.add_argument("--out", default=str(RESULTS / "segmenter_speed.json"))
    args = p.parse_args(argv)
    result = measure(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
