"""Keep a Serve replica's own server off the network on a loopback-only local cluster.

Ray Serve 2.60 starts an inter-deployment gRPC server in every replica, bound to "[::]:0" (all interfaces;
`ray/serve/_private/replica.py`, `_on_initialized`), whether or not gRPC is used between deployments (it is
not by default: RAY_SERVE_USE_GRPC_BY_DEFAULT=0). No option sets its host. The server is started after the
user constructor returns, so a deployment that calls `bind_replica_servers_to_loopback()` in its constructor
gets it bound to 127.0.0.1 instead. Only for `ServeConfig.loopback_only` (local runs and tests): on a
multi-node cluster replicas must stay reachable from other nodes.
"""
import logging

log = logging.getLogger(f"ray.serve.{__name__}")

_LOOPBACK = "127.0.0.1"


def bind_replica_servers_to_loopback() -> bool:
    """Rebind this process's future replica gRPC servers from all interfaces to 127.0.0.1. Returns False
    (and logs) if this Serve version does not look as expected, so nothing is patched blindly."""
    from ray.serve._private import replica

    original = getattr(replica, "add_port_to_grpc_server", None)
    if original is None:
        log.warning("loopback_only: ray.serve._private.replica.add_port_to_grpc_server not found in this Ray "
                    "version; the replica's internal gRPC server keeps Serve's default address")
        return False
    if getattr(original, "loopback", False):
        return True

    def add_port_to_grpc_server(server, address: str):
        host, _, port = address.rpartition(":")
        if host in ("[::]", "0.0.0.0", ""):
            address = f"{_LOOPBACK}:{port}"
        return original(server, address)

    add_port_to_grpc_server.loopback = True
    replica.add_port_to_grpc_server = add_port_to_grpc_server
    return True
