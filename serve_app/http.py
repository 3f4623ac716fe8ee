"""The HTTP edge, free of Ray: reading a bounded upload, the error table, response bodies.

Every failure a client can cause or see leaves as `{"error": <code>, "detail": <what to do>, ...}` with a
4xx/5xx status; exceptions from the digitiser, the contract and Serve are translated in one place
(`to_api_error`), keeping `__cause__` for the log. No response ever carries a stack trace.
"""
import hashlib
import hmac
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from python_multipart.exceptions import FormParserError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse

import contracts
from digitiser import BadImage, cut_track
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

log = logging.getLogger(f"ray.serve.{__name__}")  # under "ray.serve": Serve's replica log files and stderr

_MAX_DETAIL = 2000   # an error may quote the input; a hostile input must not echo back (or into logs) whole
_MULTIPART_OVERHEAD = 16 * 1024  # boundaries and part headers around the image and calibration parts
_IMAGE_STATUS = {"not_image": 415, "unsupported": 415, "corrupt": 400, "too_large": 413}


@dataclass
class ApiError(Exception):
    """A failure as the client sees it: HTTP status, a stable error code, what to do, extra JSON fields."""
    status: int
    error: str
    detail: str
    extra: dict = field(default_factory=dict)
    retry_after_s: int | None = None

    def __post_init__(self):
        if len(self.detail) > _MAX_DETAIL:
            self.detail = self.detail[:_MAX_DETAIL] + " [...]"

    def body(self) -> dict:
        return {"error": self.error, "detail": self.detail, **self.extra}

    def headers(self) -> dict:
        return {} if self.retry_after_s is None else {"Retry-After": str(self.retry_after_s)}


@dataclass(frozen=True)
class Upload:
    """A parsed POST /v1/digitise: the image file's bytes and the calibration JSON text (None: defaults)."""
    image: bytes
    calibration: bytes | str | None


def to_api_error(exc: BaseException, retry_after_s: int) -> ApiError:
    """The one table from exceptions to client-facing errors (anything unknown is a 500 without details)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, BadImage):
        return ApiError(_IMAGE_STATUS[exc.kind], exc.kind, str(exc))
    if isinstance(exc, contracts.StorageError):
        return ApiError(503, "storage_unavailable", f"the results store failed, nothing was acknowledged; retry "
                                                    f"later ({exc})", retry_after_s=retry_after_s)
    if isinstance(exc, BackPressureError):
        return ApiError(503, "overloaded", "the segmenter queue is full; retry later", retry_after_s=retry_after_s)
    if isinstance(exc, DeploymentUnavailableError):
        return ApiError(503, "unavailable", "the segmenter is not running; retry later", retry_after_s=retry_after_s)
    if isinstance(exc, RayActorError):   # the replica died mid request (a node lost, a process killed)
        return ApiError(503, "unavailable", "the segmenter replica stopped before answering; nothing was "
                                            "acknowledged; retry later", retry_after_s=retry_after_s)
    if isinstance(exc, contracts.NotCommitted):
        return ApiError(404, "not_committed", str(exc))
    if isinstance(exc, contracts.Corrupt):
        return ApiError(409, "corrupt", f"the stored result is damaged: {exc.obj}: {exc.reason}; POST the same "
                                        "scan and calibration again to rewrite it",
                        {"object": exc.obj, "reason": exc.reason})
    return ApiError(500, "internal", "internal error; the server log names the cause")


def log_failure(err: ApiError, exc: BaseException, rid: str | None) -> None:
    """One log line per failed request; a 500 names its cause (type, message, the exception it came from)
    and carries the traceback, since the client is told only that the server log names it."""
    if err.status < 500 or err.error != "internal":
        log.warning("request %s: %d %s: %s", rid or "-", err.status, err.error, err.detail)
        return
    cause = exc.__cause__ or exc.__context__
    via = f" (from {type(cause).__name__}: {cause})" if cause is not None else ""
    log.error("request %s: 500 internal error: %s: %s%s", rid or "-", type(exc).__name__, exc, via, exc_info=exc)


async def read_upload(request: Request, max_image_bytes: int, max_calibration_bytes: int) -> Upload:
    """Read a multipart upload, refusing it (413) as soon as it exceeds the size limit: by its declared
    Content-Length before reading anything, else while streaming. Parts: `image` (a file, required) and
    `calibration` (a file or a form field, optional)."""
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise ApiError(415, "not_multipart", f"the request body is {ctype or 'untyped'}: send multipart/form-data "
                                             "with the scan as file part `image` and optional part `calibration`")
    body = await _read_capped(request, max_image_bytes + max_calibration_bytes + _MULTIPART_OVERHEAD,
                              max_image_bytes)

    async def replay():  # the body is read; let starlette's parser read it again from memory
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=2, max_fields=2,
                                                         max_part_size=max_calibration_bytes)
    except (HTTPException, MultiPartException, FormParserError) as e:
        why = getattr(e, "detail", None) or getattr(e, "message", None) or e
        raise ApiError(400, "bad_multipart", f"the multipart body cannot be parsed ({why}): send parts `image` "
                                             "(file) and `calibration` (optional)") from e
    try:
        return await _parts(form, max_calibration_bytes)
    finally:
        await form.close()  # uploads spool to temporary files


async def _read_capped(request: Request, cap: int, max_image_bytes: int) -> bytes:
    too_large = ApiError(413, "too_large", f"the upload exceeds {cap / 2**20:.1f} MiB (scan limit "
                                           f"{max_image_bytes / 2**20:.1f} MiB): downsample or compress the scan")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise too_large
    chunks, n = [], 0
    async for chunk in request.stream():
        n += len(chunk)
        if n > cap:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _parts(form, max_calibration_bytes: int) -> Upload:
    image, calibration = form.get("image"), form.get("calibration")
    if not isinstance(image, UploadFile):
        raise ApiError(422, "missing_image", "no file part named `image`: attach the scan as a file, e.g. "
                                             "curl -F image=@scan.png -F calibration=@scan.json")
    if isinstance(calibration, UploadFile):
        calibration = await calibration.read(max_calibration_bytes + 1)
        if len(calibration) > max_calibration_bytes:
            raise ApiError(413, "too_large", f"the calibration exceeds {max_calibration_bytes} bytes")
    return Upload(await image.read(), calibration)


def parse_calibration(raw: bytes | str | None) -> contracts.Calibration:
    """Calibration JSON text -> a valid Calibration (contract defaults when absent); 422 otherwise."""
    if raw is None or (isinstance(raw, (str, bytes)) and not raw.strip()):
        return contracts.Calibration.from_dict(None)
    try:
        d = contracts.loads_strict(raw)
    except ValueError as e:   # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ApiError(422, "calibration_not_json", f"the calibration is not JSON ({e}): send a JSON object like "
                                                    '{"top_depth": 1000, "bottom_depth": 1100, "curves": [...]}') from e
    try:
        return contracts.Calibration.from_dict(d)
    except contracts.ContractViolation as e:
        raise ApiError(422, "bad_calibration", f"the calibration breaks the contract: {e}") from e


def cut_to_track(scan, calibration: contracts.Calibration):
    """The decoded scan cut to the calibration's track (window, depth interval): only that is segmented.
    A window or depth interval outside the image is a 422 naming both."""
    try:
        return cut_track(scan, calibration)
    except contracts.ContractViolation as e:
        raise ApiError(422, "bad_calibration", f"the calibration does not fit this {scan.width} x {scan.height} px "
                                               f"scan: {e}") from e


def curve_not_found(info: dict) -> ApiError:
    """A segmenter's CurveNotFound (as the dict it returns) -> 422 with the coverage reached."""
    return ApiError(422, "curve_not_found", info["message"],
                    {"curve": info["curve"], "coverage": info["coverage"], "min_coverage": info["min_coverage"]})


def result_body(result: contracts.Digitisation, keys: dict[str, str]) -> dict:
    """The JSON answer for a committed result (values as stored; non-finite numbers as null)."""
    return {"request_id": result.request_id, "contract_version": result.contract_version,
            "model_version": result.model_version, "objects": keys,
            "depth": _floats(result.depth),
            "curves": {name: _floats(values) for name, values in result.curves.items()},
            "coverage": dict(result.coverage), "bridged": dict(result.bridged)}


def _floats(values) -> list:
    return [v if math.isfinite(v) else None for v in np.asarray(values, dtype=np.float64).tolist()]


# ----------------------------------------------------------------------------- bearer-token access

MIN_TOKEN_CHARS = 16
OPEN_PATHS = frozenset({"/healthz"})   # liveness probes carry no secrets


def token_digest(path: str) -> bytes:
    """sha256 of the bearer token in the file at `path` (surrounding whitespace stripped). Only the digest is
    kept: requests are compared digest to digest, so neither the token nor its length leaks by timing.
    Raises ValueError (naming the file, never its content) when it is unreadable or too short."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"the auth token file {path} cannot be read ({type(e).__name__}): write the token, "
                         "one line of text, into a file readable by the server") from e
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"the auth token in {path} has {len(token)} characters; use at least {MIN_TOKEN_CHARS} "
                         "random ones, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`")
    return hashlib.sha256(token.encode()).digest()


def authorised(authorization: str | None, digest: bytes) -> bool:
    """True if an `Authorization` header value is `Bearer <the token>`; constant time in the token."""
    scheme, _, given = (authorization or "").partition(" ")
    given_digest = hashlib.sha256(given.strip().encode("utf-8", "surrogateescape")).digest()
    return hmac.compare_digest(given_digest, digest) and scheme.lower() == "bearer"


class BearerAuth:
    """ASGI middleware: every route except OPEN_PATHS (unknown routes, docs and stats included) needs
    `Authorization: Bearer <token>`, else 401 in the API's error format, before the body is read.
    `digest()` returns the expected token's sha256 (`token_digest`), or None when access is open."""

    def __init__(self, app, digest: Callable[[], bytes | None]):
        self.app, self.digest = app, digest

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or _route_path(scope) in OPEN_PATHS:
            return await self.app(scope, receive, send)
        expected = self.digest()
        if expected is None or authorised(_header(scope, b"authorization"), expected):
            return await self.app(scope, receive, send)
        log.warning("%s %s: 401, %s bearer token", scope["method"], scope["path"],
                    "a wrong" if _header(scope, b"authorization") else "no")
        body = {"error": "unauthorized", "detail": "this endpoint needs `Authorization: Bearer <token>`; "
                                                   "ask its operator for the token"}
        await JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)


def _route_path(scope) -> str:
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root):] or "/" if root and path.startswith(root) else path


def _header(scope, name: bytes) -> str | None:
    value = next((v for k, v in scope.get("headers", ()) if k.lower() == name), None)
    return None if value is None else value.decode("latin-1")


OPENAPI_UPLOAD = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["image"],
    "properties": {
        "image": {"type": "string", "format": "binary", "description": "the scan: PNG, JPEG or TIFF"},
        "calibration": {"type": "string", "format": "binary",
                        "description": "calibration JSON (contract v2), as a file or a text field"}}}}}}}
