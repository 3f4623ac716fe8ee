"""A fault-injecting HTTP proxy for storage tests: 127.0.0.1:<port chosen by the OS> in front of an S3
endpoint (the moto server), failing a seeded share of the calls on the wire.

    proxy = FaultProxy(upstream="http://127.0.0.1:40229", rate=0.05, seed=1).start()
    fs = s3fs.S3FileSystem(endpoint_url=proxy.url, config_kwargs={"read_timeout": 2})
    ...
    proxy.counts      # Counter: faults injected by kind; proxy.requests: calls seen
    proxy.calls       # each call's request line without the HTTP version: "PUT /bucket/key"
    proxy.rate = 0    # pass everything through from now on
    proxy.stop()

Each call (one HTTP request; the proxy answers `Connection: close`, so clients open one connection per call)
draws from a `random.Random(seed)`: with probability `rate` it gets one fault, chosen among those that apply:

    drop_request   the connection closes after half the request body arrived; nothing reaches the store
    drop_response  the store handled the call; the client gets half the response, then the connection closes
    error_500      500 InternalError; nothing reaches the store
    slowdown_503   503 SlowDown; nothing reaches the store
    delay          the store handled the call; the answer comes `delay_s` later (past the client's timeout)
    truncate_get   GET only: the first half of the body, with a Content-Length that matches it (self-consistent)
    phantom_put    PUT only: 200 with an ETag, but the body never reaches the store

HTTP/1.1 only as S3 clients speak it: Content-Length or chunked request bodies, `Expect: 100-continue`.
"""
import asyncio
import hashlib
import random
import threading
from collections import Counter

KINDS = ("drop_request", "drop_response", "error_500", "slowdown_503", "delay", "truncate_get", "phantom_put")
_ERROR = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by FaultProxy"
          "</Message></Error>")


class FaultProxy:
    def __init__(self, upstream: str, rate: float = 0.0, seed: int = 0, kinds=KINDS, delay_s: float = 3.0):
        host, _, port = upstream.removeprefix("http://").rstrip("/").partition(":")
        self.upstream = (host, int(port))
        self.rate, self.kinds, self.delay_s = rate, tuple(kinds), delay_s
        self.rng = random.Random(seed)
        self.counts: Counter = Counter()
        self.requests = 0
        self.calls: list[str] = []
        self.url: str | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="FaultProxy", daemon=True)
        self._server = None

    def start(self) -> "FaultProxy":
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop).result(10)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    def stop(self):
        async def close():
            self._server.close()
            await self._server.wait_closed()
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- one call ------------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, headers = _parse_head(head)
            self.calls.append(head.split(b"\r\n", 1)[0].decode("latin-1").rsplit(" ", 1)[0])
            fault = self._draw(method)
            if headers.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                await writer.drain()
            if fault == "drop_request":
                await reader.read(max(1, int(headers.get("content-length", "2") or 2) // 2))
                return
            body = await _read_body(reader, headers)
            if fault in ("error_500", "slowdown_503"):
                code, status = ("InternalError", 500) if fault == "error_500" else ("SlowDown", 503)
                return await _answer(writer, status, _ERROR.format(code=code).encode(), "application/xml")
            if fault == "phantom_put":
                etag = hashlib.md5(body).hexdigest()
                return await _answer(writer, 200, b"", extra=f'ETag: "{etag}"\r\n')
            response = await self._forward(head, body, method)
            if fault == "delay":
                await asyncio.sleep(self.delay_s)
            elif fault == "drop_response":
                response = response[: len(response) // 2]
            elif fault == "truncate_get":
                response = _truncated(response)
            writer.write(response)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def _draw(self, method: str) -> str | None:
        self.requests += 1
        if self.rng.random() >= self.rate:
            return None
        applicable = [k for k in self.kinds if (k != "truncate_get" or method == "GET")
                      and (k != "phantom_put" or method == "PUT")
                      and (k != "drop_request" or method in ("PUT", "POST"))]
        kind = self.rng.choice(applicable) if applicable else None
        if kind:
            self.counts[kind] += 1
        return kind

    async def _forward(self, head: bytes, body: bytes, method: str) -> bytes:
        """Send the call upstream (with `Connection: close`) and return the whole response, as received."""
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        try:
            up_writer.write(_with_header(head, "Connection", "close", drop=("expect",)) + body)
            await up_writer.drain()
            resp_head = await up_reader.readuntil(b"\r\n\r\n")
            status, headers = _parse_status(resp_head)
            no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
            resp_body = b"" if no_body else await _read_body(up_reader, headers, to_eof=True)
            return _with_header(resp_head, "Connection", "close",
                                length=None if no_body else len(resp_body)) + resp_body
        finally:
            up_writer.close()


# ----------------------------------------------------------------------------- HTTP/1.1 pieces

def _parse_head(head: bytes) -> tuple[str, dict]:
    lines = head.decode("latin-1").split("\r\n")
    return lines[0].split(" ", 1)[0], _headers(lines[1:])


def _parse_status(head: bytes) -> tuple[int, dict]:
    lines = head.decode("latin-1").split("\r\n")
    return int(lines[0].split(" ")[1]), _headers(lines[1:])


def _headers(lines: list[str]) -> dict:
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines if line)}


async def _read_body(reader: asyncio.StreamReader, headers: dict, to_eof: bool = False) -> bytes:
    """The body, de-chunked when chunked (aws-chunked payloads stay as the client framed them)."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        out = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":   # trailers
                    pass
                return out
            out += await reader.readexactly(size)
            await reader.readexactly(2)
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    return await reader.read() if to_eof else b""


def _with_header(head: bytes, name: str, value: str, drop=(), length: int | None = None) -> bytes:
    """`head` with header `name` set to `value`, headers in `drop` removed, Content-Length set if given."""
    lines = head.decode("latin-1").split("\r\n")
    skip = {name.lower(), *drop, *(("content-length", "transfer-encoding") if length is not None else ())}
    kept = [lines[0]] + [line for line in lines[1:] if line and line.split(":", 1)[0].strip().lower() not in skip]
    kept.append(f"{name}: {value}")
    if length is not None:
        kept.append(f"Content-Length: {length}")
    return ("\r\n".join(kept) + "\r\n\r\n").encode("latin-1")


def _truncated(response: bytes) -> bytes:
    head, _, body = response.partition(b"\r\n\r\n")
    return _with_header(head + b"\r\n\r\n", "Connection", "close", length=len(body) // 2) + body[: len(body) // 2]


async def _answer(writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str = "text/plain", extra: str = ""):
    reason = {200: "OK", 500: "Internal Server Error", 503: "Slow Down"}[status]
    writer.write((f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                  f"{extra}Connection: close\r\n\r\n").encode() + body)
    await writer.drain()
