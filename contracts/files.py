"""The one atomic whole-file write on a local disk (results, checkpoints, weights, synthetic data sets) and the
one sha256 of bytes (manifests, request ids, model versions, scan hashes)."""
import hashlib
import os
import tempfile
from pathlib import Path


def atomic_write(path, data: bytes, *, create: bool = False) -> None:
    """Write `data` to `path` so that readers see the old file (or none) or the whole new one, never a part:
    a temp file beside it, fsync, renamed into place (create=True: linked, failing with FileExistsError if
    `path` exists), then the folder fsync'd so the rename itself survives a crash. Makes missing folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if create:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def sha256(data: bytes) -> str:
    """Hex SHA-256 of bytes."""
    return hashlib.sha256(data).hexdigest()
