"""What a conversion job is told (JobConfig) and what it reports (JobSummary). Plain data, no Ray."""
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path


# Ledger statuses, one per listed scan. "skipped": the request was already committed under DST (by an
# earlier job, or by a retried task of this one) and nothing was written for it.
COMMITTED, SKIPPED, FAILED = "committed", "skipped", "failed"
MAX_REPORTED_FAILURES = 1000   # the summary keeps this many; the ledger keeps every one
AUTO_MAX_REPLICAS = 8          # `replicas="auto"`: the segmenter actor pool grows from 1 up to this many


class JobError(Exception):
    """The job cannot start: the source is missing, the default calibration or the weights are unusable.
    The message says what was wrong and how to fix it. Per-scan problems are never a JobError: they become
    `failed` ledger rows."""


class JobAborted(Exception):
    """The job started but its pipeline stopped (a stage or the cluster failed, not a scan). `summary` counts
    what finished before; its ledger was written. Running the same job again resumes."""

    def __init__(self, summary: "JobSummary", message: str):
        super().__init__(message)
        self.summary = summary


@dataclass(frozen=True)
class JobConfig:
    """One archive conversion.

    src: folder, file:// or s3://bucket/prefix holding the scans (listed recursively; .png .jpg .jpeg .tif .tiff
        in any case). A scan's calibration is the sidecar `<stem>.json` next to it, else `default_calibration`,
        else the contract defaults.
    dst: results root (folder, file:// or s3://bucket/prefix); results go only through `contracts.commit`,
        the job's ledger to `<dst>/_ledger/<job_id>.parquet`.
    batch_size: scans per segmenter call (1..MAX_BATCH, 16). num_gpus: GPUs per actor.
    replicas: segmenter actors: N (a fixed pool), "MIN-MAX" (an autoscaling pool: Ray Data adds actors while
        work queues and the cluster, or its autoscaler, has room; removes them when idle), or "auto"
        ("1-AUTO_MAX_REPLICAS": the pool follows the cluster).
    cpus_per_replica: CPUs reserved per actor (torch uses that many threads); with 2 or more, the actor also
        traces in that many worker processes (beside a GPU tracing costs ~10x the forward pass).
    io_cpus: CPUs reserved per read/decode and per commit task (I/O bound; fractional lets several overlap).
    limit: list at most this many scans (in sorted walk order), None for all.
    default_calibration: path or URL of a calibration JSON for scans without a sidecar.
    weights: segmenter weights file (its `.json` sidecar next to it); None: the shipped weights.
    device: torch device of the segmenter actors; None: "cuda" when num_gpus > 0 (fails loudly on a node
        without CUDA), else "cpu".
    job_id: names the ledger; None: a UTC timestamp plus a random suffix.
    progress_every_s: seconds between progress log lines on the driver.
    qc_dir: folder (or URL) for one QC overlay PNG per scan this run converts, `<stem>-<request id>.qc.png`;
        must lie outside dst (overlays are not part of the contract). None: no overlays.
    """
    src: str
    dst: str
    batch_size: int = 16   # digitiser.MAX_BATCH, written out: importing digitiser's would load torch in the
    #                        job's I/O workers (tests/test_batch.py checks the two agree)
    replicas: int | str = 1
    num_gpus: float = 0.0
    cpus_per_replica: float = 1.0
    io_cpus: float = 0.5
    limit: int | None = None
    default_calibration: str | None = None
    weights: str | Path | None = None
    device: str | None = None
    job_id: str | None = None
    progress_every_s: float = 10.0
    qc_dir: str | None = None

    def __post_init__(self):
        from digitiser import MAX_BATCH   # here, not at import: the job's I/O workers never load torch
        problems = [msg for ok, msg in (
            (1 <= self.batch_size <= MAX_BATCH, f"batch_size must be 1..{MAX_BATCH}, got {self.batch_size}"),
            (_pool_size(self.replicas) is not None,
             f"replicas must be N >= 1, MIN-MAX with 1 <= MIN <= MAX, or auto; got {self.replicas!r}"),
            (self.num_gpus >= 0, f"num_gpus must be >= 0, got {self.num_gpus}"),
            (self.cpus_per_replica > 0, f"cpus_per_replica must be > 0, got {self.cpus_per_replica}"),
            (self.io_cpus > 0, f"io_cpus must be > 0, got {self.io_cpus}"),
            (self.limit is None or self.limit >= 0, f"limit must be >= 0, got {self.limit}"),
            (self.progress_every_s > 0, f"progress_every_s must be > 0, got {self.progress_every_s}"),
        ) if not ok]
        if problems:
            raise ValueError("invalid job config: " + "; ".join(problems))

    @property
    def pool_size(self) -> tuple[int, int]:
        """(min, max) segmenter actors; min == max for a fixed pool."""
        return _pool_size(self.replicas)

    @property
    def actor_device(self) -> str:
        return self.device or ("cuda" if self.num_gpus > 0 else "cpu")

    @property
    def weights_path(self) -> Path:
        from digitiser import DEFAULT_WEIGHTS
        return Path(self.weights) if self.weights is not None else DEFAULT_WEIGHTS


def _pool_size(replicas: int | str) -> tuple[int, int] | None:
    """(min, max) from N, "MIN-MAX" or "auto"; None when malformed."""
    if replicas == "auto":
        return 1, AUTO_MAX_REPLICAS
    if isinstance(replicas, str) and re.fullmatch(r"\d+-\d+", replicas):
        lo, hi = map(int, replicas.split("-"))
    elif isinstance(replicas, int) and not isinstance(replicas, bool):
        lo = hi = replicas
    else:
        return None
    return (lo, hi) if 1 <= lo <= hi else None


def new_job_id() -> str:
    """Sortable and unique enough for an operational ledger: 20261122T023400Z-1a2b3c4d."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(4)


@dataclass(frozen=True)
class Failure:
    source: str          # full URI of the scan
    kind: str            # not_image | corrupt | too_large | unsupported | bad_calibration | curve_not_found | ...
    message: str


@dataclass
class JobSummary:
    """Counts over every listed scan (listed == committed + skipped + failed when the job ran to the end).
    failures: the first MAX_REPORTED_FAILURES failed scans; the ledger holds all of them.
    first_result_s: seconds from the start to the first settled scan; ledger_s: the driver's seconds in the
    ledger (appending rows, publishing it), of which only publishing adds to elapsed_s's end."""
    job_id: str
    src: str
    dst: str
    model_version: str
    listed: int = 0
    committed: int = 0
    skipped: int = 0
    failed: int = 0
    elapsed_s: float = 0.0
    first_result_s: float = 0.0
    ledger_s: float = 0.0
    ledger: str | None = None
    failures: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every listed scan is committed (now or before)."""
        return self.failed == 0 and self.listed == self.committed + self.skipped

    @property
    def scans_per_s(self) -> float:
        """Listed scans finished (any status) per second of job wall time."""
        return self.listed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def committed_per_s(self) -> float:
        return self.committed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def count(self, status: str, source: str, kind: str | None, message: str | None):
        assert status in (COMMITTED, SKIPPED, FAILED), f"unknown ledger status {status!r}"
        self.listed += 1
        setattr(self, status, getattr(self, status) + 1)
        if status == FAILED and len(self.failures) < MAX_REPORTED_FAILURES:
            self.failures.append(Failure(source, kind or "unknown", message or ""))

    def format(self) -> str:
        """The human summary printed at the end of `digitise batch`."""
        lines = [f"job {self.job_id}: {self.src} -> {self.dst} (model {self.model_version[:12]})",
                 f"  listed {self.listed}, committed {self.committed}, already done (skipped) {self.skipped}, "
                 f"failed {self.failed}",
                 f"  {self.elapsed_s:.1f} s, {self.scans_per_s:.2f} scans/s "
                 f"({self.committed_per_s:.2f} committed/s)"]
        if self.ledger:
            lines.append(f"  ledger: {self.ledger}")
        for f in self.failures:
            lines.append(f"  FAILED {f.source}: [{f.kind}] {f.message}")
        if self.failed > len(self.failures):
            lines.append(f"  ... and {self.failed - len(self.failures)} more failures (see the ledger)")
        return "\n".join(lines)
