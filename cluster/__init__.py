"""Where the Ray cluster comes from, and what it is doing.

`connect(address)`: join a real cluster, or start a local one on this machine's loopback; entry points call it
once, nothing deeper initialises Ray. `status(address)` / `snapshot()`: a typed ClusterSnapshot (nodes, Serve
apps, jobs, pending demands), `format_snapshot` its table. Deployment configs: `cluster.yaml` at the repository
root (`ray up cluster.yaml`) and `k8s/` (KubeRay), both checked by `cluster.manifests`.
"""
import logging
import os

from cluster.report import ClusterSnapshot, format_snapshot, snapshot

log = logging.getLogger(__name__)


def connect(address: str | None = None, num_cpus: int | None = None, **kwargs):
    """Join the cluster at `address` ("auto", "ray://host:10001", ...), or start a local Ray that listens on
    127.0.0.1 only. Returns the RayContext. Idempotent within a process."""
    import ray
    if ray.is_initialized():
        return ray.get_runtime_context()
    if address:
        log.info("joining the Ray cluster at %s", address)
        return ray.init(address=address, **kwargs)
    # Ray 2.60 rewrites a loopback node address to the host's outside one unless "cluster mode" is off;
    # raylet and workers read the env var, this process reads the already imported constant.
    import ray._private.ray_constants as ray_constants
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")   # no network: do not try to report
    ray_constants.ENABLE_RAY_CLUSTER = False
    log.info("starting a local Ray on 127.0.0.1")
    # address="local": always a new local Ray, never one some other process left running on this machine
    return ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                    **kwargs)


def status(address: str | None = "auto"):
    """Connect to the cluster at `address` and return its ClusterSnapshot (for `digitise cluster status`). The
    connection prints nothing of the cluster's own (worker logs, autoscaler events), so stdout stays the
    caller's (e.g. clean JSON)."""
    os.environ.setdefault("RAY_SCHEDULER_EVENTS", "0")   # read by this driver when it connects
    connect(address, log_to_driver=False)
    return snapshot()


__all__ = ["connect", "status", "snapshot", "format_snapshot", "ClusterSnapshot"]
