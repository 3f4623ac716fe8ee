"""What a running cluster is doing: `snapshot()` -> ClusterSnapshot (typed, JSON-able) and `format_snapshot`.

Sources, all read through the GCS, so no dashboard is needed:
- nodes and pending work: the autoscaler's cluster status (`ray.autoscaler.v2.sdk.get_cluster_status`, what
  `ray status` shows; filled in by the GCS under the v1 and the v2 autoscaler alike): each node's type, state
  and resource use, launches in flight, and the resource demands nothing can place yet (what the autoscaler
  is launching nodes for);
- Serve: `serve.status()` (replica counts by state) and, per deployment, the total of requests running or
  queued that Serve's autoscaler itself acts on (read from the Serve controller; None when Serve has no
  figure, e.g. a deployment without autoscaling);
- jobs: the GCS driver table (every live driver: `digitise batch` jobs, submitted Ray Jobs, deployers).
"""
import logging
from dataclasses import asdict, dataclass, field

log = logging.getLogger(__name__)

HEAD_RESOURCE = "node:__internal_head__"


@dataclass(frozen=True)
class NodeStatus:
    node_id: str
    node_type: str          # the launcher / KubeRay node type ("head" for the head node)
    state: str              # RUNNING (busy) | IDLE | DEAD
    ip: str
    cpus_total: float
    cpus_used: float
    gpus_total: float
    gpus_used: float

    @property
    def alive(self) -> bool:
        return self.state != "DEAD"

    @property
    def cpus_free(self) -> float:
        return self.cpus_total - self.cpus_used

    @property
    def gpus_free(self) -> float:
        return self.gpus_total - self.gpus_used


@dataclass(frozen=True)
class DeploymentStatus:
    name: str
    status: str                         # HEALTHY | UPDATING | UPSCALING | DOWNSCALING | UNHEALTHY ...
    replicas: dict[str, int]            # replica state -> count (RUNNING, STARTING, STOPPING, ...)
    ongoing_requests: float | None      # running + queued, as Serve's autoscaler counts them

    @property
    def running(self) -> int:
        return self.replicas.get("RUNNING", 0)


@dataclass(frozen=True)
class AppStatus:
    name: str
    status: str                         # RUNNING | DEPLOYING | DEPLOY_FAILED | DELETING ...
    deployments: list[DeploymentStatus]


@dataclass(frozen=True)
class JobStatus:
    job_id: str
    kind: str                           # "batch" (a `digitise batch` driver) or "driver" (anything else)
    entrypoint: str
    driver_pid: int


@dataclass(frozen=True)
class Demand:
    resources: dict[str, float]         # one bundle, e.g. {"CPU": 1, "GPU": 1}
    count: int


@dataclass
class ClusterSnapshot:
    nodes: list[NodeStatus] = field(default_factory=list)
    apps: list[AppStatus] = field(default_factory=list)
    jobs: list[JobStatus] = field(default_factory=list)
    pending_launches: dict[str, int] = field(default_factory=dict)   # node type -> nodes being launched
    demands: list[Demand] = field(default_factory=list)              # what cannot be placed yet

    def alive(self, node_type: str | None = None) -> list[NodeStatus]:
        return [n for n in self.nodes if n.alive and node_type in (None, n.node_type)]

    def app(self, name: str) -> AppStatus | None:
        return next((a for a in self.apps if a.name == name), None)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ClusterSnapshot":
        return cls(nodes=[NodeStatus(**n) for n in d["nodes"]],
                   apps=[AppStatus(a["name"], a["status"], [DeploymentStatus(**x) for x in a["deployments"]])
                         for a in d["apps"]],
                   jobs=[JobStatus(**j) for j in d["jobs"]], pending_launches=dict(d["pending_launches"]),
                   demands=[Demand(**x) for x in d["demands"]])


def snapshot() -> ClusterSnapshot:
    """The cluster this process is connected to (call `cluster.connect(address)` first)."""
    import ray
    assert ray.is_initialized(), "connect to a cluster first: cluster.connect(address)"
    snap = ClusterSnapshot(apps=_apps(), jobs=_jobs())
    _add_autoscaler_view(snap, ray.get_runtime_context().gcs_address)
    return snap


def _add_autoscaler_view(snap: ClusterSnapshot, gcs_address: str):
    import ray
    from ray.autoscaler.v2.sdk import get_cluster_status
    status = get_cluster_status(gcs_address)
    heads = {n["NodeID"] for n in ray.nodes() if HEAD_RESOURCE in n.get("Resources", {})}
    for info in [*status.active_nodes, *status.idle_nodes, *status.failed_nodes]:
        used = {u.resource_name: (u.total, u.used) for u in (info.resource_usage.usage if info.resource_usage else [])}
        node_type = "head" if info.node_id in heads else info.ray_node_type_name
        snap.nodes.append(NodeStatus(info.node_id, node_type, info.node_status, info.ip_address,
                                     *used.get("CPU", (0.0, 0.0)), *used.get("GPU", (0.0, 0.0))))
    snap.nodes.sort(key=lambda n: (n.node_type != "head", not n.alive, n.node_id))
    for launch in status.pending_launches:
        snap.pending_launches[launch.ray_node_type_name] = (snap.pending_launches.get(launch.ray_node_type_name, 0)
                                                            + launch.count)
    for node in status.pending_nodes:
        snap.pending_launches[node.ray_node_type_name] = snap.pending_launches.get(node.ray_node_type_name, 0) + 1
    demands = status.resource_demands
    for demand in [*demands.ray_task_actor_demand, *demands.placement_group_demand,
                   *demands.cluster_constraint_demand]:
        snap.demands += [Demand(dict(b.bundle), b.count) for b in demand.bundles_by_count]


def _apps() -> list[AppStatus]:
    apps = []
    for name, app in _serve_status().applications.items():
        deployments = [DeploymentStatus(d_name, str(d.status.value if hasattr(d.status, "value") else d.status),
                                        {str(getattr(k, "value", k)): v for k, v in d.replica_states.items()},
                                        _ongoing(name, d_name))
                       for d_name, d in app.deployments.items()]
        apps.append(AppStatus(name, str(getattr(app.status, "value", app.status)), deployments))
    return apps


def _serve_status():
    """serve.status(), also in a long-lived process whose cached Serve client outlived its controller (Serve
    shut down or restarted since): the stale client is dropped and the status read once more."""
    from ray import serve
    from ray.exceptions import RayActorError
    from ray.serve import context
    try:
        return serve.status()
    except RayActorError:
        context._set_global_client(None)
        return serve.status()


def _ongoing(app: str, deployment: str) -> float | None:
    """Requests running or queued for a deployment, the figure Serve's autoscaler scales on. Read from the
    controller through a method Serve keeps for its own tests (no public API has it in Ray 2.60), so any
    failure means "unknown", never an error."""
    import ray
    from ray.serve._private.common import DeploymentID
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE
    try:
        controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        total = ray.get(controller._get_total_num_requests_for_deployment_for_testing.remote(
            DeploymentID(name=deployment, app_name=app)), timeout=10)
    except Exception as e:   # a Serve without that method, or a controller restarting
        log.debug("no request count for %s/%s: %s", app, deployment, e)
        return None
    return float(total) if total is not None else None


def _jobs() -> list[JobStatus]:
    import os

    import ray
    me = ray.get_runtime_context().get_job_id()
    jobs = []
    for job in ray._private.state.jobs():
        if job["IsDead"] or job["JobID"] == me or (job["DriverPid"] == os.getpid()):
            continue
        entrypoint = job.get("Entrypoint", "")
        kind = "batch" if " batch " in f" {entrypoint} " else "driver"
        jobs.append(JobStatus(job["JobID"], kind, entrypoint, int(job["DriverPid"])))
    return jobs


def format_snapshot(snap: ClusterSnapshot) -> str:
    """The human table `digitise cluster status` prints."""
    alive = snap.alive()
    lines = [f"nodes: {len(alive)} alive, CPU {_sum(alive, 'cpus_used'):g}/{_sum(alive, 'cpus_total'):g} used, "
             f"GPU {_sum(alive, 'gpus_used'):g}/{_sum(alive, 'gpus_total'):g} used",
             f"  {'node':<14} {'type':<16} {'state':<8} {'CPU used/free':>14} {'GPU used/free':>14}"]
    for n in snap.nodes:
        lines.append(f"  {n.node_id[-12:]:<14} {n.node_type:<16} {n.state:<8} "
                     f"{f'{n.cpus_used:g}/{n.cpus_free:g}':>14} {f'{n.gpus_used:g}/{n.gpus_free:g}':>14}")
    launches = ", ".join(f"{c} x {t}" for t, c in sorted(snap.pending_launches.items())) or "none"
    demands = ", ".join(f"{d.count} x {_bundle(d.resources)}" for d in snap.demands) or "none"
    lines += [f"launching: {launches}", f"waiting for resources: {demands}"]
    lines.append(f"serve: {len(snap.apps)} application(s)" + (":" if snap.apps else ""))
    for app in snap.apps:
        lines.append(f"  {app.name}: {app.status}")
        for d in app.deployments:
            states = ", ".join(f"{k.lower()} {v}" for k, v in sorted(d.replicas.items())) or "no replicas"
            queue = "?" if d.ongoing_requests is None else f"{d.ongoing_requests:g}"
            lines.append(f"    {d.name}: {d.status}, replicas {states}; requests running or queued {queue}")
    lines.append(f"jobs: {len(snap.jobs)} running" + (":" if snap.jobs else ""))
    lines += [f"  {j.job_id} [{j.kind}] pid {j.driver_pid}: {j.entrypoint}" for j in snap.jobs]
    return "\n".join(lines)


def _sum(nodes, attr: str) -> float:
    return sum(getattr(n, attr) for n in nodes)


def _bundle(resources: dict) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in sorted(resources.items())) + "}"
