"""The `digitise` command: the one entry point above every package (cli -> serve_app, batch_jobs, cluster ->
digitiser -> contracts). This module only declares the flags; cli/commands.py and cli/batch.py turn them into
the libraries' typed configs, call one function each, and do the printing.
"""
import argparse
import logging

from cli import commands
from cli.batch import batch


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="digitise", description="Raster well-log digitisation.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("audit", help="ledger of every request under a results root")
    s.add_argument("root", help="results root: a folder, file:// or s3://bucket/prefix")
    s.add_argument("--json", action="store_true", help="machine-readable report")
    s.set_defaults(func=commands.audit)

    s = sub.add_parser("synth", help="render synthetic scans with calibration sidecars and ground truth")
    s.add_argument("out")
    s.add_argument("--n", type=int, default=100)
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=commands.synth)

    s = sub.add_parser("train", help="train the segmenter (seeded, resumable)")
    s.add_argument("--config", help="JSON file overriding TrainConfig fields")
    s.add_argument("--out", default="runs/train", help="run folder (checkpoints live here)")
    s.add_argument("--resume", action="store_true", help="continue from the run folder's last checkpoint")
    s.add_argument("--export", help="write the final weights here (e.g. digitiser/weights/segmenter.pt)")
    s.add_argument("--data-workers", type=int, default=0,
                   help="processes rendering batches ahead (for a GPU run; same weights as 0)")
    s.set_defaults(func=commands.train)

    s = sub.add_parser("soup", help="average fine-tunes of one segmenter into one weights file")
    s.add_argument("weights", nargs="+", help="weights files (same model config, same parent)")
    s.add_argument("--out", required=True, help="where to write the averaged weights (+ .json sidecar)")
    s.set_defaults(func=commands.soup)

    s = sub.add_parser("grow", help="a deeper/wider segmenter computing the same function, to fine-tune")
    s.add_argument("weights", help="weights file to grow")
    s.add_argument("--levels", type=int, required=True, help="stride-2 levels (at least the current)")
    s.add_argument("--max-width", type=int, required=True, help="channel cap (at least the current)")
    s.add_argument("--seed", type=int, default=0, help="seeds the new channels' initial weights")
    s.add_argument("--out", required=True, help="where to write the grown weights (+ .json sidecar)")
    s.set_defaults(func=commands.grow)

    s = sub.add_parser("eval", help="evaluate on scans with ground truth")
    s.add_argument("dir")
    s.add_argument("--weights", help="weights file (default: the shipped weights)")
    s.add_argument("--json", help="write the report here")
    s.add_argument("--qc", help="folder for QC overlays of the worst scans")
    s.set_defaults(func=commands.evaluate)

    s = sub.add_parser("batch", help="convert an archive: SRC listing -> DST results root (Ray Data)")
    s.add_argument("src", help="folder, file:// or s3://bucket/prefix with scans")
    s.add_argument("dst", help="results root: folder, file:// or s3://bucket/prefix")
    s.add_argument("--batch-size", type=int, help="scans per segmenter call (default: the most, 16)")
    s.add_argument("--replicas", type=int, default=1, help="segmenter actors")
    s.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per segmenter actor")
    s.add_argument("--limit", type=int, help="convert at most K scans")
    s.add_argument("--default-calibration", help="calibration JSON for scans without a sidecar")
    s.add_argument("--weights", help="segmenter weights file (default: the shipped weights)")
    s.add_argument("--address", help="Ray cluster address (default: start a local one)")
    s.set_defaults(func=batch)

    s = sub.add_parser("serve", help="run the HTTP endpoint on Ray Serve until interrupted")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--store", default="results/serve", help="results root")
    s.add_argument("--replicas", type=int, default=1)
    s.add_argument("--num-gpus", type=float, default=0.0)
    s.add_argument("--max-batch-size", type=int, help="scans per segmenter batch (default: the most, 16)")
    s.add_argument("--weights", help="segmenter weights file (default: the shipped weights)")
    s.add_argument("--device", help="cpu or cuda (default: cuda when the replica has a GPU)")
    s.set_defaults(func=commands.serve)

    s = sub.add_parser("bench", help="run a benchmark script from bench/")
    s.add_argument("script")
    s.add_argument("rest", nargs=argparse.REMAINDER)
    s.set_defaults(func=commands.bench)

    s = sub.add_parser("cluster", help="describe the Ray cluster (resources, nodes)")
    s.add_argument("--address", default="auto")
    s.set_defaults(func=commands.cluster)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("lasio").setLevel(logging.WARNING)  # it logs INFO on every read of a LAS with hyphens
    return args.func(args)

