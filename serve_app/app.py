"""Building the Serve application from a ServeConfig, and running it locally until interrupted (`digitise serve`)."""
import ipaddress
import logging
import signal
import threading

from ray import serve
from ray.serve import Application
from ray.serve.config import BackpressureConfig

from digitiser import CheckpointError, Digitiser
from serve_app.config import ServeConfig
from serve_app.http import token_digest
from serve_app.ingress import Ingress
from serve_app.segmenter import Segmenter

log = logging.getLogger(__name__)

APP_NAME = "digitiser"


def build_app(config: ServeConfig) -> Application:
    """The typed application builder (`import_path: serve_app:build_app`; Serve validates `args` into a
    ServeConfig). Returns the bound app: Ingress -> Segmenter. A dict is accepted too."""
    if not isinstance(config, ServeConfig):
        config = ServeConfig.model_validate(config)
    backpressure = BackpressureConfig(retry_after_s=config.retry_after_s)
    segmenter = Segmenter.options(
        num_replicas=config.replicas,
        ray_actor_options={"num_cpus": config.segmenter_num_cpus, "num_gpus": config.num_gpus},
        max_ongoing_requests=config.segmenter_ongoing,
        max_queued_requests=config.segmenter_max_queued_requests,
        backpressure_config=backpressure,
        user_config=config.batching.model_dump(),
    ).bind(config.weights, config.segmenter_device, config.tracing, config.loopback_only)
    ingress = Ingress.options(
        num_replicas=config.ingress_replicas,
        ray_actor_options={"num_cpus": config.ingress_num_cpus},
        max_ongoing_requests=config.ingress_max_ongoing_requests,
        max_queued_requests=config.ingress_max_queued_requests,
        backpressure_config=backpressure,
    )
    return ingress.bind(segmenter, config)


def check_exposure(host: str, config: ServeConfig, insecure: bool = False) -> None:
    """Refuse (ValueError) to listen beyond loopback without a bearer token unless `insecure`; check that the
    token file is usable, so a bad one stops `digitise serve` before Ray starts."""
    if config.auth_token_file:
        token_digest(config.auth_token_file)
        return
    if not (insecure or is_loopback(host)):
        raise ValueError(f"refusing to serve on {host} without a bearer token: anyone who reaches it could use "
                         "the model and the store; pass --auth-token-file FILE, or --insecure if a gateway in "
                         "front of it authenticates")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost; False for 0.0.0.0, :: and any other address or name."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve_forever(config: ServeConfig, host: str = "127.0.0.1", port: int = 8000, insecure: bool = False) -> int:
    """Start a loopback-only local Ray and the app on host:port; block until Ctrl-C or SIGTERM, then shut
    Serve and Ray down. Returns the exit code (2: refused by `check_exposure`). A local store path should be
    absolute (replicas do not share the caller's working directory)."""
    try:
        check_exposure(host, config, insecure=insecure)
    except ValueError as e:
        log.error("%s", e)
        return 2
    try:  # fail fast, with the preflight's own message, before Ray and Serve start
        Digitiser(config.weights, device="cpu")
    except CheckpointError as e:
        log.error("%s", e)
        return 1
    ray = start_local_ray()
    try:
        serve.start(http_options={"host": host, "port": port})
        try:
            serve.run(build_app(config), name=APP_NAME, route_prefix="/", blocking=False)
        except RuntimeError as e:  # a replica that cannot start (e.g. weights failing their preflight)
            log.error("the app did not start: %s", str(e).strip().splitlines()[-1])
            return 1
        log.info("serving on http://%s:%d (POST /v1/digitise, docs at /docs), results under %s; Ctrl-C stops",
                 host, port, config.store)
        _wait_for_signal()
        return 0
    except KeyboardInterrupt:  # Ctrl-C while still deploying
        return 130
    finally:
        log.info("shutting down")
        serve.shutdown()
        ray.shutdown()


def serve_on_cluster(config: ServeConfig, address: str, host: str = "127.0.0.1", port: int = 8000,
                     insecure: bool = False) -> int:
    """`digitise serve --address A`: deploy the app onto the existing Ray cluster at `address` (Serve's proxy
    on host:port), block until Ctrl-C or SIGTERM, then delete the app and disconnect; the cluster and Serve
    itself keep running. Replicas stay reachable from other nodes (loopback_only is turned off). For a lasting
    deployment use `serve deploy serve_app/config.yaml` instead. Returns the exit code (2: refused by
    `check_exposure`)."""
    import ray

    from cluster import connect
    try:
        check_exposure(host, config, insecure=insecure)
    except ValueError as e:
        log.error("%s", e)
        return 2
    config = config.model_copy(update={"loopback_only": False})
    connect(address)
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(build_app(config), name=APP_NAME, route_prefix="/", blocking=False)
        log.info("serving on the cluster at %s: http://%s:%d, results under %s; Ctrl-C removes the app",
                 address, host, port, config.store)
        _wait_for_signal()
        return 0
    except RuntimeError as e:   # a replica that cannot start
        log.error("the app did not start: %s", str(e).strip().splitlines()[-1])
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        log.info("removing the app %s from the cluster", APP_NAME)
        serve.delete(APP_NAME)
        ray.shutdown()


def start_local_ray():
    """A local Ray on 127.0.0.1 only (the one place that knows how: `cluster.connect`)."""
    import ray

    from cluster import connect
    connect()
    return ray


def _wait_for_signal():
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
