"""The Segmenter deployment: the model replica. Batched segmentation, then tracing per scan, outside the batch.

Why trace here and not in the ingress: the batch yields (3, H, W) float32 probabilities per scan, 12 bytes
a pixel; the traced result carries an HxW uint8 mask, 1 byte a pixel, so shipping the `Digitisation` back to
the ingress moves 12x less data than shipping probabilities (a 4000 x 800 scan: 3 MB instead of 38 MB). Tracing
runs after the batched call returned (each request awaits its own slice, then traces), so the next batch
starts while the last one is still being traced. Forward passes run on a thread of their own (never queued
behind other work), tracing in worker processes (digitiser/tracer_pool.py: it holds the GIL, so in this process
it would slow the forward passes and the batching). Committing to storage stays in the ingress: a slow or failing store never occupies a model replica.

Batches that fill: an idle replica waits `batch_wait_timeout_s` (50 ms) for a batch to fill. When a batch's
worth of requests is already inside the replica (waiting or being traced, so their clients come back soon),
the next batch waits up to `busy_wait_fraction` of a full batch's forward pass instead (estimated from the
passes so far). Under load the model is either the bottleneck (then the queue is full and nobody waits) or
waits on tracing anyway, so waiting costs little and batches fill; a lone request never waits for company.
"""
import asyncio
import ctypes
import logging
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
from ray import serve
from ray.serve import metrics

import contracts
from digitiser import MAX_BATCH, DecodedScan, Digitiser, TracingParams
from serve_app.config import BatchingConfig
from serve_app.batcher import Batcher
from serve_app.loopback import bind_replica_servers_to_loopback
from digitiser.tracer_pool import Traced, TracerPool

log = logging.getLogger(f"ray.serve.{__name__}")  # under "ray.serve": Serve's replica log files and stderr

_BATCH_BOUNDARIES = [1.5, 2.5, 4.5, 8.5, 12.5, 16.5]
_SECONDS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]


def rss_mb() -> float:
    """This process's resident memory in MiB (for /v1/stats: soak and hostile-input tests watch it), after
    glibc hands its free heap pages back: otherwise the figure swings by tens of MB with where the last large
    transient arrays landed (the same request pattern read +55 and -53 MB), which hides or fakes a leak."""
    _trim_heap()
    return round(psutil.Process().memory_info().rss / 2**20, 1)


def _trim_heap():
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):   # not glibc: nothing to trim, RSS as it is
        pass


@serve.deployment(max_ongoing_requests=2 * MAX_BATCH, max_constructor_retry_count=3,
                  ray_actor_options={"num_cpus": 1}, user_config=BatchingConfig().model_dump())
class Segmenter:
    """Loads the digitiser (its preflight raises on bad weights, so the replica never starts) and serves
    `digitise(scan, calibration)` through a batched forward pass."""

    def __init__(self, weights: str | None = None, device: str | None = None, tracing: dict | None = None,
                 loopback_only: bool = False, tracers: int | None = None):
        if loopback_only:
            bind_replica_servers_to_loopback()
        self.digitiser = Digitiser(weights, device, tracing=TracingParams(**(tracing or {})))
        self.tracers = TracerPool(tracers or _replica_cpus())
        self.batches, self.scans, self.max_batch_formed = 0, 0, 0
        self.batch_sizes = Counter()
        self.seconds = Counter()   # wall seconds summed: "segment" (batched forward passes), "trace" (per scan)
        self.batching = BatchingConfig()
        self.inside = 0   # requests in digitise(): waiting for a batch, in one, or being traced
        self.scan_forward_s: float | None = None   # forward seconds per scan (moving average, batches of >= 4)
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="segment")
        self.batcher = Batcher(self.segment, self.batching.max_batch_size, self._next_wait)
        self.m_batch = metrics.Histogram("digitiser_batch_size", description="scans per segmenter batch",
                                         boundaries=_BATCH_BOUNDARIES)
        self.m_max_batch = metrics.Gauge("digitiser_max_batch_size_formed",
                                         description="largest batch this replica has formed")
        self.m_segment = metrics.Histogram("digitiser_segment_seconds", boundaries=_SECONDS,
                                           description="wall time of one batched forward pass")
        self.m_trace = metrics.Histogram("digitiser_trace_seconds", boundaries=_SECONDS,
                                         description="wall time of tracing one scan")
        log.info("segmenter ready: model %s on %s", self.digitiser.model_version[:12], self.digitiser.device)

    def reconfigure(self, user_config: dict):
        """Apply the batching knobs (user_config) without restarting the replica."""
        cfg = BatchingConfig.model_validate(user_config or {})
        self.batching = cfg
        self.batcher.max_batch_size = cfg.max_batch_size
        log.info("batching: max_batch_size=%d batch_wait_timeout_s=%.3f busy_wait_fraction=%.2f",
                 cfg.max_batch_size, cfg.batch_wait_timeout_s, cfg.busy_wait_fraction)

    async def segment(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """One batch (the batcher's): uint8 scan pixels in (`Digitiser.pixels`), (3, H, W) float32 probabilities
        out, on the model's thread."""
        start = time.perf_counter()
        probs = await asyncio.get_running_loop().run_in_executor(self._model_thread, self.digitiser.segment, images)
        seconds = time.perf_counter() - start
        self._record_batch(len(images), seconds)
        if len(images) >= min(4, self.batching.max_batch_size):   # padding distorts smaller batches' per-scan time
            per_scan = seconds / len(images)
            self.scan_forward_s = per_scan if self.scan_forward_s is None else 0.7 * self.scan_forward_s + 0.3 * per_scan
        return probs

    def _next_wait(self) -> float:
        """How long the next batch waits to fill (see the module docstring)."""
        cfg = self.batching
        if self.inside >= cfg.max_batch_size and cfg.busy_wait_fraction > 0 and self.scan_forward_s:
            full = self.scan_forward_s * cfg.max_batch_size
            return max(cfg.batch_wait_timeout_s, min(cfg.busy_wait_fraction * full, 10.0))
        return cfg.batch_wait_timeout_s

    async def digitise(self, scan: DecodedScan, calibration: contracts.Calibration) -> Traced:
        """One decoded scan -> Traced. Called by the ingress with already validated input."""
        self.inside += 1
        try:
            return await self._digitise(scan, calibration)
        finally:
            self.inside -= 1

    async def _digitise(self, scan: DecodedScan, calibration: contracts.Calibration) -> Traced:
        probs = await self.batcher.submit(self.digitiser.pixels(scan))
        start = time.perf_counter()
        try:
            return await self.tracers.trace(scan, calibration, probs, self.digitiser.tracing,
                                            self.digitiser.model_version)
        finally:
            self.m_trace.observe(time.perf_counter() - start)
            self.seconds["trace"] += time.perf_counter() - start

    def __del__(self):
        tracers = getattr(self, "tracers", None)
        if tracers is not None:
            tracers.close()

    def info(self) -> dict:
        """Model and tracer identity (what request ids cover); answering means the weights passed their preflight."""
        return {"model_version": self.digitiser.model_version, "tracing": self.digitiser.tracing.to_dict(),
                "device": str(self.digitiser.device), "precision": self.digitiser.model.config.precision,
                "arithmetic": self.digitiser.arithmetic}

    def stats(self) -> dict:
        """Batching counters of this replica (for tests and the /v1/stats debug route)."""
        return {"pid": os.getpid(), "rss_mb": rss_mb(),
                "batches": self.batches, "scans": self.scans, "max_batch_formed": self.max_batch_formed,
                "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())}, "seconds": dict(self.seconds),
                **self.batching.model_dump()}

    def _record_batch(self, n: int, seconds: float):
        self.batches += 1
        self.scans += n
        self.batch_sizes[n] += 1
        self.max_batch_formed = max(self.max_batch_formed, n)
        self.m_batch.observe(n)
        self.m_max_batch.set(self.max_batch_formed)
        self.m_segment.observe(seconds)
        self.seconds["segment"] += seconds
        log.debug("batch of %d scans segmented in %.3f s", n, seconds)


def _replica_cpus() -> int:
    """Tracing processes for this replica: one per CPU it reserved (at least one)."""
    import ray
    try:
        return max(1, int(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    except Exception:  # noqa: BLE001  (not in a Ray worker: one process)
        return 1
