"""The job's ledger: one row per listed scan, `<dst>/_ledger/<job id>.parquet`.

Rows stream into a local temporary Parquet file as the job's output arrives (the driver never holds the
archive's rows in memory); when the job ends, also on failure, the finished file is put whole through
fsspec (atomic locally, one PUT on S3), so a reader sees the whole ledger or none. A driver killed outright
(SIGKILL, a lost node) cannot remove its temporary file: the next job on the machine does (`_sweep_orphans`).
"""
import glob
import json
import logging
import os
import posixpath
import tempfile
import time

import pyarrow as pa
import pyarrow.parquet as pq

import contracts
from batch_jobs.stages import LEDGER_SCHEMA

log = logging.getLogger(__name__)

PUT_ATTEMPTS = 4
LEDGER_FOLDER = "_ledger"   # not a request id, so audits and loads never mistake it for a result
ROW_GROUP = 4096            # rows buffered before they go to the file (the job's rows arrive one or a few at a time)
TMP_PREFIX = "digitise-ledger-"   # + the driver's pid: whose temporary ledger it is


def ledger_path(dst_base: str, job_id: str) -> str:
    return posixpath.join(dst_base, LEDGER_FOLDER, f"{job_id}.parquet")


def _put_verified(fs, path: str, data: bytes, attempts: int = PUT_ATTEMPTS):
    """Put the ledger whole and read it back (a store can answer 200 for a PUT that never landed); retried.
    Raises contracts.StorageError after `attempts` failures."""
    for attempt in range(1, attempts + 1):
        try:
            fs.pipe_file(path, data)
            if fs.cat_file(path) == data:
                return
            problem = "it read back different"
        except Exception as e:   # noqa: BLE001  (any store error: retried, then reported)
            problem = f"{type(e).__name__}: {e}"
        log.warning("ledger %s: put attempt %d of %d failed: %s", path, attempt, attempts, problem)
        time.sleep(0.5 * attempt)
    raise contracts.StorageError(f"could not write the ledger {path}: {problem}")


class LedgerWriter:
    """Append ROW_SCHEMA/LEDGER_SCHEMA batches, then `publish` once. Use as a context manager."""

    def __init__(self, metadata: dict):
        schema = LEDGER_SCHEMA.with_metadata({"digitise_batch": json.dumps(metadata, sort_keys=True)})
        _sweep_orphans(tempfile.gettempdir())
        fd, self._tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", suffix=".parquet")
        os.close(fd)
        self._writer = pq.ParquetWriter(self._tmp, schema, compression="zstd")
        self._schema = schema
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self.rows = 0

    def append(self, batch: pa.Table):
        table = batch.select(LEDGER_SCHEMA.names).cast(self._schema)
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.rows += table.num_rows
        if self._pending_rows >= ROW_GROUP:
            self._flush()

    def _flush(self):
        if self._pending:
            self._writer.write_table(pa.concat_tables(self._pending))
            self._pending, self._pending_rows = [], 0

    def publish(self, dst: str, dst_fs, job_id: str) -> str:
        """Close the file and put it whole at `<dst>/_ledger/<job_id>.parquet`; returns its URI."""
        self._close()
        fs, base = contracts.filesystem(dst, dst_fs)
        path = ledger_path(base, job_id)
        with open(self._tmp, "rb") as f:
            data = f.read()
        _put_verified(fs, path, data)
        uri = fs.unstrip_protocol(path)
        log.info("ledger: %d rows, %d bytes at %s", self.rows, len(data), uri)
        return uri

    def _close(self):
        if self._writer is not None:
            self._flush()
            self._writer.close()
            self._writer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._close()
        if os.path.exists(self._tmp):
            os.unlink(self._tmp)
        return False


def _sweep_orphans(folder: str):
    """Remove the temporary ledgers of drivers that are gone (a live pid's file is left, even if the pid was
    reused: at worst a file stays until a later sweep)."""
    for path in glob.glob(os.path.join(folder, f"{TMP_PREFIX}*.parquet")):
        pid = os.path.basename(path)[len(TMP_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            try:
                os.unlink(path)
                log.info("removed %s, the temporary ledger of a driver that is gone", path)
            except OSError:   # another driver swept it first, or not ours to remove
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)   # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:   # another user's process: alive
        pass
    return True
