"""Can the data keep a training device busy? Batches/s made in-process and by worker processes, against the
model's training steps/s for the same config, measured in one run.

    .venv/bin/python bench/training_data.py [--config training/recipes/gpu.json] [--device cpu]
                                            [--workers 0 4 12] [--batches 64]

Writes bench/results/training_data.json. On a GPU, `data_over_model` < 1 for the in-process row means the
run would be data-bound: train with `digitise train --data-workers N` for an N whose row is above 1.
"""
import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import torch

from digitiser.model import Segmenter
from digitiser.train import batches, load_config, seg_loss

OUT = Path(__file__).parent / "results" / "training_data.json"


def data_rate(cfg, workers: int, n: int) -> float:
    """Batches/s over n batches, after the first (worker start-up is not the steady state)."""
    it = batches(dataclasses.replace(cfg, steps=n + 1), 0, workers)
    next(it)
    t = time.perf_counter()
    for _ in it:
        pass
    return n / (time.perf_counter() - t)


def model_rate(cfg, device: str, n: int) -> float:
    """Training steps/s (forward, backward, AdamW) on one fixed batch."""
    model = Segmenter(cfg.model).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    x, y = next(batches(dataclasses.replace(cfg, steps=1), 0))
    x, y = x.to(device), y.to(device)

    def step():
        loss = seg_loss(model(x), y, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up: kernel selection, allocations
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return n / (time.perf_counter() - t)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="training/recipes/gpu.json")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--workers", type=int, nargs="+", default=[0, max((os.cpu_count() or 2) - 1, 1)])
    p.add_argument("--batches", type=int, default=64)
    p.add_argument("--steps", type=int, default=None, help="model steps timed (default: 100 on a GPU, 5 on CPU)")
    args = p.parse_args()
    cfg = load_config(args.config)
    torch.set_num_threads(cfg.threads)
    steps = args.steps or (100 if args.device.startswith("cuda") else 5)
    model = model_rate(cfg, args.device, steps)
    print(f"model: {model:.2f} training steps/s on {args.device}", flush=True)
    rows = []
    for w in args.workers:
        rate = data_rate(cfg, w, args.batches)
        rows.append({"workers": w, "batches_per_s": rate, "data_over_model": rate / model})
        print(f"data, {w} workers: {rate:.1f} batches/s = {rate / model:.1f}x the model's rate", flush=True)
    result = {"config": args.config, "batch": cfg.batch_size, "crop": list(cfg.crop),
              "scans_per_step": cfg.scans_per_step, "scan_reuse": cfg.scan_reuse, "model": dataclasses.asdict(cfg.model),
              "device": args.device, "torch_threads": cfg.threads, "cpus": os.cpu_count(),
              "cpu": platform.processor() or platform.machine(), "model_steps_per_s": model, "data": rows}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
