"""Shared fixtures: a real S3 endpoint (moto server on 127.0.0.1), per-backend stores, one local Ray.

Fixtures (pick the narrowest one you need):

- `s3_server` (session): the endpoint URL, e.g. "http://127.0.0.1:40229", of a moto S3 server on a port
  the OS chose. While it runs, the environment holds AWS_ENDPOINT_URL=<endpoint>, AWS_ACCESS_KEY_ID /
  AWS_SECRET_ACCESS_KEY = TEST_CREDENTIALS (distinctive strings, so tests can grep stores and logs for them;
  moto accepts any), AWS_DEFAULT_REGION=us-east-1, so a plain
  `fsspec.core.url_to_fs("s3://bucket/key")` or `boto3.client("s3")` reaches it, in this process and in
  subprocesses / Ray workers started later (they inherit the environment). Restored at session end.
- `s3_fs` (function): resets moto (all buckets dropped) and returns an `s3fs.S3FileSystem` on the endpoint
  with no instance cache and no listings cache, so it never answers from a stale listing. Picklable (it can
  be passed to Ray tasks as `fs=`).
- `s3_bucket` (function): the name of a fresh, uniquely named bucket created through `s3_fs`.
- `store` (function, params local/s3): a `Store(kind, root, fs)`; storage tests that take it run once per
  backend (ids `[local]`, `[s3]`). The root does not exist yet on either backend.
- `digitiser` (session): a `Digitiser` of the shipped weights (`weights`), for tests that read scans through
  the model.
- `ink_weights` (session): stand-in weights that read every inked scan (plumbing tests, not the model).
- `ray_local` (session): `ray.init(num_cpus=4)` on loopback only; started by the first test that asks for
  it, shut down at session end. It depends on `s3_server`, so Ray workers inherit the S3 environment.
"""
import logging
import urllib.request
import uuid
from dataclasses import dataclass

import fsspec
import pytest

from builders import TEST_CREDENTIALS, ink_detector, make_s3fs


@pytest.fixture(scope="session")
def s3_server():
    """Endpoint URL (str) of a moto S3 server on 127.0.0.1:<port chosen by the OS>; env set while it runs."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one INFO line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for name, value in {**TEST_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint}.items():
            mp.setenv(name, value)
        mp.delenv("AWS_PROFILE", raising=False)  # a developer's profile must not override the test keys
        try:
            yield endpoint
        finally:
            server.stop()


@pytest.fixture(scope="module")
def s3_client(s3_server):
    """One uncached S3FileSystem per test module: building a client costs ~0.5 s of CPU, and with no instance
    or listings cache it carries nothing from one test to the next."""
    return make_s3fs(s3_server)


@pytest.fixture
def s3_fs(s3_server, s3_client):
    """s3fs.S3FileSystem on the moto endpoint, uncached. Moto is reset first: no bucket from earlier tests
    survives. Request `s3_bucket` for a fresh bucket to write in."""
    urllib.request.urlopen(urllib.request.Request(f"{s3_server}/moto-api/reset", method="POST")).close()
    return s3_client


@pytest.fixture
def s3_bucket(s3_fs) -> str:
    """Name of a fresh, empty, uniquely named bucket, created through `s3_fs`."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3_fs.mkdir(name)
    return name


@dataclass(frozen=True)
class Store:
    """A results root on one backend.

    kind: "local" or "s3".
    root: URL string to pass as the root: a tmp folder path (local) or "s3://<bucket>/results" (s3).
    fs:   the fsspec filesystem to pass as `fs=`, or None (local), meaning "derive it from the root".
    """
    kind: str
    root: str
    fs: fsspec.AbstractFileSystem | None

    def resolve(self) -> tuple[fsspec.AbstractFileSystem, str]:
        """(filesystem, root path inside it), for tests that inspect or tamper with stored objects directly.
        Locally it creates parent folders on write (auto_mkdir), as S3 has no folders to create."""
        if self.fs is None:
            return fsspec.core.url_to_fs(self.root, auto_mkdir=True)
        return self.fs, self.fs._strip_protocol(self.root)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> Store:
    """A fresh, not yet existing results root, once per backend. S3 fixtures start only for the s3 case."""
    if request.param == "local":
        return Store("local", str(tmp_path / "results"), None)
    bucket = request.getfixturevalue("s3_bucket")
    return Store("s3", f"s3://{bucket}/results", request.getfixturevalue("s3_fs"))


@pytest.fixture(scope="session")
def weights() -> str:
    """The shipped segmenter weights: the one `weights` every test module uses. They are tracked in the
    repository, so a missing file is a failure, not a reason to test something else."""
    from digitiser import DEFAULT_WEIGHTS
    if not DEFAULT_WEIGHTS.exists():
        pytest.fail(f"the shipped segmenter weights {DEFAULT_WEIGHTS} are not there")
    return str(DEFAULT_WEIGHTS)


@pytest.fixture(scope="session")
def digitiser(weights):
    """A `Digitiser` of the shipped weights, shared by the modules that read scans through the model (loading
    and checking the weights once)."""
    from digitiser.predictor import Digitiser
    return Digitiser(weights)


@pytest.fixture(scope="session")
def ink_weights(tmp_path_factory) -> str:
    """Stand-in weights that mark dark pixels as curve ink (`builders.ink_detector`): every inked scan reads,
    for tests of the plumbing (routes, faults, hostile input) rather than of the model."""
    path = tmp_path_factory.mktemp("weights") / "ink.bin"
    ink_detector(path)
    return str(path)


@pytest.fixture(scope="session")
def ray_local(s3_server):
    """A local Ray (4 logical CPUs, no dashboard) listening on 127.0.0.1 only; yields the RayContext.

    4 logical CPUs on this 2-core machine: CPUs are scheduling tokens, and the cross-route test runs a batch
    job beside the running Serve apps, as on a shared cluster (its segmenter actor asks a whole CPU).

    The loopback set-up itself is cluster.connect's (the one place that knows how)."""
    import ray

    from cluster import connect
    # Raylet and workers are spawned from this process now, so they inherit the S3 environment.
    context = connect(num_cpus=4)
    try:
        yield context
    finally:
        ray.shutdown()
