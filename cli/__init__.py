"""The `digitise` command: the one entry point above every package (cli -> serve_app, batch_jobs, cluster ->
digitiser -> contracts). This module only declares the flags; cli/commands.py and cli/batch.py turn them into
the libraries' typed configs, call one function each, and do the printing.
"""
import argparse
import logging
import os
import sys

from cli import commands
from cli.batch import batch


def _replicas(text: str):
    """--replicas: an int, or the text ("auto", "MIN-MAX") for JobConfig to check."""
    return int(text) if text.isdigit() else text


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
    s.add_argument("--version", type=int, default=1, help="generator version (1-8; 1 is the held-out eval's)")
    s.set_defaults(func=commands.synth)

    s = sub.add_parser("foreign", help="render the foreign eval family (matplotlib plots of real LAS; never train on it)")
    s.add_argument("out")
    s.add_argument("--n", type=int, default=300)
    s.add_argument("--seed", type=int, default=2718)
    s.set_defaults(func=commands.foreign)

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

    s = sub.add_parser("grow", help="a deeper/wider (or colour) segmenter computing the same function, to fine-tune; "
                                    "or one that averages its reading of the mirror image")
    s.add_argument("weights", help="weights file to grow")
    s.add_argument("--levels", type=int, help="stride-2 levels (at least the current; default: the current)")
    s.add_argument("--max-width", type=int, help="channel cap (at least the current; default: the current)")
    s.add_argument("--colour", action="store_true", help="read B, G, R instead of grey (same function on grey)")
    s.add_argument("--context", type=int, help="dilated full-resolution context layers to add (to a network "
                                               "without them; default: as the weights)")
    s.add_argument("--mirror-average", choices=("on", "off"),
                   help="in eval, also read the left-right mirror image and average (twice the compute; "
                        "default: as the weights)")
    s.add_argument("--precision", choices=("float32", "bfloat16"),
                   help="eval-mode arithmetic of the convs (bfloat16: twice as fast on a CPU with AVX-512 BF16 "
                        "or AMX; default: as the weights)")
    s.add_argument("--seed", type=int, default=0, help="seeds the new channels' initial weights")
    s.add_argument("--out", required=True, help="where to write the grown weights (+ .json sidecar)")
    s.set_defaults(func=commands.grow)

    s = sub.add_parser("eval", help="evaluate on scans with ground truth")
    s.add_argument("dir")
    s.add_argument("--weights", help="weights file (default: the shipped weights)")
    s.add_argument("--json", help="write the report here")
    s.add_argument("--qc", help="folder for QC overlays of the worst scans")
    s.add_argument("--perfect-segmenter", action="store_true",
                   help="trace the truth masks instead of the segmenter's output: the tracer's own floor")
    s.add_argument("--tracing", action="append", default=[], metavar="NAME=VALUE",
                   help="a tracing parameter other than its default (repeatable; the names of TracingParams, as "
                        "serve's `tracing` config takes them), e.g. --tracing min_prob=0.3")
    s.add_argument("--sweep", metavar="NAME=V1,V2,...",
                   help="evaluate once per value of one tracing parameter, the scans segmented once: one line each "
                        "(refusals beside errors), and with --json one report each (report.NAME=V.json), "
                        "e.g. --sweep min_prob=0.3,0.45,0.55")
    s.add_argument("--probs-cache", metavar="DIR",
                   help="keep the segmenter's probabilities of each scan in DIR and read them from there next time "
                        "(exact; keyed by model, tiling, device and pixels): a tracer change is measured in tracing's time")
    s.set_defaults(func=commands.evaluate)

    s = sub.add_parser("compare", help="compare eval reports of one folder on the scans both read (paired)")
    s.add_argument("base", help="a `digitise eval --json` report")
    s.add_argument("other", nargs="+", help="reports of the same folder to compare with it")
    s.set_defaults(func=commands.compare)

    s = sub.add_parser("batch", help="convert an archive: SRC listing -> DST results root (Ray Data)")
    s.add_argument("src", help="folder, file:// or s3://bucket/prefix with scans")
    s.add_argument("dst", help="results root: folder, file:// or s3://bucket/prefix")
    s.add_argument("--batch-size", type=int, help="scans per segmenter call (default: the most, 16)")
    s.add_argument("--replicas", type=_replicas, default=1,
                   help="segmenter actors: N, MIN-MAX (an autoscaling pool) or auto (1-8, follows the cluster)")
    s.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per segmenter actor")
    s.add_argument("--cpus-per-replica", type=float,
                   help="CPUs per segmenter actor (default 1); with 2 or more it traces in that many processes: "
                        "beside a GPU, give it the node's CPUs less a few for reading and committing")
    s.add_argument("--limit", type=int, help="convert at most K scans")
    s.add_argument("--default-calibration", help="calibration JSON for scans without a sidecar")
    s.add_argument("--weights", help="segmenter weights file (default: the shipped weights)")
    s.add_argument("--device", help="segmenter actors' torch device (default: cuda with --num-gpus > 0, else cpu)")
    s.add_argument("--address", help="Ray cluster address (default: start a local one)")
    s.add_argument("--qc", help="folder for a QC overlay per converted scan (outside DST)")
    s.set_defaults(func=batch)

    s = sub.add_parser("qc", help="draw a committed result over its scan (a QC overlay PNG)")
    s.add_argument("scan", help="the scan file")
    s.add_argument("calibration", help="its calibration JSON (the request's)")
    s.add_argument("root", help="results root holding the committed result")
    s.add_argument("-o", "--out", required=True, help="overlay PNG to write")
    s.add_argument("--weights", help="segmenter weights the result was made with (default: the shipped ones)")
    s.set_defaults(func=commands.qc)

    s = sub.add_parser("serve", help="run the HTTP endpoint on Ray Serve until interrupted")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--store", default="results/serve", help="results root")
    s.add_argument("--replicas", type=int, default=1)
    s.add_argument("--num-gpus", type=float, default=0.0)
    s.add_argument("--max-batch-size", type=int, help="scans per segmenter batch (default: the most, 16)")
    s.add_argument("--weights", help="segmenter weights file (default: the shipped weights)")
    s.add_argument("--device", help="cpu or cuda (default: cuda when the replica has a GPU)")
    s.add_argument("--auth-token-file", help="file holding the bearer token every route but /healthz requires")
    s.add_argument("--insecure", action="store_true", help="allow a non-loopback --host without a token")
    s.add_argument("--address", help="deploy onto this existing Ray cluster (default: start a local one)")
    s.set_defaults(func=commands.serve)

    s = sub.add_parser("bench", help="run a benchmark script from bench/")
    s.add_argument("script")
    s.add_argument("rest", nargs=argparse.REMAINDER)
    s.set_defaults(func=commands.bench)

    s = sub.add_parser("cluster", help="the Ray cluster").add_subparsers(dest="action", required=True)
    s = s.add_parser("status", help="nodes, Serve apps and queues, running jobs, pending resource demands")
    s.add_argument("--address", default="auto", help="Ray cluster address (default: the one on this machine)")
    s.add_argument("--json", action="store_true", help="machine-readable snapshot")
    s.set_defaults(func=commands.cluster_status)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("lasio").setLevel(logging.WARNING)  # it logs INFO on every read of a LAS with hyphens
    try:
        return args.func(args)
    except BrokenPipeError:   # stdout closed early (`digitise compare ... | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # so the exit's flush cannot fail again
        return 0

