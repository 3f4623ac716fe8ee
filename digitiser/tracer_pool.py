"""Tracing beside the segmenter, in worker processes of the process that segments (a Serve segmenter replica, a
batch job's segmenter actor with several CPUs).

Tracing (a minimum-cost path through each row, refined per row) is Python-heavy: it holds the GIL nearly all
the time, so threads do not trace in parallel (measured: 1, 2 and 4 threads trace 8 scans in the same time),
and tracing in the segmenting process slows its forward passes (and a replica's batching event loop).
Worker processes have their own GIL: forward passes, batching and tracing proceed side by side, and a
segmenter with several CPUs (on a GPU node) traces on all of them. The probabilities go to a worker by pipe (12 bytes a
pixel, on the same machine); the result (1 byte a pixel) comes back. Workers are spawned (nothing of Ray or
torch is forked), started with their owner, and exit with it.
"""
import asyncio
import gc
import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

import contracts
from digitiser import CurveNotFound, DecodedScan, TracingParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Traced:
    """One scan's outcome: the result, or why no curve could be traced (a plain dict: CurveNotFound itself
    does not survive pickling, as its constructor takes more than the message)."""
    result: contracts.Digitisation | None = None
    not_found: dict | None = None
    trace_s: float = 0.0   # tracing + building the result, in the worker


def trace_scan(scan: DecodedScan, calibration: contracts.Calibration, probs: np.ndarray, tracing: TracingParams,
               model_version: str) -> Traced:
    """Runs in a worker: trace one scan and build its result."""
    from digitiser.result import build_result
    t0 = time.perf_counter()
    try:
        result = build_result(scan, calibration, probs, model_version=model_version, tracing=tracing)
    except CurveNotFound as e:
        name = calibration.curves[e.curve - 1].name
        return Traced(not_found={"message": str(e), "curve": name, "coverage": e.coverage,
                                 "min_coverage": e.min_coverage}, trace_s=time.perf_counter() - t0)
    return Traced(result=result, trace_s=time.perf_counter() - t0)


class TracerPool:
    """`workers` tracing processes; `submit` returns a Future of one scan's Traced, `trace` awaits it."""

    def __init__(self, workers: int):
        self.workers = workers
        self._pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_exit_with, initargs=(os.getpid(),))
        t0 = time.perf_counter()
        for f in [self._pool.submit(os.getpid) for _ in range(workers)]:   # start them now, not on a request
            f.result()
        log.info("%d tracing process(es) started in %.1f s", workers, time.perf_counter() - t0)

    def submit(self, scan: DecodedScan, calibration: contracts.Calibration, probs: np.ndarray,
               tracing: TracingParams, model_version: str) -> Future:
        return self._pool.submit(trace_scan, scan, calibration, probs, tracing, model_version)

    async def trace(self, scan: DecodedScan, calibration: contracts.Calibration, probs: np.ndarray,
                    tracing: TracingParams, model_version: str) -> Traced:
        return await asyncio.wrap_future(self.submit(scan, calibration, probs, tracing, model_version))

    def close(self):
        """Stop the workers and free the pool's queues now, while this process's resource tracker still runs: Ray
        kills an actor's child processes (the tracker among them) before its Python exits, and queues freed
        after that make a relaunched tracker print a KeyError traceback for each of their semaphores."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            gc.collect()


def _exit_with(parent: int):
    """In a worker: exit when the process that started it is gone (a killed one cannot shut its pool)."""
    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)
    threading.Thread(target=watch, name="exit-with-replica", daemon=True).start()
