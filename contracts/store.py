"""Committing results to a store and reading them back (any fsspec filesystem: local folders, S3, ...).

commit: validate in memory -> put each object whole -> verify them as the store now holds them -> create the
manifest last and read it back -> receipt. A request is committed iff its manifest exists and every object
matches it; anything else under its prefix is a leftover of an interrupted attempt, overwritten by the next
attempt and never trusted by `load`.

Verifying is a read from the store after the put, never the put's own answer (a gateway or a buggy store can
acknowledge bytes it does not hold). On S3 one listing of the request's prefix vouches for every object whose
ETag is the MD5 of the bytes written (what S3 stores for a single-part put); anything else is read back whole.
"""
import contextlib
import hashlib
import json
import logging
import posixpath
from dataclasses import dataclass

import fsspec
from fsspec.implementations.local import LocalFileSystem

from contracts.files import atomic_write
from contracts.errors import ConflictError, ContractError, ContractViolation, Corrupt, NotCommitted, StorageError
from contracts.format import MANIFEST, parse, serialise, sha256
from contracts.result import CONTRACT_VERSION, REQUEST_ID, Digitisation
from contracts.validate import validate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Receipt:
    """Proof of a commit: returned only after the manifest landed and was verified."""
    request_id: str
    keys: dict[str, str]        # object name -> its path in the store
    written: bool               # False: the request was already committed, nothing was written

    def to_dict(self) -> dict:
        return {"request_id": self.request_id, "keys": self.keys, "written": self.written}


class AtomicLocalFileSystem(LocalFileSystem):
    """Local files written whole (temp file, fsync, rename), so a reader never sees half an object.
    mode="create" links the temp file into place, which fails if the name exists: a create-only write."""

    def pipe_file(self, path, value, mode="overwrite", **kwargs):
        atomic_write(self._strip_protocol(path), value, create=mode == "create")


def filesystem(root: str, fs=None) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for `root` and the root's path within it. Plain local filesystems become atomic."""
    if fs is None:
        fs, path = fsspec.core.url_to_fs(root)
    else:
        path = fs._strip_protocol(root)
    if type(fs) is LocalFileSystem:
        fs = AtomicLocalFileSystem()
    return fs, path.rstrip("/")


def commit(result: Digitisation, root: str, *, fs=None) -> Receipt:
    """Validate, write and commit `result` under `<root>/<request_id>/`; return a receipt only on success.

    Raises ContractViolation (nothing written), ConflictError (a different result is committed under the
    same id), StorageError (the store failed; retry). A retry of a committed request writes nothing.
    Only the current contract version is written: older results are read-only."""
    if result.contract_version != CONTRACT_VERSION:
        raise ContractViolation(f"request {result.request_id} is a contract v{result.contract_version} result; "
                                f"only v{CONTRACT_VERSION} results are committed (older ones are read-only)")
    objects = serialise(result)
    validate(result.request_id, objects)
    fs, base = filesystem(root, fs)
    prefix = posixpath.join(base, result.request_id)
    keys = {name: posixpath.join(prefix, name) for name in objects}
    existing = _read(fs, keys[MANIFEST], missing_ok=True)
    if existing is not None and existing != objects[MANIFEST]:
        raise ConflictError(f"{keys[MANIFEST]} differs from this result's manifest (a different result, or a torn "
                            "manifest: `digitise audit` tells which); refusing to overwrite a commit")
    puts = {keys[name]: data for name, data in objects.items() if name != MANIFEST}
    if existing is not None and not _differing(fs, prefix, puts):
        log.debug("request %s already committed", result.request_id)
        return Receipt(result.request_id, keys, written=False)
    for path, data in puts.items():
        with _storage("write", path):
            fs.pipe_file(path, data)
    if wrong := _differing(fs, prefix, puts):
        path, landed = wrong
        _refuse_landed(path, puts[path], landed)
    if existing is None:
        _create_manifest(fs, keys[MANIFEST], objects[MANIFEST])
    log.info("committed request %s (%d objects)", result.request_id, len(objects))
    return Receipt(result.request_id, keys, written=True)


def is_committed(root: str, request_id: str, *, fs=None) -> bool:
    """Cheap check used to skip work: True if the request's manifest exists. One read of the (small) manifest:
    on S3 an existence test is a HEAD and, for a missing key, a listing besides (s3fs looks for a folder)."""
    fs, base = filesystem(root, fs)
    path = posixpath.join(base, _checked_id(request_id), MANIFEST)  # a bad id is a ValueError, not a StorageError
    return _read(fs, path, missing_ok=True) is not None


def load(root: str, request_id: str, *, fs=None) -> Digitisation:
    """The committed result, or NotCommitted / Corrupt saying which object is wrong."""
    return parse(read_objects(root, request_id, fs=fs))


def read_objects(root: str, request_id: str, *, fs=None) -> dict[str, bytes]:
    """A committed request's objects, each checked against the manifest, the whole set against the contract."""
    fs, base = filesystem(root, fs)
    prefix = posixpath.join(base, _checked_id(request_id))
    manifest = _read(fs, posixpath.join(prefix, MANIFEST), missing_ok=True)
    if manifest is None:
        raise NotCommitted(f"request {request_id} is not committed under {root} (no {MANIFEST})")
    objects = {MANIFEST: manifest}
    for name, meta in _listed_objects(request_id, manifest).items():
        data = _read(fs, posixpath.join(prefix, name), missing_ok=True)
        if data is None:
            raise Corrupt(request_id, name, "listed in the manifest but missing")
        if len(data) != meta.get("bytes") or sha256(data) != meta.get("sha256"):
            raise Corrupt(request_id, name, f"{len(data)} bytes with sha256 {sha256(data)[:12]}… do not match "
                                            f"the manifest ({meta.get('bytes')} bytes, {str(meta.get('sha256'))[:12]}…)")
        objects[name] = data
    try:
        validate(request_id, objects)
    except ContractError as e:
        raise Corrupt(request_id, "object set", f"breaks the contract: {e}") from e
    return objects


def _listed_objects(request_id: str, manifest: bytes) -> dict:
    try:
        listed = json.loads(manifest)["objects"]
        assert isinstance(listed, dict) and all(isinstance(m, dict) for m in listed.values())
    except Exception as e:
        raise Corrupt(request_id, MANIFEST, f"does not parse as a manifest: {e}") from e
    for name in listed:  # a manifest from storage is untrusted: no name may leave the request's prefix
        if "/" in name or "\\" in name or name.startswith("."):
            raise Corrupt(request_id, MANIFEST, f"lists an object name {name!r} outside the request's prefix")
    return listed


def _checked_id(request_id: str) -> str:
    if not (isinstance(request_id, str) and REQUEST_ID.fullmatch(request_id)):
        raise ValueError(f"request id {request_id!r} must be 32 lowercase hex characters")
    return request_id


def _create_manifest(fs, path: str, data: bytes):
    """Create-only: if another writer committed first, identical bytes mean the same result (success)."""
    try:
        with _storage("commit", path, passthrough=(FileExistsError,)):
            fs.pipe_file(path, data, mode="create")
    except FileExistsError:
        if _read(fs, path) != data:
            raise ConflictError(f"{path} was committed concurrently with different content") from None
        return   # that read was the check: the manifest there is this one
    _verify(fs, path, data)


def _verify(fs, path: str, data: bytes):
    landed = _read(fs, path, missing_ok=True)
    if landed != data:
        _refuse_landed(path, data, landed)


def _refuse_landed(path: str, data: bytes, landed: bytes | None):
    got = "nothing" if landed is None else f"{len(landed)} bytes, sha256 {sha256(landed)[:12]}…"
    raise StorageError(f"{path}: wrote {len(data)} bytes (sha256 {sha256(data)[:12]}…) but read back {got}; "
                       "nothing was acknowledged, retry the request")


def _differing(fs, prefix: str, objects: dict[str, bytes]) -> tuple[str, bytes | None] | None:
    """The first of `objects` (path -> bytes) the store does not hold as given, with what it holds; None if all
    match. The prefix's S3 listing vouches for those whose ETag is their MD5; the rest are read back."""
    md5s = _listed_md5s(fs, prefix)
    for path, data in objects.items():
        if md5s.get(path) == hashlib.md5(data, usedforsecurity=False).hexdigest():
            continue
        landed = _read(fs, path, missing_ok=True)
        if landed != data:
            return path, landed
    return None


def _listed_md5s(fs, prefix: str) -> dict[str, str]:
    """path -> the ETag S3 lists for it, when that ETag is a plain MD5 (a single-part put without SSE-KMS or
    SSE-C). Other stores' ETags (GCS, Azure) are not MD5s, and local files have none: {} (read back)."""
    if "s3" not in (fs.protocol if isinstance(fs.protocol, (tuple, list)) else (fs.protocol,)):
        return {}
    try:
        with _storage("list", prefix, passthrough=(FileNotFoundError,)):
            entries = fs.ls(prefix, detail=True, refresh=True)
    except FileNotFoundError:
        return {}
    finally:
        # a one-time check, not a cache: left in s3fs's listings cache, it would answer a later read of an
        # object created since (another writer's manifest) with "no such file"
        fs.invalidate_cache(prefix)
    return {e["name"]: etag for e in entries if len(etag := str(e.get("ETag", "")).strip('"')) == 32}


def _read(fs, path: str, missing_ok: bool = False) -> bytes | None:
    try:
        with _storage("read", path, passthrough=(FileNotFoundError,)):
            return fs.cat_file(path)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise StorageError(f"{path} vanished while being read") from None


@contextlib.contextmanager
def _storage(op: str, path: str, passthrough: tuple = ()):
    """The one place foreign storage errors (OSError, botocore, aiohttp, ...) become StorageError;
    `passthrough` names the ones the caller handles itself."""
    try:
        yield
    except (ContractError, *passthrough):
        raise
    except Exception as e:
        raise StorageError(f"could not {op} {path}: {type(e).__name__}: {e}") from e
