"""What the benchmarks share: a fresh loopback-only local Ray, a moto S3 server, where results go.
(The scripts import it as `common`: a script's own folder is on its path.)"""
import contextlib
import logging
import os
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
    """A moto S3 server on 127.0.0.1 and the AWS environment pointing at it (set before Ray starts, so Ray
    workers inherit it); yields an uncached s3fs filesystem on it."""
    import s3fs
    from moto.server import ThreadedMotoServer
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "bench",
           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield s3fs.S3FileSystem(endpoint_url=env["AWS_ENDPOINT_URL"], key="bench", secret="bench",
                                skip_instance_cache=True, use_listings_cache=False)
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
