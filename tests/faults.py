"""A fault-injecting fsspec filesystem for storage fault tests.

`FaultyFS(inner, **faults)` wraps any fsspec filesystem (local, s3fs, ...) and passes every call through
unchanged, except the faults asked for. Faults are keyed by an object-name pattern (fnmatch; it matches an
object if it matches the path's last component or the whole path: "GR.csv", "*.png", "*/abc*/mask.png")
and fire on the n-th matching call, counted per pattern from 1 across all matching paths. The value is an
int or a collection of ints: {"mask.png": 1} fails the first mask.png put only; {"mask.png": (1, 2)} the
first two.

    raise_on_put={"mask.png": 1}     that put raises OSError; with partial=True the inner store first gets
                                     the first half of the bytes (a torn non-atomic write; a real S3 PUT
                                     never leaves one)
    truncate_on_put={"GR.csv": 1}    only the first half of the bytes is stored; returns normally
    corrupt_on_read={"GR.csv": 1}    cat_file returns the bytes with one byte flipped
    crash_after_puts=N               N puts succeed, then the process "dies": the next put and every later
                                     call raise SimulatedCrash (a BaseException, so `except Exception` and
                                     retry loops do not swallow it, and cleanup in `finally` cannot write)

`.calls` logs every call as (op, path), faulted or not. Counters live in this object: a pickled copy (a Ray
worker) starts from zero. Not thread-safe. Only whole-object IO (pipe_file / cat_file) is supported;
`open()` is refused, as results are never streamed (STYLE.md, Storage).
"""
import fnmatch
import posixpath
from collections import Counter

import fsspec


class SimulatedCrash(BaseException):
    """The writing process died (kill -9) at this point. Not an Exception: nothing should catch it."""


class FaultyFS(fsspec.AbstractFileSystem):
    cachable = False  # every FaultyFS is its own object with its own counters
    protocol = "faulty"

    def __init__(self, inner: fsspec.AbstractFileSystem, *, raise_on_put=None, partial: bool = False,
                 truncate_on_put=None, corrupt_on_read=None, crash_after_puts: int | None = None):
        super().__init__()
        self.inner = inner
        self.faults = {"raise_on_put": _as_sets(raise_on_put), "truncate_on_put": _as_sets(truncate_on_put),
                       "corrupt_on_read": _as_sets(corrupt_on_read)}
        self.partial = partial
        self.crash_after_puts = crash_after_puts
        self.calls: list[tuple[str, str]] = []
        self.puts_done = 0          # puts that returned normally (truncated ones included)
        self.crashed = False
        self._seen = Counter()      # (fault kind, pattern) -> matching calls so far

    # -- faulted operations ---------------------------------------------------------------------------
    def pipe_file(self, path, value, mode="overwrite", **kwargs):
        self._log("pipe_file", path)
        if self.crash_after_puts is not None and self.puts_done >= self.crash_after_puts:
            self.crashed = True
            raise SimulatedCrash(f"FaultyFS: process died after {self.puts_done} puts, before {path}")
        fail, truncate = self._fires("raise_on_put", path), self._fires("truncate_on_put", path)
        if fail:
            if self.partial:
                self.inner.pipe_file(path, value[: len(value) // 2], mode=mode, **kwargs)
            raise OSError(f"FaultyFS: injected put failure for {path}")
        out = self.inner.pipe_file(path, value[: len(value) // 2] if truncate else value, mode=mode, **kwargs)
        self.puts_done += 1
        return out

    def cat_file(self, path, start=None, end=None, **kwargs):
        self._log("cat_file", path)
        data = self.inner.cat_file(path, start=start, end=end, **kwargs)
        if self._fires("corrupt_on_read", path):
            i = len(data) // 2
            data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:] if data else b"\xff"
        return data

    # -- plain delegation -----------------------------------------------------------------------------
    def info(self, path, **kwargs):
        return self._pass("info", path, kwargs)

    def exists(self, path, **kwargs):
        return self._pass("exists", path, kwargs)

    def isdir(self, path):
        return self._pass("isdir", path, {})

    def isfile(self, path):
        return self._pass("isfile", path, {})

    def ls(self, path, detail=True, **kwargs):
        return self._pass("ls", path, kwargs, detail=detail)

    def find(self, path, maxdepth=None, withdirs=False, detail=False, **kwargs):
        return self._pass("find", path, kwargs, maxdepth=maxdepth, withdirs=withdirs, detail=detail)

    def glob(self, path, **kwargs):
        return self._pass("glob", path, kwargs)

    def rm_file(self, path):
        return self._pass("rm_file", path, {})

    def rm(self, path, recursive=False, maxdepth=None):
        return self._pass("rm", path, {}, recursive=recursive, maxdepth=maxdepth)

    def makedirs(self, path, exist_ok=False):
        return self._pass("makedirs", path, {}, exist_ok=exist_ok)

    def mkdir(self, path, create_parents=True, **kwargs):
        return self._pass("mkdir", path, kwargs, create_parents=create_parents)

    def invalidate_cache(self, path=None):
        self.inner.invalidate_cache(path)

    def _strip_protocol(self, path):  # an instance method here: the inner filesystem decides
        return self.inner._strip_protocol(path)

    def _parent(self, path):
        return self.inner._parent(path)

    def _open(self, path, mode="rb", **kwargs):
        raise NotImplementedError("FaultyFS supports whole-object IO only: use pipe_file / cat_file")

    # -- helpers --------------------------------------------------------------------------------------
    def _log(self, op: str, path: str):
        if self.crashed:
            raise SimulatedCrash(f"FaultyFS: {op} {path} after the simulated crash")
        self.calls.append((op, path))

    def _pass(self, op: str, path, kwargs: dict, **named):
        self._log(op, path)
        return getattr(self.inner, op)(path, **named, **kwargs)

    def _fires(self, kind: str, path: str) -> bool:
        """Count this call against every pattern of `kind` that matches `path`; True if one fires now."""
        fired = False
        for pattern, nths in self.faults[kind].items():
            if fnmatch.fnmatchcase(posixpath.basename(path), pattern) or fnmatch.fnmatchcase(path, pattern):
                self._seen[kind, pattern] += 1
                fired |= self._seen[kind, pattern] in nths
        return fired


def _as_sets(faults: dict | None) -> dict[str, frozenset[int]]:
    """{"GR.csv": 1} -> {"GR.csv": {1}}; {"GR.csv": (1, 3)} -> {"GR.csv": {1, 3}}."""
    return {p: frozenset([n] if isinstance(n, int) else n) for p, n in (faults or {}).items()}
