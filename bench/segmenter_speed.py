"""Segmenter inference speed on CPU (or GPU): seconds per 1000 x 300 px scan in batches of 16.

    .venv/bin/python bench/segmenter_speed.py [--repeats 5] [--device cpu]

Writes bench/results/segmenter_speed.json. Quote the ratio figures (tracing / segmenting), not absolute
seconds, when the machine is shared: both are measured in the same run.
"""
import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from digitiser import CurveNotFound, Digitiser, decode_scan
from digitiser.synth import render_scan
from digitiser.tracing import trace

OUT = Path(__file__).parent / "results" / "segmenter_speed.json"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    d = Digitiser(device=args.device)
    scans = [decode_scan(render_scan(1000 + i, height=1000, width=300).encoded) for i in range(16)]
    grays = [s.gray for s in scans]
    d.segment(grays[:2])  # warm-up (allocations, oneDNN kernel selection)
    seg = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        probs = d.segment(grays)
        seg.append((time.perf_counter() - t) / len(grays))
    traced = []   # seconds of each trace that found its curves; a failed trace stops early and would flatter
    for p_ in probs:
        t = time.perf_counter()
        try:
            trace(p_, d.tracing)
        except CurveNotFound:
            continue
        traced.append(time.perf_counter() - t)
    if not traced:
        raise SystemExit("no scan was traced: these weights find no curves on the benchmark scans")
    tracing = float(np.mean(traced))
    result = {"scan_px": [1000, 300], "batch": 16, "device": str(d.device), "threads": args.threads,
              "cpu": platform.processor() or platform.machine(), "repeats": args.repeats,
              "segment_s_per_scan_best": min(seg), "segment_s_per_scan_median": float(np.median(seg)),
              "trace_s_per_scan": tracing, "traced": f"{len(traced)}/{len(probs)}", "trace_over_segment": tracing / float(np.median(seg)),
              "target_s_per_scan": 0.3, "model_version": d.model_version}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
