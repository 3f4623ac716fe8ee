"""The commit protocol on every backend (local folder and S3): commit, load, retry, conflict, tamper, audit.

Every test takes the `store` fixture, so it runs once per backend. Stored objects are inspected and tampered
with through `store.resolve()` (the plain filesystem); `FaultyFS` wraps the filesystem commit would use only
to log calls (`.calls`), never to inject faults here (tests/test_store_faults.py does that).
"""
import json
import posixpath
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import contracts
from contracts.format import MANIFEST, canonical_json, format_number, sha256
from contracts.store import AtomicLocalFileSystem
from faults import FaultyFS
from builders import make_result

PROJECT = Path(__file__).resolve().parents[1]
NAMES = ["GR.csv", "ILD.csv", "curves.las", "mask.png", MANIFEST]


# --- helpers -----------------------------------------------------------------------------------------------

def healthy_fs(store):
    """The filesystem `commit` itself would use on this backend (local files are written atomically)."""
    return AtomicLocalFileSystem() if store.kind == "local" else store.fs


def logged(store) -> FaultyFS:
    """A pass-through filesystem whose `.calls` records every operation."""
    return FaultyFS(healthy_fs(store))


def files_under(store, root: str | None = None) -> dict[str, bytes]:
    """Every stored file under `root` (default: the store's root), recursively: path relative to it -> bytes."""
    fs, base = store.resolve()
    if root is not None:
        base = fs._strip_protocol(root).rstrip("/")
    return {p[len(base) + 1:]: fs.cat_file(p) for p in fs.find(base)}


def container(store) -> str:
    """The folder (local) or bucket (S3) that holds the root: where a stray write would land."""
    return posixpath.dirname(store.resolve()[1])


def put(store, relative: str, data: bytes):
    fs, base = store.resolve()
    fs.pipe_file(f"{base}/{relative}", data)


@contextmanager
def processes(*argvs, **popen):
    """Start one Python subprocess per argv (in the project root); kill any still running on the way out."""
    procs = [subprocess.Popen([sys.executable, *argv], cwd=PROJECT, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, **popen) for argv in argvs]
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()


def stored_value(x: float) -> float:
    """A curve or depth value as the contract stores it (%.6f)."""
    return float(format_number(x))


# --- commit and load ---------------------------------------------------------------------------------------

def test_commit_then_load_gives_the_result_back(store):
    result = make_result()
    assert not contracts.is_committed(store.root, result.request_id, fs=store.fs)
    contracts.commit(result, store.root, fs=store.fs)
    assert contracts.is_committed(store.root, result.request_id, fs=store.fs)
    loaded = contracts.load(store.root, result.request_id, fs=store.fs)
    assert loaded.request_id == result.request_id
    assert loaded.calibration == result.calibration
    assert np.array_equal(loaded.depth, [stored_value(d) for d in result.depth])
    assert list(loaded.curves) == ["GR", "ILD"]
    for name, values in result.curves.items():
        assert np.array_equal(loaded.curves[name], [stored_value(v) for v in values]), name
    assert loaded.mask.dtype == np.uint8 and np.array_equal(loaded.mask, result.mask)
    assert (loaded.model_version, loaded.input, loaded.tracing) == (result.model_version, result.input, result.tracing)
    assert loaded.coverage == result.coverage


def test_commit_writes_exactly_the_receipt_keys_and_nothing_else(store):
    result = make_result()
    receipt = contracts.commit(result, store.root, fs=store.fs)
    prefix = f"{store.resolve()[1]}/{result.request_id}"
    assert receipt.request_id == result.request_id and receipt.written is True
    assert receipt.keys == {name: f"{prefix}/{name}" for name in NAMES}
    assert receipt.to_dict() == {"request_id": result.request_id, "keys": receipt.keys, "written": True}
    everything = files_under(store, container(store))  # the tmp folder or the whole bucket
    under = f"{posixpath.basename(store.resolve()[1])}/{result.request_id}"
    assert sorted(everything) == sorted(f"{under}/{name}" for name in NAMES)  # no temp files, nothing beside
    assert everything == {f"{under}/{n}": b for n, b in contracts.serialise(result).items()}


def test_retry_of_a_committed_request_writes_nothing(store):
    result = make_result()
    first = contracts.commit(result, store.root, fs=store.fs)
    before = files_under(store)
    fs = logged(store)
    again = contracts.commit(result, store.root, fs=fs)
    assert again.written is False and again.keys == first.keys
    assert [c for c in fs.calls if c[0] == "pipe_file"] == []
    assert files_under(store) == before
    contracts.load(store.root, result.request_id, fs=store.fs)


def test_two_roots_get_byte_identical_objects(store):
    result = make_result()
    other = store.root + "-b"
    contracts.commit(result, store.root, fs=store.fs)
    contracts.commit(result, other, fs=store.fs)
    assert files_under(store) == files_under(store, other)


# --- what load refuses -------------------------------------------------------------------------------------

def test_load_of_an_unknown_request_is_not_committed(store):
    with pytest.raises(contracts.NotCommitted, match="not committed"):
        contracts.load(store.root, make_result().request_id, fs=store.fs)


def test_malformed_request_id_is_refused_before_any_io(store):
    put(store, "../x/manifest.json", b"{}")  # what "../x" would reach, were it used as a path
    for bad_id in ["../x", "../" + "a" * 29, "A" * 32, "", None]:
        fs = logged(store)
        with pytest.raises(ValueError, match="32 lowercase hex"):
            contracts.load(store.root, bad_id, fs=fs)
        with pytest.raises(ValueError, match="32 lowercase hex"):
            contracts.is_committed(store.root, bad_id, fs=fs)
        assert fs.calls == [], bad_id


def test_leftovers_without_a_manifest_are_not_committed(store):
    result = make_result()
    objects = contracts.serialise(result)
    for name in ["GR.csv", "curves.las", "mask.png"]:
        put(store, f"{result.request_id}/{name}", objects[name])
    put(store, f"{result.request_id}/ILD.csv", objects["ILD.csv"][:2000])  # torn: fewer rows
    with pytest.raises(contracts.NotCommitted):
        contracts.load(store.root, result.request_id, fs=store.fs)
    assert not contracts.is_committed(store.root, result.request_id, fs=store.fs)
    report = contracts.audit(store.root, fs=store.fs)
    (entry,) = report.entries
    assert (entry.request_id, entry.status) == (result.request_id, "uncommitted") and report.ok
    assert entry.objects == ["GR.csv", "ILD.csv", "curves.las", "mask.png"]
    assert entry.rows["GR.csv"] == 300 and 0 < entry.rows["ILD.csv"] < 300
    assert "no manifest.json" in entry.reason


def test_commit_over_leftovers_converges(store):
    result = make_result()
    objects = contracts.serialise(result)
    put(store, f"{result.request_id}/GR.csv", objects["GR.csv"][:100])
    put(store, f"{result.request_id}/mask.png", b"not a png")
    assert contracts.commit(result, store.root, fs=store.fs).written
    assert files_under(store) == {f"{result.request_id}/{n}": b for n, b in objects.items()}
    contracts.load(store.root, result.request_id, fs=store.fs)
    assert contracts.audit(store.root, fs=store.fs).summary == {"committed": 1, "uncommitted": 0, "corrupt": 0}


# --- tampering with a committed request ----------------------------------------------------------------

def cut_short(fs, path):
    fs.pipe_file(path, fs.cat_file(path)[:-37])


def flip_a_byte(fs, path):
    data = fs.cat_file(path)
    fs.pipe_file(path, data[:60] + bytes([data[60] ^ 0x01]) + data[61:])


def delete(fs, path):
    fs.rm_file(path)


TAMPER = {"GR.csv": (cut_short, "do not match the manifest"), "mask.png": (flip_a_byte, "do not match the manifest"),
          "curves.las": (delete, "listed in the manifest but missing")}


@pytest.mark.parametrize("name", sorted(TAMPER))
def test_tampered_object_is_caught_then_repaired_by_a_recommit(store, name):
    result, (tamper, reason) = make_result(), TAMPER[name]
    contracts.commit(result, store.root, fs=store.fs)
    committed = files_under(store)
    fs, base = store.resolve()
    tamper(fs, f"{base}/{result.request_id}/{name}")

    with pytest.raises(contracts.Corrupt, match=reason) as err:
        contracts.load(store.root, result.request_id, fs=store.fs)
    assert (err.value.request_id, err.value.obj) == (result.request_id, name)
    report = contracts.audit(store.root, fs=store.fs)
    (entry,) = report.entries
    assert entry.status == "corrupt" and entry.reason.startswith(f"{name}: ") and reason in entry.reason
    assert report.summary == {"committed": 0, "uncommitted": 0, "corrupt": 1} and not report.ok

    assert contracts.commit(result, store.root, fs=store.fs).written
    assert files_under(store) == committed  # the same manifest, the object restored
    assert contracts.audit(store.root, fs=store.fs).ok


def test_manifest_naming_an_object_outside_the_prefix_is_corrupt(store):
    result = make_result()
    contracts.commit(result, store.root, fs=store.fs)
    secret = b"outside the request's prefix"
    put(store, "escape", secret)  # what <root>/<id>/../escape names
    objects = contracts.serialise(result)
    m = json.loads(objects[MANIFEST])
    m["objects"]["../escape"] = {"bytes": len(secret), "sha256": sha256(secret)}
    put(store, f"{result.request_id}/{MANIFEST}", canonical_json(m))
    fs = logged(store)
    with pytest.raises(contracts.Corrupt, match="outside the request's prefix") as err:
        contracts.load(store.root, result.request_id, fs=fs)
    assert err.value.obj == MANIFEST
    assert not [path for _, path in fs.calls if "escape" in path]
    assert contracts.audit(store.root, fs=store.fs).summary["corrupt"] == 1


# --- conflicts and concurrent writers ----------------------------------------------------------------------

def other_result_same_id():
    """A result for the same request id (same input, calibration, model) with other curves: a
    non-deterministic writer."""
    a, b = make_result(), make_result(seed=1)
    assert a.request_id == b.request_id and contracts.serialise(a) != contracts.serialise(b)
    return a, b


def test_a_different_result_under_the_same_id_is_a_conflict(store):
    a, b = other_result_same_id()
    contracts.commit(a, store.root, fs=store.fs)
    before = files_under(store)
    fs = logged(store)
    with pytest.raises(contracts.ConflictError, match="a different result"):
        contracts.commit(b, store.root, fs=fs)
    assert [c for c in fs.calls if c[0] == "pipe_file"] == []
    assert files_under(store) == before
    assert np.array_equal(contracts.load(store.root, a.request_id, fs=store.fs).mask, a.mask)


class RacingFS(FaultyFS):
    """Another writer creates `manifest` at `path` right after this writer's first put: a deterministic
    stand-in for losing the race to the create-only manifest."""

    def __init__(self, inner, path: str, manifest: bytes):
        super().__init__(inner)
        self.rival = (path, manifest)

    def pipe_file(self, path, value, mode="overwrite", **kwargs):
        out = super().pipe_file(path, value, mode=mode, **kwargs)
        if self.rival:
            (rival_path, manifest), self.rival = self.rival, None
            self.inner.pipe_file(rival_path, manifest, mode="create")
        return out


def test_losing_the_manifest_race_to_the_same_result_succeeds(store):
    result = make_result()
    manifest = contracts.serialise(result)[MANIFEST]
    fs = RacingFS(healthy_fs(store), f"{store.resolve()[1]}/{result.request_id}/{MANIFEST}", manifest)
    assert contracts.commit(result, store.root, fs=fs).written
    assert fs.rival is None
    contracts.load(store.root, result.request_id, fs=store.fs)


def test_losing_the_manifest_race_to_another_result_is_a_conflict(store):
    a, b = other_result_same_id()
    path = f"{store.resolve()[1]}/{a.request_id}/{MANIFEST}"
    fs = RacingFS(healthy_fs(store), path, contracts.serialise(b)[MANIFEST])
    with pytest.raises(contracts.ConflictError, match="concurrently with different content"):
        contracts.commit(a, store.root, fs=fs)
    assert store.resolve()[0].cat_file(path) == contracts.serialise(b)[MANIFEST]  # the winner's, not overwritten


@pytest.mark.parametrize("n", [2, 8])
def test_concurrent_threads_committing_one_request_all_succeed(store, n):
    result, barrier, receipts, errors = make_result(), threading.Barrier(n), [], []

    def write():
        barrier.wait()
        try:
            receipts.append(contracts.commit(result, store.root, fs=store.fs))
        except Exception as e:  # collected, so the assertion shows it
            errors.append(e)

    threads = [threading.Thread(target=write) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [] and len(receipts) == n
    assert all(r.keys == receipts[0].keys for r in receipts)
    assert files_under(store) == {f"{result.request_id}/{k}": b for k, b in contracts.serialise(result).items()}
    assert contracts.audit(store.root, fs=store.fs).summary == {"committed": 1, "uncommitted": 0, "corrupt": 0}


WRITER = """
import json, sys
import contracts
from tests.builders import make_result  # run in the project root
result = make_result()
print("ready", flush=True)
sys.stdin.readline()
print(json.dumps(contracts.commit(result, sys.argv[1]).to_dict()), flush=True)
"""


def test_two_processes_committing_one_request_both_succeed(store):
    """Real processes (fresh filesystems, separate clients), released together once both are ready."""
    with processes(["-c", WRITER, store.root], ["-c", WRITER, store.root], stdin=subprocess.PIPE) as procs:
        assert [p.stdout.readline().strip() for p in procs] == ["ready", "ready"]
        for p in procs:
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
    receipts = [json.loads(out) for out, _ in outs]
    assert receipts[0]["keys"] == receipts[1]["keys"]
    result = make_result()
    assert files_under(store) == {f"{result.request_id}/{k}": b for k, b in contracts.serialise(result).items()}
    contracts.load(store.root, result.request_id, fs=store.fs)


# --- audit -------------------------------------------------------------------------------------------------

def test_audit_summary_and_report_shape(store):
    good = [make_result(image=b"a"), make_result(image=b"b")]
    for r in good:
        contracts.commit(r, store.root, fs=store.fs)
    leftover, broken = make_result(image=b"c"), make_result(image=b"d")
    put(store, f"{leftover.request_id}/GR.csv", contracts.serialise(leftover)["GR.csv"])
    contracts.commit(broken, store.root, fs=store.fs)
    fs, base = store.resolve()
    delete(fs, f"{base}/{broken.request_id}/mask.png")

    report = contracts.audit(store.root, fs=store.fs)
    assert report.summary == {"committed": 2, "uncommitted": 1, "corrupt": 1} and not report.ok
    d = report.to_dict()
    assert set(d) == {"root", "summary", "ok", "entries"} and d["root"] == store.root and d["ok"] is False
    assert [e["request_id"] for e in d["entries"]] == sorted(r.request_id for r in [*good, leftover, broken])
    for e in d["entries"]:
        assert set(e) == {"request_id", "status", "objects", "rows", "reason"}
    statuses = {e["request_id"]: e for e in d["entries"]}
    assert statuses[good[0].request_id] == {"request_id": good[0].request_id, "status": "committed",
                                            "objects": sorted(NAMES), "rows": {"GR.csv": 300, "ILD.csv": 300},
                                            "reason": ""}
    assert json.loads(json.dumps(d)) == d
    assert report.format_table().splitlines()[-1].endswith("2 committed, 1 uncommitted (leftovers), 1 corrupt")


def test_audit_of_a_missing_or_empty_root_is_ok_and_empty(store):
    fs, _ = store.resolve()
    empty = container(store)  # the tmp folder or the bucket: exists, holds nothing yet
    assert fs.exists(empty) and fs.find(empty) == []
    for root in (store.root, empty if store.kind == "local" else f"s3://{empty}"):
        report = contracts.audit(root, fs=store.fs)
        assert (report.entries, report.ok, report.summary["committed"]) == ([], True, 0), root


def test_audit_ignores_folders_that_are_not_requests(store):
    result = make_result()
    contracts.commit(result, store.root, fs=store.fs)
    put(store, "_ledger/2024-01-01.jsonl", b"{}\n")
    put(store, "notes/readme.txt", b"hello")
    put(store, f"{result.request_id.upper()}/GR.csv", b"depth,value\n")
    put(store, "README", b"top-level file")
    report = contracts.audit(store.root, fs=store.fs)
    assert [(e.request_id, e.status) for e in report.entries] == [(result.request_id, "committed")]


# --- the CLI -----------------------------------------------------------------------------------------------

def test_cli_audit_exit_status(store):
    """`digitise audit --json` exits 1 on a root holding a corrupt request; plain `digitise audit` exits 0
    on a clean root. Both run at once: each CLI start costs seconds (it imports torch)."""
    result, clean = make_result(), store.root + "-clean"
    for root in (store.root, clean):
        contracts.commit(result, root, fs=store.fs)
    fs, base = store.resolve()
    cut_short(fs, f"{base}/{result.request_id}/GR.csv")
    cli = ["-m", "cli", "audit"]
    with processes([*cli, "--json", store.root], [*cli, clean]) as procs:
        (corrupt, err1), (table, err2) = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [1, 0], (err1, err2)
    report = json.loads(corrupt)
    assert report["ok"] is False and report["summary"] == {"committed": 0, "uncommitted": 0, "corrupt": 1}
    assert report["entries"][0]["reason"].startswith("GR.csv: ")
    assert table.splitlines()[-1].endswith("1 committed, 0 uncommitted (leftovers), 0 corrupt")
