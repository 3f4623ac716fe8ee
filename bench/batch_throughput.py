"""End-to-end throughput of the offline route vs the raw batched segmenter, measured in the same run.

    .venv/bin/python bench/batch_throughput.py [--n 200] [--height 800 --width 256] [--replicas 1] ...
    (or: digitise bench bench/batch_throughput.py --n 96)

1. Renders N synthetic scans (clean style, fixed size unless --random-sizes) with calibration sidecars into
   a fresh temporary archive.
2. Raw: decodes them all, then times `Digitiser.segment` on batches of --batch-size, with torch on
   --cpus-per-replica threads (what one segmenter actor gets), times --replicas: the ceiling for the job.
3. End to end: `batch_jobs.convert` on a local Ray into a fresh results root (listing, reading, validation,
   segmentation, tracing, commit, ledger; actor start-up included).
Writes bench/results/batch_throughput.json and appends a markdown table row to bench/results/batch_throughput.md.
"""
import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200, help="synthetic scans")
    p.add_argument("--height", type=int, default=800)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--random-sizes", action="store_true", help="synth's random sizes (300-4000 x 100-800 px)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--cpus-per-replica", type=float, default=1.0)
    p.add_argument("--num-gpus", type=float, default=0.0)
    p.add_argument("--weights", help="segmenter weights (default: the shipped weights)")
    p.add_argument("--address", help="Ray address (default: a local Ray on loopback)")
    p.add_argument("--out", default=str(RESULTS / "batch_throughput.json"))
    return p.parse_args(argv)


def render_archive(folder: Path, args) -> int:
    """Write the scans and sidecars; returns their total pixels."""
    from digitiser.synth import render_scan, scan_seed
    pixels = 0
    for i in range(args.n):
        size = {} if args.random_sizes else {"height": args.height, "width": args.width}
        scan = render_scan(scan_seed(args.seed, i), style="clean", **size)
        (folder / f"scan_{i:05d}.{scan.ext}").write_bytes(scan.encoded)
        (folder / f"scan_{i:05d}.json").write_text(json.dumps(scan.calibration))
        pixels += scan.image.shape[0] * scan.image.shape[1]
    return pixels


def raw_throughput(folder: Path, args) -> dict:
    """Images/s of Digitiser.segment alone on the decoded scans, batches of --batch-size, one replica's threads."""
    import torch
    from digitiser import Digitiser, decode_scan
    torch.set_num_threads(max(1, int(args.cpus_per_replica)))
    digitiser = Digitiser(args.weights)
    grays = [decode_scan(p.read_bytes()).gray for p in sorted(folder.glob("scan_*")) if p.suffix != ".json"]
    digitiser.segment(grays[:1])   # warm-up (allocator, oneDNN kernels)
    t0 = time.perf_counter()
    for i in range(0, len(grays), args.batch_size):
        digitiser.segment(grays[i:i + args.batch_size])
    seconds = time.perf_counter() - t0
    return {"raw_s": seconds, "raw_images_per_s_per_replica": len(grays) / seconds,
            "torch_threads": torch.get_num_threads(), "device": str(digitiser.device),
            "model_version": digitiser.model_version}


def end_to_end(folder: Path, dst: Path, args) -> dict:
    import cluster
    from batch_jobs import JobConfig, convert
    cluster.connect(args.address)
    config = JobConfig(str(folder), str(dst), batch_size=args.batch_size, replicas=args.replicas,
                       num_gpus=args.num_gpus, cpus_per_replica=args.cpus_per_replica, weights=args.weights)
    s = convert(config)
    return {"e2e_s": s.elapsed_s, "e2e_images_per_s": s.scans_per_s, "listed": s.listed,
            "committed": s.committed, "failed": s.failed, "failure_kinds": sorted({f.kind for f in s.failures})}


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="batch-bench-") as tmp:
        src, dst = Path(tmp) / "archive", Path(tmp) / "results"
        src.mkdir()
        pixels = render_archive(src, args)
        raw = raw_throughput(src, args)
        e2e = end_to_end(src, dst, args)
    ceiling = raw["raw_images_per_s_per_replica"] * args.replicas
    result = {"bench": "batch_throughput", "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "host": platform.node(), "cpus": os.cpu_count(), "n": args.n, "mean_megapixels": pixels / args.n / 1e6,
              "size": "random" if args.random_sizes else f"{args.height}x{args.width}",
              "batch_size": args.batch_size, "replicas": args.replicas, "cpus_per_replica": args.cpus_per_replica,
              "num_gpus": args.num_gpus, **raw, **e2e, "raw_ceiling_images_per_s": ceiling,
              "ratio_e2e_to_raw": e2e["e2e_images_per_s"] / ceiling}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    row = (f"| {result['date_utc']} | {args.n} x {result['size']} | {args.replicas} x {args.cpus_per_replica:g} CPU"
           f"{f' + {args.num_gpus:g} GPU' if args.num_gpus else ''} | batch {args.batch_size} | "
           f"{result['e2e_images_per_s']:.2f} img/s e2e | {ceiling:.2f} img/s raw segment | "
           f"{result['ratio_e2e_to_raw']:.0%} | {e2e['committed']}/{e2e['listed']} committed |")
    with open(out.with_suffix(".md"), "a") as f:
        f.write(row + "\n")
    print(json.dumps(result, indent=2))
    print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
