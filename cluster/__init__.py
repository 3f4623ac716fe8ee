"""Where the Ray cluster comes from: a real one (`address`), or a local one on this machine's loopback.

Entry points call `connect()` once; nothing deeper initialises Ray. For a real cluster, `cluster.yaml` at
the repository root is a Ray cluster-launcher config (`ray up cluster.yaml`), and jobs pass its address.
"""
import logging
import os

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


def describe(address: str | None = "auto") -> str:
    """One line per node plus the cluster's total resources (for `digitise cluster`)."""
    import ray
    connect(address)
    lines = [f"{n['NodeManagerAddress']}: alive={n['Alive']} {n['Resources']}" for n in ray.nodes()]
    lines.append(f"total: {ray.cluster_resources()}")
    return "\n".join(lines)


__all__ = ["connect", "describe"]
