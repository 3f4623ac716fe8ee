"""The fault-injecting filesystem (tests/faults.py) and the shared storage fixtures, on every backend."""
import pickle
import subprocess
import sys

import fsspec
import pytest

from faults import FaultyFS, SimulatedCrash

DATA = b"depth,GR\n1000.0,42.5\n1000.3,43.1\n"


@pytest.fixture
def inner(store):
    """(filesystem, existing root path) on the store's backend."""
    fs, root = store.resolve()
    fs.makedirs(root, exist_ok=True)
    return fs, root


def put(fs, root, name, data=DATA, **kw):
    fs.pipe_file(f"{root}/{name}", data, **kw)
    return f"{root}/{name}"


def test_passes_calls_through_unchanged(inner):
    fs, root = inner
    faulty = FaultyFS(fs)
    path = put(faulty, root, "req/GR.csv")
    assert fs.cat_file(path) == DATA
    assert faulty.cat_file(path) == DATA
    assert faulty.exists(path) and faulty.isfile(path) and not faulty.isdir(path)
    assert faulty.info(path)["size"] == len(DATA)
    assert [p.rsplit("/", 1)[1] for p in faulty.find(root)] == ["GR.csv"]
    assert faulty.calls[0] == ("pipe_file", path)


def test_raise_on_put_fails_only_the_nth_matching_put(inner):
    fs, root = inner
    faulty = FaultyFS(fs, raise_on_put={"mask.png": 2})
    put(faulty, root, "a/mask.png")
    put(faulty, root, "a/GR.csv")
    with pytest.raises(OSError, match="injected"):
        put(faulty, root, "b/mask.png")
    assert not fs.exists(f"{root}/b/mask.png")
    assert fs.cat_file(put(faulty, root, "b/mask.png")) == DATA


def test_raise_on_put_partial_leaves_a_torn_prefix(inner):
    fs, root = inner
    faulty = FaultyFS(fs, raise_on_put={"mask.png": 1}, partial=True)
    with pytest.raises(OSError):
        put(faulty, root, "a/mask.png")
    assert fs.cat_file(f"{root}/a/mask.png") == DATA[: len(DATA) // 2]


def test_truncate_on_put_stores_half_and_returns_normally(inner):
    fs, root = inner
    path = put(FaultyFS(fs, truncate_on_put={"GR.csv": 1}), root, "a/GR.csv")
    assert fs.cat_file(path) == DATA[: len(DATA) // 2]


def test_corrupt_on_read_flips_one_byte_on_the_nth_read(inner):
    fs, root = inner
    path = put(fs, root, "a/GR.csv")
    faulty = FaultyFS(fs, corrupt_on_read={"GR.csv": (2,)})
    first, second, third = (faulty.cat_file(path) for _ in range(3))
    assert first == third == DATA
    assert len(second) == len(DATA) and sum(a != b for a, b in zip(second, DATA)) == 1


def test_crash_after_puts_stops_everything_after_n_puts(inner):
    fs, root = inner
    faulty = FaultyFS(fs, crash_after_puts=2)
    put(faulty, root, "a/1")
    put(faulty, root, "a/2")
    with pytest.raises(SimulatedCrash):
        put(faulty, root, "a/3")
    with pytest.raises(SimulatedCrash):
        faulty.exists(f"{root}/a/1")
    assert sorted(p.rsplit("/", 1)[1] for p in fs.find(root)) == ["1", "2"]


def test_simulated_crash_escapes_except_exception():
    assert not issubclass(SimulatedCrash, Exception)


def test_patterns_match_the_whole_path_too(inner):
    fs, root = inner
    faulty = FaultyFS(fs, raise_on_put={"*/bad/*.png": 1})
    put(faulty, root, "good/mask.png")
    with pytest.raises(OSError):
        put(faulty, root, "bad/mask.png")


def test_create_mode_reaches_the_store(inner):
    fs, root = inner
    faulty = FaultyFS(fs)
    path = put(faulty, root, "a/manifest.json", mode="create")
    with pytest.raises(FileExistsError):
        put(faulty, root, "a/manifest.json", b"other", mode="create")
    assert fs.cat_file(path) == DATA


def test_each_instance_has_its_own_counters(tmp_path):
    local = fsspec.filesystem("file")
    a, b = FaultyFS(local, raise_on_put={"x": 1}), FaultyFS(local, raise_on_put={"x": 1})
    assert a is not b
    with pytest.raises(OSError):
        a.pipe_file(str(tmp_path / "x"), b"1")
    with pytest.raises(OSError):
        b.pipe_file(str(tmp_path / "x"), b"1")


def test_pickled_copy_starts_from_zero(tmp_path):
    faulty = FaultyFS(fsspec.filesystem("file"), raise_on_put={"x": 1})
    with pytest.raises(OSError):
        faulty.pipe_file(str(tmp_path / "x"), b"1")
    with pytest.raises(OSError):
        pickle.loads(pickle.dumps(faulty)).pipe_file(str(tmp_path / "x"), b"1")


# -- the fixtures themselves ---------------------------------------------------------------------------

def test_store_root_starts_missing(store):
    fs, root = store.resolve()
    assert not fs.exists(root)


def test_s3_create_only_put_maps_to_file_exists(s3_fs, s3_bucket):
    s3_fs.pipe_file(f"{s3_bucket}/k", b"1", mode="create")
    with pytest.raises(FileExistsError) as err:
        s3_fs.pipe_file(f"{s3_bucket}/k", b"2", mode="create")
    assert err.value.__cause__.response["Error"]["Code"] == "PreconditionFailed"


def test_subprocess_reaches_s3_through_the_environment(s3_fs, s3_bucket):
    s3_fs.pipe_file(f"{s3_bucket}/k", b"hello")
    code = f"import fsspec; print(fsspec.open('s3://{s3_bucket}/k', 'rb').open().read().decode())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "hello"


def test_ray_workers_reach_s3_on_loopback(ray_local, s3_fs, s3_bucket):
    import ray

    s3_fs.pipe_file(f"{s3_bucket}/k", b"hello")

    @ray.remote
    def read(url):
        return fsspec.open(url, "rb").open().read(), ray.util.get_node_ip_address()

    assert ray.get(read.remote(f"s3://{s3_bucket}/k")) == (b"hello", "127.0.0.1")


def test_s3_fs_pickles_with_its_settings(s3_fs, s3_bucket):
    s3_fs.pipe_file(f"{s3_bucket}/k", b"hello")
    copy = pickle.loads(pickle.dumps(s3_fs))
    assert copy.cat_file(f"{s3_bucket}/k") == b"hello"
    assert copy.storage_options["use_listings_cache"] is False
