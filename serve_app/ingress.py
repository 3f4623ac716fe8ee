"""The ingress deployment: FastAPI over HTTP. Validate and decode before the batch, commit after it.

POST /v1/digitise   multipart `image` (+ optional `calibration`) -> 200 with the committed result
GET  /v1/results/ID the committed result (404 not committed, 400 malformed id, 409 corrupt)
GET  /healthz       200 once the segmenter answered (its weights passed their preflight)
GET  /v1/stats      batching and outcome counters (debugging, tests)
GET  /docs          OpenAPI
With `ServeConfig.auth_token_file` set, every route but /healthz needs `Authorization: Bearer <token>` (401).

Acknowledgement: 200 is sent only after `contracts.commit` returned its receipt, and the body is read back
from the store (`contracts.load`), so it is exactly what a later GET returns. Commit writes every object
whole and creates the manifest last, create-only; a result is committed iff its manifest exists. So a
request that times out, is cancelled or hits a storage error is never acknowledged and never half-visible:
at worst objects without a manifest remain, which `load` never trusts and the next attempt overwrites.
The work behind one request id runs once per ingress replica however many identical requests wait on it
(single flight), and is shielded from a client's disconnect: a retry joins it or finds it committed.
"""
import asyncio
import logging
import os
import posixpath
import time
from collections import Counter

import fsspec
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve import metrics
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

import contracts
from contracts.result import REQUEST_ID as _REQUEST_ID
from digitiser import decode_scan
from serve_app.config import ServeConfig
from serve_app.http import (OPENAPI_UPLOAD, ApiError, BearerAuth, curve_not_found, cut_to_track, log_failure,
                            parse_calibration, read_upload, result_body, to_api_error, token_digest)
from serve_app.loopback import bind_replica_servers_to_loopback
from serve_app.segmenter import rss_mb

log = logging.getLogger(f"ray.serve.{__name__}")  # under "ray.serve": Serve's replica log files and stderr

_SECONDS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]
_ERRORS = {s: {"description": d, "content": {"application/json": {"example": {"error": e, "detail": "..."}}}}
           for s, e, d in [(400, "corrupt", "truncated or damaged image, malformed multipart or request id"),
                           (413, "too_large", "over the byte or pixel limits"),
                           (415, "not_image", "not a PNG, JPEG or TIFF, or not multipart"),
                           (422, "curve_not_found", "bad calibration, or a curve below the coverage minimum"),
                           (503, "overloaded", "queue full or store failing: retry after Retry-After")]}

api = FastAPI(title="Well-log digitiser", version="1",
              description="Scanned well-log track in, calibrated curves out (contract v2).")


# The replica's own Ingress holds the token's digest; routes are checked before any body is read.
api.add_middleware(BearerAuth, digest=lambda: serve.get_replica_context().servable_object.auth_digest)


@api.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """FastAPI's own errors (unknown route, wrong method) in this API's error format."""
    error = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse({"error": error, "detail": f"{request.method} {request.url.path}: {exc.detail}"},
                        status_code=exc.status_code, headers=getattr(exc, "headers", None))


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse({"error": "invalid_request", "detail": str(exc.errors())[:2000]}, status_code=422)


_DEFAULTS = ServeConfig()   # build_app sets the deployment options from the app's own ServeConfig


@serve.deployment(max_ongoing_requests=_DEFAULTS.ingress_max_ongoing_requests,
                  max_queued_requests=_DEFAULTS.ingress_max_queued_requests,
                  ray_actor_options={"num_cpus": _DEFAULTS.ingress_num_cpus})
@serve.ingress(api)
class Ingress:
    def __init__(self, segmenter: DeploymentHandle, config: ServeConfig):
        if config.loopback_only:
            bind_replica_servers_to_loopback()
        self.segmenter, self.config, self.limits = segmenter, config, config.limits
        self.auth_digest = token_digest(config.auth_token_file) if config.auth_token_file else None
        fs = fsspec.core.url_to_fs(config.store, **config.storage_options)[0] if config.storage_options else None
        self.fs, self.base = contracts.filesystem(config.store, fs)
        self.identity: tuple[str, dict] | None = None   # (model version, tracing) the segmenter reported
        self.inflight: dict[str, asyncio.Task] = {}
        self.outcomes, self.commits_written = Counter(), 0
        self.seconds = Counter()   # wall seconds summed over answered requests: "request", and its "commit" part
        self.m_requests = metrics.Counter("digitiser_requests", description="requests by outcome",
                                          tag_keys=("outcome",))
        self.m_latency = metrics.Histogram("digitiser_request_seconds", boundaries=_SECONDS,
                                           description="request latency by outcome", tag_keys=("outcome",))
        self.m_write = metrics.Histogram("digitiser_write_seconds", boundaries=_SECONDS,
                                         description="wall time of contracts.commit")
        self.m_storage = metrics.Counter("digitiser_storage_failures", description="StorageError raised")
        log.info("ingress ready: store %s, %s", config.store,
                 "bearer token required" if self.auth_digest else "open access (no auth token)")

    @api.post("/v1/digitise", openapi_extra=OPENAPI_UPLOAD, responses=_ERRORS,
              summary="Digitise one scanned track (acknowledged once committed)")
    async def digitise(self, request: Request) -> JSONResponse:
        start, rid = time.perf_counter(), None
        try:
            upload = await read_upload(request, self.limits.max_bytes, self.config.max_calibration_bytes)
            calibration = parse_calibration(upload.calibration)
            scan = await asyncio.to_thread(decode_scan, upload.image, self.limits)  # bad input: 4xx, model or not
            scan = await asyncio.to_thread(cut_to_track, scan, calibration)  # the track only goes to the model
            version, tracing = await self._identity()
            rid = await asyncio.to_thread(contracts.request_id, upload.image, calibration, version, tracing)
            body, outcome = await self._single_flight(rid, lambda: self._digitise(rid, scan, calibration))
        except Exception as e:  # noqa: BLE001  (the HTTP edge: every failure becomes a JSON error)
            return self._failed(e, rid, start)
        self._record(outcome, start)
        self.seconds["request"] += time.perf_counter() - start
        log.info("request %s: %s in %.3f s", rid, outcome, time.perf_counter() - start)
        return JSONResponse(body)

    @api.get("/v1/results/{request_id}", responses=_ERRORS, summary="A committed result")
    async def result(self, request_id: str) -> JSONResponse:
        start, rid = time.perf_counter(), None
        try:
            if not _REQUEST_ID.fullmatch(request_id):
                raise ApiError(400, "bad_request_id", f"request id {request_id[:64]!r} must be 32 lowercase hex "
                                                      "characters, as returned by POST /v1/digitise")
            rid = request_id
            body = await asyncio.to_thread(self._load_body, rid)
        except Exception as e:  # noqa: BLE001
            return self._failed(e, rid, start, outcome_prefix="get_")
        self._record("get_ok", start)
        return JSONResponse(body)

    @api.get("/healthz", summary="200 once the model passed its preflight")
    async def healthz(self) -> JSONResponse:
        try:
            info = await asyncio.wait_for(self._info(), timeout=10)
        except Exception as e:  # noqa: BLE001
            log.warning("health check: segmenter not answering: %s", e)
            return JSONResponse({"error": "unavailable", "detail": "the segmenter is not ready"}, status_code=503,
                                headers={"Retry-After": str(self.config.retry_after_s)})
        return JSONResponse({"status": "ok", **info})

    @api.get("/v1/stats", summary="Batching and outcome counters (debugging)")
    async def stats(self) -> JSONResponse:
        segmenter = await self.segmenter.stats.remote()
        return JSONResponse({"ingress": {"outcomes": dict(self.outcomes), "commits_written": self.commits_written,
                                         "inflight": len(self.inflight), "pid": os.getpid(), "rss_mb": rss_mb(),
                                         "seconds": dict(self.seconds)},
                             "segmenter": segmenter})

    # -- the work ------------------------------------------------------------------------------------
    async def _digitise(self, rid: str, scan, calibration) -> tuple[dict, str]:
        """(body, outcome): the committed result if there is one, else segment, trace, commit, read back."""
        if await asyncio.to_thread(contracts.is_committed, self.config.store, rid, fs=self.fs):
            try:
                return await asyncio.to_thread(self._load_body, rid), "cached"
            except contracts.Corrupt as e:
                log.warning("request %s: committed result is corrupt (%s): recomputing to rewrite it", rid, e)
        traced = await self.segmenter.digitise.remote(scan, calibration)
        if traced.not_found is not None:
            raise curve_not_found(traced.not_found)
        result = traced.result
        if result.request_id != rid:  # the segmenter's model or tracer changed (a rolling update): follow it
            log.warning("request %s: model version is now %s, tracer %s (id %s)", rid, result.model_version[:12],
                        result.tracing.get("revision"), result.request_id)
            self.identity = (result.model_version, result.tracing)
        start = time.perf_counter()
        try:
            receipt = await asyncio.to_thread(contracts.commit, result, self.config.store, fs=self.fs)
        finally:
            self.m_write.observe(time.perf_counter() - start)
            self.seconds["commit"] += time.perf_counter() - start
        self.commits_written += receipt.written
        return await asyncio.to_thread(self._load_body, receipt.request_id), "ok"

    async def _single_flight(self, rid: str, work):
        """Run `work()` once per request id however many requests wait on it; shielded from cancellation
        of any one waiter (a disconnecting client does not abort a commit others wait for)."""
        task = self.inflight.get(rid)
        if task is None:
            task = asyncio.create_task(work())
            self.inflight[rid] = task
            task.add_done_callback(lambda t: self._forget(rid, t))
        return await asyncio.shield(task)

    def _forget(self, rid: str, task: asyncio.Task):
        self.inflight.pop(rid, None)
        if not task.cancelled():
            task.exception()  # retrieved here, so an error nobody waited for is not logged as "never retrieved"

    def _load_body(self, rid: str) -> dict:
        result = contracts.load(self.config.store, rid, fs=self.fs)
        keys = {name: posixpath.join(self.base, rid, name) for name in contracts.object_names(result.calibration)}
        return result_body(result, keys)

    async def _info(self) -> dict:
        info = await self.segmenter.info.remote()
        self.identity = self.identity or (info["model_version"], info["tracing"])
        return info

    async def _identity(self) -> tuple[str, dict]:
        """(model version, tracing parameters and revision): what request ids cover besides the request."""
        if self.identity is None:
            await self._info()
        return self.identity

    # -- outcomes ------------------------------------------------------------------------------------
    def _failed(self, exc: Exception, rid: str | None, start: float, outcome_prefix: str = "") -> JSONResponse:
        err = to_api_error(exc, self.config.retry_after_s)
        if isinstance(exc, contracts.StorageError):
            self.m_storage.inc()
        log_failure(err, exc, rid)
        self._record(outcome_prefix + err.error, start)
        body = err.body() if rid is None else {**err.body(), "request_id": rid}
        return JSONResponse(body, status_code=err.status, headers=err.headers())

    def _record(self, outcome: str, start: float):
        self.outcomes[outcome] += 1
        self.m_requests.inc(tags={"outcome": outcome})
        self.m_latency.observe(time.perf_counter() - start, tags={"outcome": outcome})
