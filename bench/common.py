"""What the benchmarks share: a fresh loopback-only local Ray, a moto S3 server, where results go.
(The scripts import it as `common`: a script's own folder is on its path.)"""
import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def start_local_ray(num_cpus: int | None = None):
    """A new local Ray on 127.0.0.1 for this benchmark alone (cluster.connect never joins another Ray running on
    the machine). Returns the ray module."""
    import ray

    import cluster
    cluster.connect(num_cpus=num_cpus)
    return ray


@contextlib.contextmanager
def moto_s3():
    """A moto S3 server on 127.0.0.1, in a process of its own as a real store would be (in this process its
    request handling would share the GIL with Ray Data's scheduling loop, which runs in the driver), and the
    AWS environment pointing at it (set before Ray starts, so Ray workers inherit it); yields an uncached
    s3fs filesystem on it."""
    import s3fs
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "bench",
           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    try:
        _wait_listening(port, server)
        os.environ.update(env)
        yield s3fs.S3FileSystem(endpoint_url=env["AWS_ENDPOINT_URL"], key="bench", secret="bench",
                                skip_instance_cache=True, use_listings_cache=False)
    finally:
        server.terminate()
        server.wait(10)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, server: subprocess.Popen, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the moto S3 server exited with {server.returncode}: is moto[server] installed?")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise RuntimeError(f"the moto S3 server did not listen on 127.0.0.1:{port} within {timeout_s:.0f} s")
