"""Listing an archive lazily: a generator over scan files (pure fsspec) and the Ray Data source around it.

The walk goes one directory at a time (fsspec `walk`, top-down, sorted, so `limit` is reproducible) and is
consumed as it goes: memory is one directory's listing plus one page of rows. It runs inside a single Ray read
task, never on the driver, so the driver holds no list of the archive. A page is `batch_size` rows, the unit
the job's next step works on, so no repartition step sits between the listing and the work; the job keeps
Ray Data from packing pages together until they fill its 128 MiB target block size (see job._pipeline),
so a page goes downstream as soon as it is listed and the first batch starts while the walk goes on.
"""
import logging
import posixpath
from collections.abc import Iterator

import fsspec
import pyarrow as pa
from fsspec.utils import get_protocol
from ray.data import Datasource, ReadTask
from ray.data.block import BlockMetadata

log = logging.getLogger(__name__)

SCAN_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
SIDECAR_EXTENSION = ".json"
LISTING_SCHEMA = pa.schema([
    ("source", pa.string()),     # full URI of the scan: file:///abs/path.png, s3://bucket/key.tif
    ("sidecar", pa.string()),    # full URI of its calibration sidecar, null when there is none
    ("size", pa.int64()),        # bytes, as listed
])


def open_fs(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """(filesystem, path inside it) for a folder, file:// or s3:// URL. S3 filesystems get no listings cache
    (it would hold the whole archive's listing in memory, and answer `exists` from stale listings), no
    instance cache, and read a whole object in one GET (with max_concurrency > 1 s3fs first sends a HEAD to
    size a chunked download, which pays only past its 50 MB block: a scan or a result object is far under it).
    Endpoint and credentials come from the usual AWS environment settings."""
    options = {}
    if get_protocol(url) in ("s3", "s3a"):
        options = {"use_listings_cache": False, "skip_instance_cache": True, "max_concurrency": 1}
    fs, path = fsspec.core.url_to_fs(url, **options)
    return fs, path.rstrip("/") or "/"


def is_scan_name(name: str) -> bool:
    """A scan file by its name: a known image extension in any case, not a hidden/temp file."""
    return not name.startswith(".") and name.lower().endswith(SCAN_EXTENSIONS)


def iter_scans(fs, root: str, *, exclude: tuple[str, ...] = (), limit: int | None = None) -> Iterator[dict]:
    """Yield {"source", "sidecar", "size"} (LISTING_SCHEMA) for every scan under `root`, directory by
    directory in sorted order. `root` may also be a single scan file. Hidden folders and the folders in
    `exclude` (paths in `fs`, e.g. a results root inside the source) are not entered."""
    if limit is not None and limit <= 0:
        return
    if fs.isfile(root):
        info = fs.info(root)
        yield _row(fs, root, info.get("size"), None)
        return
    n = 0
    excluded = {p.rstrip("/") for p in exclude}
    for folder, dirs, files in fs.walk(root, detail=True, on_error="raise"):
        keep = sorted(d for d in dirs if not d.startswith(".") and posixpath.join(folder, d) not in excluded)
        for d in list(dirs):       # pruned and ordered in place: walk() recurses into what is left
            del dirs[d]
        dirs.update((d, None) for d in keep)
        sidecars = {name for name in files if name.lower().endswith(SIDECAR_EXTENSION)}
        for name in sorted(files):
            if not is_scan_name(name):
                continue
            stem = name.rsplit(".", 1)[0]
            sidecar = posixpath.join(folder, stem + SIDECAR_EXTENSION) if stem + SIDECAR_EXTENSION in sidecars \
                else None
            yield _row(fs, posixpath.join(folder, name), files[name].get("size"), sidecar)
            n += 1
            if limit is not None and n >= limit:
                return


def _row(fs, path: str, size, sidecar: str | None) -> dict:
    return {"source": fs.unstrip_protocol(path), "size": None if size is None else int(size),
            "sidecar": None if sidecar is None else fs.unstrip_protocol(sidecar)}


def _pages(rows: Iterator[dict], page: int) -> Iterator[pa.Table]:
    buf = []
    for row in rows:
        buf.append(row)
        if len(buf) >= page:
            yield pa.Table.from_pylist(buf, schema=LISTING_SCHEMA)
            buf = []
    if buf:
        yield pa.Table.from_pylist(buf, schema=LISTING_SCHEMA)


class ScanListingDatasource(Datasource):
    """One read task that walks the archive and yields pages of `page` LISTING_SCHEMA rows as it goes (the
    job's batch size). One task keeps the order (and so `limit`) deterministic; listing is cheap next to
    digitising."""

    def __init__(self, fs, root: str, *, exclude: tuple[str, ...] = (), limit: int | None = None,
                 page: int = 16):
        if page < 1:
            raise ValueError(f"page must be >= 1, got {page}")
        super().__init__()
        self._fs, self._root, self._exclude, self._limit, self._page = fs, root, exclude, limit, page

    def get_name(self) -> str:
        return "ListScans"

    def estimate_inmemory_data_size(self) -> int | None:
        return None   # unknown until listed; the point is not to list up front

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context=None) -> list[ReadTask]:
        fs, root, exclude, limit, page = self._fs, self._root, self._exclude, self._limit, self._page

        def read() -> Iterator[pa.Table]:
            yield from _pages(iter_scans(fs, root, exclude=exclude, limit=limit), page)

        meta = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=None)
        return [ReadTask(read, meta, schema=LISTING_SCHEMA, per_task_row_limit=per_task_row_limit)]
