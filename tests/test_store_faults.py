"""Commit under storage faults, on every backend: nothing is acknowledged, nothing is trusted, a retry converges.

Faults come from `FaultyFS` (tests/faults.py) wrapped around the filesystem commit would use itself (locally
`AtomicLocalFileSystem`, which a plain `LocalFileSystem` becomes inside `contracts`). Outcomes are checked
with the plain filesystem (`store.resolve()`), and the retry runs on a healthy one.
"""
import socket
import time

import pytest

import contracts
from contracts.format import MANIFEST
from contracts.store import AtomicLocalFileSystem
from faults import FaultyFS, SimulatedCrash
from builders import make_result


def faulty(store, **faults) -> FaultyFS:
    inner = AtomicLocalFileSystem() if store.kind == "local" else store.fs
    return FaultyFS(inner, **faults)


def manifest_path(store, result) -> str:
    return f"{store.resolve()[1]}/{result.request_id}/{MANIFEST}"


def assert_nothing_committed(store, result):
    assert not store.resolve()[0].exists(manifest_path(store, result))
    with pytest.raises(contracts.NotCommitted):
        contracts.load(store.root, result.request_id, fs=store.fs)
    assert not contracts.is_committed(store.root, result.request_id, fs=store.fs)


def assert_retry_converges(store, result):
    """A retry on a healthy store commits; the request then holds exactly its objects, all valid."""
    assert contracts.commit(result, store.root, fs=store.fs).request_id == result.request_id
    assert contracts.load(store.root, result.request_id, fs=store.fs).request_id == result.request_id
    report = contracts.audit(store.root, fs=store.fs)
    assert report.ok and report.summary == {"committed": 1, "uncommitted": 0, "corrupt": 0}
    assert report.entries[0].objects == sorted(contracts.serialise(result))  # no leftovers, no temp files


# --- a put that fails, lands short, or reads back wrong: StorageError, nothing committed ------------------

PUT_FAULTS = {  # each kind on another object (first, second, last); crashes below cover every position
    "bad-read-back-GR.csv": (dict(corrupt_on_read={"GR.csv": 1}), "read back"),
    "truncated-ILD.csv": (dict(truncate_on_put={"ILD.csv": 1}), "read back"),
    "torn-put-mask.png": (dict(raise_on_put={"mask.png": 1}, partial=True), "injected put failure"),
}


@pytest.mark.parametrize("case", sorted(PUT_FAULTS))
def test_failed_object_put_is_a_storage_error_and_commits_nothing(store, case):
    faults, message = PUT_FAULTS[case]
    result, fs = make_result(), faulty(store, **faults)
    with pytest.raises(contracts.StorageError, match=message):
        contracts.commit(result, store.root, fs=fs)
    assert ("pipe_file", manifest_path(store, result)) not in fs.calls, "the manifest was attempted"
    assert_nothing_committed(store, result)
    assert_retry_converges(store, result)


def test_torn_put_keeps_the_store_error_as_cause(store):
    result = make_result()
    with pytest.raises(contracts.StorageError) as err:
        contracts.commit(result, store.root, fs=faulty(store, raise_on_put={"GR.csv": 1}, partial=True))
    assert isinstance(err.value.__cause__, OSError) and "injected" in str(err.value.__cause__)
    assert isinstance(err.value, OSError)  # callers that retry on OSError keep working


@pytest.mark.parametrize("puts", [1, 2, 3, 4])
def test_crash_between_objects_commits_nothing(store, puts):
    """The writer dies after `puts` whole objects (4: just before the manifest). Nothing catches the crash."""
    result, fs = make_result(), faulty(store, crash_after_puts=puts)
    with pytest.raises(SimulatedCrash):
        contracts.commit(result, store.root, fs=fs)
    assert fs.crashed and fs.puts_done == puts
    assert_nothing_committed(store, result)
    assert_retry_converges(store, result)


# --- faults on the manifest itself -------------------------------------------------------------------------

def test_failed_manifest_put_commits_nothing(store):
    result, fs = make_result(), faulty(store, raise_on_put={MANIFEST: 1})
    with pytest.raises(contracts.StorageError, match="could not commit"):
        contracts.commit(result, store.root, fs=fs)
    assert_nothing_committed(store, result)
    assert_retry_converges(store, result)


def test_manifest_that_reads_back_wrong_is_not_acknowledged(store):
    """The manifest landed whole but its verify read came back different: the commit may have happened,
    so no receipt is given; the retry finds it committed and writes nothing."""
    result = make_result()
    with pytest.raises(contracts.StorageError, match="read back"):
        contracts.commit(result, store.root, fs=faulty(store, corrupt_on_read={MANIFEST: 1}))
    retry = faulty(store)
    assert contracts.commit(result, store.root, fs=retry).written is False
    assert [op for op, _ in retry.calls if op == "pipe_file"] == []
    assert_retry_converges(store, result)


def test_truncated_manifest_is_never_trusted_and_never_overwritten(store):
    """A store that cuts the create-only manifest short leaves it torn: no receipt, `load` and `audit` call
    it corrupt, and a retry refuses loudly rather than overwrite a manifest (STYLE.md, Storage)."""
    result = make_result()
    with pytest.raises(contracts.StorageError, match="read back"):
        contracts.commit(result, store.root, fs=faulty(store, truncate_on_put={MANIFEST: 1}))
    with pytest.raises(contracts.Corrupt) as err:
        contracts.load(store.root, result.request_id, fs=store.fs)
    assert err.value.obj == MANIFEST
    assert not contracts.audit(store.root, fs=store.fs).ok
    with pytest.raises(contracts.ConflictError):
        contracts.commit(result, store.root, fs=store.fs)


# --- the store is unreachable ------------------------------------------------------------------------------

def closed_port() -> int:
    """A loopback port nothing listens on (bound by the OS, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_s3_outage_is_a_storage_error_quickly():
    import botocore.exceptions
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=f"http://127.0.0.1:{closed_port()}", key="testing", secret="testing",
                           skip_instance_cache=True, use_listings_cache=False,
                           config_kwargs={"retries": {"max_attempts": 1, "mode": "standard"}, "connect_timeout": 2})
    fs.retries = 1  # s3fs's own retry loop (a class attribute, not an argument)
    result, root = make_result(), "s3://bucket/results"
    calls = [lambda: contracts.commit(result, root, fs=fs), lambda: contracts.load(root, result.request_id, fs=fs),
             lambda: contracts.is_committed(root, result.request_id, fs=fs), lambda: contracts.audit(root, fs=fs)]
    start = time.monotonic()
    for call in calls:
        with pytest.raises(contracts.StorageError) as err:
            call()
        assert isinstance(err.value.__cause__, botocore.exceptions.EndpointConnectionError)
    assert time.monotonic() - start < 20


def test_local_root_that_cannot_be_created_is_a_storage_error(tmp_path):
    (tmp_path / "file").write_bytes(b"not a folder")
    with pytest.raises(contracts.StorageError) as err:
        contracts.commit(make_result(), str(tmp_path / "file" / "results"))
    assert isinstance(err.value.__cause__, NotADirectoryError)


# --- an S3 endpoint that acknowledges what it does not hold (tests/s3_proxy.py on the wire) -----------------

@pytest.fixture
def s3_through(s3_server, s3_bucket):
    """(proxy, fs, root): a FaultProxy (faults off) in front of the moto server, s3fs on the proxy."""
    from builders import make_s3fs
    from s3_proxy import FaultProxy

    with FaultProxy(s3_server, rate=0.0, kinds=("phantom_put",)) as proxy:
        yield proxy, make_s3fs(proxy.url), f"s3://{s3_bucket}/results"


class OnlyCall:
    """A FaultProxy random stream that faults the n-th `method` call (its last logged) and no other."""
    def __init__(self, proxy, n: int, method: str):
        self.proxy, self.n, self.method = proxy, n, method

    def random(self) -> float:
        calls = [c for c in self.proxy.calls if c.startswith(self.method + " ")]
        return 0.0 if self.proxy.calls[-1].startswith(self.method + " ") and len(calls) == self.n else 1.0

    def choice(self, kinds):
        return kinds[0]


@pytest.mark.parametrize("put", [1, 2, 3, 4])
def test_phantom_put_on_s3_is_not_acknowledged(s3_through, s3_fs, put):
    """The put-th object's PUT is answered 200 with the right ETag but never stored: the listing after the puts
    does not vouch for it, its read-back finds nothing, so no manifest and no receipt. (An earlier attempt at
    trusting the PUT's own ETag committed over such a hole.)"""
    proxy, fs, root = s3_through
    result = make_result()
    proxy.rng, proxy.rate = OnlyCall(proxy, put, "PUT"), 1.0
    with pytest.raises(contracts.StorageError, match="read back nothing"):
        contracts.commit(result, root, fs=fs)
    assert proxy.counts == {"phantom_put": 1}
    proxy.rate = 0.0
    assert not s3_fs.exists(f"{root.removeprefix('s3://')}/{result.request_id}/{MANIFEST}")
    assert contracts.commit(result, root, fs=fs).written
    assert contracts.audit(root, fs=fs).summary == {"committed": 1, "uncommitted": 0, "corrupt": 0}


def test_on_s3_one_listing_verifies_the_objects_and_the_manifest_is_read_back(s3_through):
    """A fresh commit's calls: no object is fetched after its PUT (the listing's ETags vouch for them, being
    their MD5s); the manifest, the commit point, is read back whole."""
    proxy, fs, root = s3_through
    result = make_result()
    contracts.commit(result, root, fs=fs)
    objects = [n for n in contracts.serialise(result) if n != MANIFEST]
    calls = [c.split("?")[0] if c.startswith("PUT") else c for c in proxy.calls]
    assert sorted(c for c in calls if c.startswith("PUT")) == sorted(
        f"PUT /{root.removeprefix('s3://')}/{result.request_id}/{n}" for n in objects + [MANIFEST])
    reads = [c for c in calls if c.startswith(("GET", "HEAD"))]
    assert not [c for c in reads if any(c.split("?")[0].endswith(f"/{n}") for n in objects)], reads
    listings = [c for c in reads if "list-type=2" in c and MANIFEST not in c]   # s3fs lists a missing key too
    assert len(listings) == 1 and result.request_id in listings[0], reads
    assert calls[-1] == f"GET /{root.removeprefix('s3://')}/{result.request_id}/{MANIFEST}"


def test_a_manifest_committed_by_another_writer_after_our_listing_is_read_not_taken_for_missing(
        s3_server, s3_bucket):
    """Two writers of one request: the other creates the manifest between our listing of the prefix and our
    create. Ours is refused as existing, and the read that checks it must reach the store: an s3fs with its
    listings cache on (fsspec's default) would answer it from our listing, which lacks the manifest ("vanished
    while being read": a CI failure of the two-process test)."""
    import s3fs

    from builders import make_s3fs
    root, result = f"s3://{s3_bucket}/results", make_result()
    fs = s3fs.S3FileSystem(endpoint_url=s3_server, skip_instance_cache=True)   # listings cached, as by default
    listing = fs.ls

    def ls_then_the_other_writer_commits(path, *args, **kwargs):
        entries = listing(path, *args, **kwargs)
        contracts.commit(result, root, fs=make_s3fs(s3_server))
        return entries

    fs.ls = ls_then_the_other_writer_commits
    receipt = contracts.commit(result, root, fs=fs)
    assert receipt.request_id == result.request_id
    assert contracts.audit(root, fs=make_s3fs(s3_server)).summary == {"committed": 1, "uncommitted": 0, "corrupt": 0}
