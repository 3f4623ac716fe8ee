"""The conversion job on Ray Data: `convert(JobConfig) -> JobSummary` (`digitise batch` in cli/ calls it).

Pipeline (all streaming; one row per listed scan):

  ListScans          one read task walks SRC lazily, pages of `batch_size` rows {source, sidecar, size}
  -> prepare_batch   tasks: read bytes + sidecar, calibration, request id, skip if committed, decode check
  -> DigitiseBatch   actor pool (`replicas` actors, `num_gpus` each): segment the batch, trace each scan
                     and hand it on at once; two batches per actor, so tracing one overlaps the next's forward
  -> commit_batch    tasks of COMMIT_ROWS rows: contracts.commit (overlapping the rest of the batch)
  -> driver          ledger rows (streamed to a temp Parquet file), counts, progress (log lines, callback)

Resuming is the same job run again: request ids depend only on the scan bytes, calibration, model and tracer,
so whatever a killed run committed is skipped before decoding; whatever it half-wrote has no manifest and is
overwritten by the commit protocol.
"""
import logging
import time
from collections.abc import Callable

import ray

import contracts
from batch_jobs.config import FAILED, JobAborted, JobConfig, JobError, JobSummary, new_job_id
from batch_jobs.ledger import LedgerWriter
from batch_jobs.listing import SCAN_EXTENSIONS, ScanListingDatasource, iter_scans, open_fs
from batch_jobs.stages import DigitiseBatch, commit_batch, prepare_batch

log = logging.getLogger(__name__)

# The listing task mostly waits: on storage, or paused by Ray Data's backpressure until the actors catch up,
# which on a large archive is the whole job. A small share keeps it from holding a CPU others could use.
LISTING_CPUS = 0.1
# Scans per commit task: small, so the commits of a segmenter batch overlap its tracing and the job's tail after
# the last batch is a few commits long.
COMMIT_ROWS = 4
# Batches in a segmenter actor at once: one in the model while the other is traced (stages.DigitiseBatch).
ACTOR_CALLS = 2


def convert(config: JobConfig, on_progress: Callable[[JobSummary], None] | None = None) -> JobSummary:
    """Convert every scan under config.src into committed results under config.dst; returns the counts.
    on_progress(summary) is called on the driver after every finished batch (a progress bar; must be quick).
    Needs Ray (an initialised one, or Ray Data starts a local one). Per-scan problems only count as failures.
    Raises JobError (nothing ran) when the source, default calibration or weights are unusable, and
    JobAborted (ledger written, summary attached) when the pipeline itself fails."""
    job_id = config.job_id or new_job_id()
    src_fs, src_root = _source(config.src)
    dst_fs, dst_base, exclude = _destination(config.dst, src_fs)
    default_calibration = _default_calibration(config.default_calibration)
    qc = _qc_folder(config.qc_dir, dst_fs, dst_base)
    model_version, tracing, colour = _identity(config)
    summary = JobSummary(job_id, src_fs.unstrip_protocol(src_root), dst_fs.unstrip_protocol(dst_base),
                         model_version)
    dst = summary.dst   # absolute URI: workers may run in another working directory
    ds = _pipeline(config, src_fs, src_root, exclude, dst, dst_fs, (model_version, tracing), colour,
                   default_calibration, qc)
    log.info("job %s: %s -> %s, model %s, %s replica(s), batch %d", job_id, summary.src, summary.dst,
             model_version[:12], config.replicas, config.batch_size)
    _warn_if_short_of_gpus(config)
    meta = {"job_id": job_id, "src": summary.src, "dst": summary.dst, "model_version": model_version,
            "tracing": tracing,
            "limit": config.limit, "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    t0 = time.monotonic()
    with LedgerWriter(meta) as ledger:
        try:
            _drain(ds, ledger, summary, t0, config.progress_every_s, on_progress)
        except BaseException as e:   # the ledger is written also when the job fails or is interrupted
            summary.elapsed_s = time.monotonic() - t0
            summary.ledger = _publish_after_failure(ledger, dst, dst_fs, job_id)
            if isinstance(e, Exception):
                raise JobAborted(summary, f"job {job_id} stopped after {summary.listed} scans: "
                                          f"{type(e).__name__}: {e}") from e
            raise
        summary.elapsed_s = time.monotonic() - t0
        t1 = time.monotonic()
        summary.ledger = ledger.publish(dst, dst_fs, job_id)
        summary.ledger_s += time.monotonic() - t1
    if summary.listed == 0:
        log.warning("no scans (%s) found under %s", " ".join(SCAN_EXTENSIONS), summary.src)
    log.info("job %s done: %d listed, %d committed, %d skipped, %d failed in %.1f s", job_id, summary.listed,
             summary.committed, summary.skipped, summary.failed, summary.elapsed_s)
    return summary


def count_scans(config: JobConfig) -> int:
    """How many scans `convert(config)` will list: one more walk of the source (for a progress bar's total;
    the job itself never holds the listing). Raises JobError like `convert` when the source is unusable."""
    src_fs, src_root = _source(config.src)
    exclude = _destination(config.dst, src_fs)[2]
    return sum(1 for _ in iter_scans(src_fs, src_root, exclude=exclude, limit=config.limit))


def _destination(dst: str, src_fs):
    """(fs, base path, folders the listing must not enter): a results root inside the source is skipped."""
    dst_fs, dst_base = contracts.filesystem(dst, open_fs(dst)[0])
    return dst_fs, dst_base, (dst_base,) if type(dst_fs).protocol == type(src_fs).protocol else ()


def _pipeline(config: JobConfig, src_fs, src_root, exclude, dst, dst_fs, identity, colour, default_calibration, qc):
    model_version, tracing = identity
    listing = ScanListingDatasource(src_fs, src_root, exclude=exclude, limit=config.limit, page=config.batch_size)
    ds = ray.data.read_datasource(listing, override_num_blocks=1, num_cpus=LISTING_CPUS)
    # Ray Data packs a step's output rows into blocks of up to target_max_block_size bytes (128 MiB) before
    # handing them on: the listing's pages (a few KiB) would wait for thousands more. At 1 byte every row leaves
    # its step at once (as a one-row block) and each step's batch_size gathers the rows it works on.
    ds.context.target_max_block_size = 1
    # I/O-bound tasks; CPUs other than the actor's also keep Ray from fusing prepare into the actor stage
    # (fused, reading and decoding would run serially inside the segmenter actor)
    io = {"num_cpus": config.io_cpus}
    return (ds.map_batches(prepare_batch, batch_size=config.batch_size, batch_format="pyarrow", **io,
                         fn_kwargs={"src_fs": src_fs, "dst": dst, "dst_fs": dst_fs, "model_version": model_version,
                                    "tracing": tracing, "colour": colour,
                                    "default_calibration": default_calibration})
            .map_batches(DigitiseBatch, batch_size=config.batch_size, batch_format="pyarrow",
                         compute=_actor_pool(config),
                         num_cpus=config.cpus_per_replica, num_gpus=config.num_gpus,
                         fn_constructor_kwargs={"weights": str(config.weights_path.resolve()),
                                               "model_version": model_version, "qc": qc is not None,
                                               "device": config.actor_device,
                                               "tracers": int(config.cpus_per_replica)})
            .map_batches(commit_batch, batch_size=min(COMMIT_ROWS, config.batch_size), batch_format="pyarrow", **io,
                         fn_kwargs={"dst": dst, "dst_fs": dst_fs, "qc": qc}))


def _actor_pool(config: JobConfig) -> ray.data.ActorPoolStrategy:
    """A fixed pool, or an autoscaling one: Ray Data adds an actor while batches queue and removes idle ones,
    and actors waiting for resources are demands the cluster autoscaler launches nodes for."""
    lo, hi = config.pool_size
    calls = {"max_concurrent_calls_per_actor": ACTOR_CALLS, "enable_true_multi_threading": True}
    if lo == hi:
        return ray.data.ActorPoolStrategy(size=lo, **calls)
    return ray.data.ActorPoolStrategy(min_size=lo, max_size=hi, **calls)


def _drain(ds, ledger: LedgerWriter, summary: JobSummary, t0: float, every_s: float, on_progress):
    last = time.monotonic()
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        t1 = time.monotonic()
        if summary.listed == 0:
            summary.first_result_s = t1 - t0
        ledger.append(batch)
        summary.ledger_s += time.monotonic() - t1
        for source, status, kind, message in zip(*(batch.column(c).to_pylist() for c in
                                                   ("source", "status", "error_kind", "error_message"))):
            summary.count(status, source, kind, message)
            if status == FAILED:
                log.warning("failed %s: [%s] %s", source, kind, message)
        if on_progress is not None:
            on_progress(summary)
        if time.monotonic() - last >= every_s:
            last = time.monotonic()
            log.info("progress: %d done (%d committed, %d already done, %d failed), %.2f scans/s",
                     summary.listed, summary.committed, summary.skipped, summary.failed,
                     summary.listed / (last - t0))


def _warn_if_short_of_gpus(config: JobConfig):
    need = config.num_gpus * config.pool_size[0]
    have = ray.cluster_resources().get("GPU", 0.0) if ray.is_initialized() else need
    if need > have:
        log.warning("the job asks for %g GPU(s) (%d replicas x %g) but the cluster has %g now: the segmenter "
                    "actors wait until an autoscaler adds them; pass --num-gpus 0 to run on CPUs", need,
                    config.pool_size[0], config.num_gpus, have)


def _publish_after_failure(ledger: LedgerWriter, dst: str, dst_fs, job_id: str) -> str | None:
    try:
        return ledger.publish(dst, dst_fs, job_id)
    except Exception:   # keep the job's own error; this one is logged
        log.exception("could not write the ledger of job %s", job_id)
        return None


def _source(src: str):
    fs, root = open_fs(src)
    try:
        exists = fs.exists(root)
    except Exception as e:   # credentials, endpoint, permissions: say so before starting anything
        raise JobError(f"cannot reach the source {src}: {type(e).__name__}: {e}") from e
    if not exists:
        raise JobError(f"the source {src} does not exist: pass a folder, file:// or s3://bucket/prefix of scans")
    return fs, root


def _qc_folder(url: str | None, dst_fs, dst_base: str) -> tuple | None:
    """(filesystem, folder) for QC overlays, or None. Raises JobError when it lies inside the results root
    (overlays are not part of the contract, and audits would not know them)."""
    if url is None:
        return None
    fs, path = open_fs(url)
    same_store = type(fs).protocol == type(dst_fs).protocol
    if same_store and (path == dst_base or path.startswith(dst_base.rstrip("/") + "/")):
        raise JobError(f"--qc {url} lies inside the results root {dst_base}: put overlays elsewhere")
    return fs, path


def _default_calibration(url: str | None) -> dict | None:
    """The --default-calibration JSON, normalised, or None. Raises JobError naming the file."""
    if url is None:
        return None
    fs, path = open_fs(url)
    try:
        raw = contracts.loads_strict(fs.cat_file(path))
        return contracts.Calibration.from_dict(raw).to_dict()
    except (OSError, ValueError) as e:   # missing file, bad JSON, ContractViolation
        raise JobError(f"default calibration {url} is unusable ({type(e).__name__}: {e}); "
                       "pass a calibration JSON file (contract v2)") from e


def _identity(config: JobConfig) -> tuple[str, dict, bool]:
    """Load the weights once on the driver (CPU): a preflight that fails fast, the model version and tracing
    parameters the request ids are keyed by (every actor checks it loads the same), and whether the segmenter
    reads colour (else colour files are decoded to grey only: a third of the pixels to pass on)."""
    from digitiser import CheckpointError, Digitiser
    try:
        digitiser = Digitiser(config.weights_path, device="cpu")
        return digitiser.model_version, digitiser.tracing.to_dict(), digitiser.reads_colour
    except CheckpointError as e:
        raise JobError(str(e)) from e
