"""One function per `digitise` subcommand: flags -> typed config -> one library call; printing happens here.

Imports are lazy so that `digitise audit` does not pay for torch and `digitise synth` does not pay for Ray.
"""
import logging
import os
import sys


def error(command: str, message) -> None:
    print(f"digitise {command}: {message}", file=sys.stderr)


def given(args, *names) -> dict:
    """{name: value} of the flags among `names` that were given (None: leave the config's own default)."""
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


def audit(args) -> int:
    import json
    import contracts
    report = contracts.audit(args.root)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format_table())
    return 0 if report.ok else 1


def synth(args) -> int:
    from digitiser import synth
    try:
        synth.write_dataset(args.out, n=args.n, seed=args.seed, version=args.version)
    except ValueError as e:
        error("synth", e)
        return 2
    return 0


def foreign(args) -> int:
    from foreign import write_dataset
    write_dataset(args.out, n=args.n, seed=args.seed)
    return 0


def train(args) -> int:
    from digitiser import checkpoint, train
    try:
        config = train.load_config(args.config) if args.config else None
        train.run(args.out, config, resume=args.resume, data_workers=args.data_workers, export=args.export)
    except (train.TrainConfigError, checkpoint.CheckpointError) as e:
        logging.getLogger("cli").error("%s", e)   # beside the training log lines it ends
        return 2
    return 0


def soup(args) -> int:
    from digitiser import checkpoint
    checkpoint.average_weights(args.weights, args.out)
    return 0


def grow(args) -> int:
    import dataclasses
    from digitiser import checkpoint
    from digitiser.model import grow
    model, version = checkpoint.load_segmenter(args.weights)
    config = dataclasses.replace(model.config, levels=args.levels or model.config.levels,
                                 max_width=args.max_width or model.config.max_width,
                                 in_channels=3 if args.colour else model.config.in_channels,
                                 context=model.config.context if args.context is None else args.context)
    if args.mirror_average:
        config = dataclasses.replace(config, mirror_average=args.mirror_average == "on")
    if args.precision:
        config = dataclasses.replace(config, precision=args.precision)
    try:
        bigger = grow(model, config, seed=args.seed)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sha = checkpoint.save_weights(bigger, config, args.out)
    print(f"{args.out}: {bigger.num_params()} params, grown from {version[:12]}, model version {sha}")
    return 0


def evaluate(args) -> int:
    from digitiser import evaluate
    from digitiser.metrics import format_sweep, format_table
    from digitiser.tracing import TracingParams
    try:
        tracing = TracingParams.from_pairs(args.tracing)
        sweep = _sweep(args.sweep, args.tracing) if args.sweep else None
        if sweep and args.qc:
            raise ValueError("--qc draws one tracing's worst scans: run it without --sweep")
    except ValueError as e:
        error("eval", e)
        return 2
    if sweep:
        print(format_sweep(evaluate.run_sweep(args.dir, sweep, weights=args.weights, json_path=args.json,
                                              perfect_segmenter=args.perfect_segmenter,
                                              probs_cache=args.probs_cache)))
        return 0
    summary = evaluate.run(args.dir, weights=args.weights, json_path=args.json, qc_dir=args.qc,
                           perfect_segmenter=args.perfect_segmenter, tracing=tracing,
                           probs_cache=args.probs_cache)
    print(format_table(summary))
    return 0


def _sweep(spec: str, fixed: list[str]) -> dict:
    """"min_prob=0.3,0.45" (and the fixed --tracing pairs) -> {"min_prob=0.3": TracingParams, ...}."""
    from digitiser.tracing import TracingParams
    name, sep, values = spec.partition("=")
    labels = [f"{name.strip()}={v.strip()}" for v in values.split(",") if v.strip()]
    if not sep or not labels:
        raise ValueError(f"--sweep {spec!r}: expected NAME=V1,V2,... (a tracing parameter and its values)")
    if len(set(labels)) < len(labels):
        raise ValueError(f"--sweep {spec!r}: a value is given twice")
    return {label: TracingParams.from_pairs(fixed + [label]) for label in labels}


def compare(args) -> int:
    import json
    from pathlib import Path
    from digitiser.metrics import compare, format_comparison
    base = json.loads(Path(args.base).read_text())
    for path in args.other:
        try:
            print(format_comparison(compare(base, json.loads(Path(path).read_text())), args.base, path))
        except ValueError as e:
            error("compare", f"{path}: {e}")
            return 2
    return 0


def qc(args) -> int:
    import contracts
    from digitiser.qc import qc_request
    try:
        rid = qc_request(args.scan, args.calibration, args.root, args.out, weights=args.weights)
    except (contracts.NotCommitted, contracts.ContractViolation, OSError) as e:
        error("qc", e)
        return 1
    print(f"{args.out}: overlay of request {rid}")
    return 0


def serve_config(args):
    """ServeConfig from `digitise serve` flags; a local store path is made absolute (replicas do not share
    this process's working directory). Ray is loopback-only here (one machine), so the replicas' internal
    servers are too."""
    from serve_app import ServeConfig
    store = args.store if "://" in args.store else os.path.abspath(args.store)
    token_file = getattr(args, "auth_token_file", None)
    token = {"auth_token_file": os.path.abspath(token_file)} if token_file else {}
    return ServeConfig(store=store, replicas=args.replicas, num_gpus=args.num_gpus, loopback_only=True,
                       **given(args, "max_batch_size", "weights", "device"), **token)


def serve(args) -> int:
    from serve_app import serve_forever, serve_on_cluster
    try:
        config = serve_config(args)
    except ValueError as e:
        error("serve", e)
        return 2
    insecure = getattr(args, "insecure", False)
    if args.address:
        return serve_on_cluster(config, args.address, host=args.host, port=args.port, insecure=insecure)
    return serve_forever(config, host=args.host, port=args.port, insecure=insecure)


def bench(args) -> int:
    import runpy
    sys.argv = [args.script, *args.rest]
    sys.path.insert(0, os.path.dirname(os.path.abspath(args.script)))   # as `python SCRIPT` would: bench/common.py
    runpy.run_path(args.script, run_name="__main__")
    return 0


def cluster_status(args) -> int:
    import json
    import cluster
    snap = cluster.status(args.address)
    print(json.dumps(snap.to_dict(), indent=1) if args.json else cluster.format_snapshot(snap))
    return 0

