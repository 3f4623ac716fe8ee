"""`digitise batch`: flags -> JobConfig -> `batch_jobs.convert`, with one progress bar and Ray kept quiet.

Ray (its workers' output, Ray Data's progress bars, the core worker's own log lines) writes to this process's
stdout/stderr at the file-descriptor level. Unless --verbose, both descriptors point at a log file named at
the start for the whole job; the terminal gets the progress bar and the summary only.
"""
import contextlib
import os
import sys
import threading
import time
from pathlib import Path

from cli.commands import error, given


def batch(args) -> int:
    """Exit 0: every listed scan is committed (now or before); 1: some scans failed (listed, with the
    ledger's location); 2: the job could not start."""
    from batch_jobs import JobConfig
    try:
        config = JobConfig(src=args.src, dst=args.dst, replicas=args.replicas, num_gpus=args.num_gpus,
                           limit=args.limit, default_calibration=args.default_calibration, weights=args.weights,
                           qc_dir=args.qc, device=args.device, **given(args, "batch_size", "cpus_per_replica"))
    except ValueError as e:
        error("batch", e)
        return 2
    log_file = None if args.verbose else _log_path()
    if log_file:
        print(f"digitise batch: Ray's logs go to {log_file} (`digitise -v batch ...` shows them here)", file=sys.stderr)
    with _output_to(log_file) as terminal:
        summary, problem = _run(config, args.address, terminal, quiet=log_file is not None)
    if problem:
        error("batch", problem)
    if summary is None:
        return 2
    print(summary.format())
    if problem:
        print("digitise batch: run the same command again to resume", file=sys.stderr)
        return 1
    if summary.ok:
        return 0
    print(f"{summary.failed} of {summary.listed} scans failed; fix them and run the same command again "
          "(committed scans are skipped)")
    return 1


def _run(config, address, terminal, quiet: bool):
    """(summary or None, error message or None)."""
    import ray
    from tqdm import tqdm

    import cluster
    from batch_jobs import JobAborted, JobError, convert
    if quiet:
        ray.data.DataContext.get_current().enable_progress_bars = False
    cluster.connect(address)
    bar = tqdm(desc="scans", unit="scan", file=terminal, dynamic_ncols=True)
    threading.Thread(target=_set_total, args=(bar, config), daemon=True).start()
    try:
        return convert(config, on_progress=lambda s: _update(bar, s)), None
    except JobError as e:
        return None, str(e)
    except JobAborted as e:
        return e.summary, str(e)
    finally:
        bar.close()
        ray.shutdown()


def _set_total(bar, config):
    """Count the source beside the job, so the bar gets a total and an ETA without delaying the start."""
    from batch_jobs import count_scans
    try:
        bar.total = count_scans(config)
    except Exception:   # the job itself reports an unusable source
        return
    bar.refresh()


def _update(bar, summary):
    bar.update(summary.listed - bar.n)
    bar.set_postfix({"committed": summary.committed, "skipped": summary.skipped, "failed": summary.failed},
                    refresh=False)


def _log_path() -> Path:
    folder = Path(os.environ.get("DIGITISE_LOG_DIR", "runs/logs"))
    folder.mkdir(parents=True, exist_ok=True)
    return (folder / time.strftime("batch-%Y%m%dT%H%M%SZ.log", time.gmtime())).resolve()


@contextlib.contextmanager
def _output_to(log_file: Path | None):
    """Point fds 1 and 2 at log_file (None: leave them); yields a text stream on the original stderr."""
    if log_file is None:
        yield sys.stderr
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(saved[1]), "w", buffering=1)
    with open(log_file, "ab") as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
    try:
        yield terminal
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, old in zip((1, 2), saved):
            os.dup2(old, fd)
            os.close(old)
        terminal.close()
