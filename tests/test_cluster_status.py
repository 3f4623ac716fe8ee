"""`digitise cluster status` without a cluster: the snapshot's shape, its JSON round trip and its table; the
batch job's actor pool sizes. (Against a real multi-node cluster: tests/test_cluster_autoscaling.py.)"""
import json

import pytest

from batch_jobs import JobConfig
from batch_jobs.config import AUTO_MAX_REPLICAS
from cluster import ClusterSnapshot, format_snapshot
from cluster.report import AppStatus, Demand, DeploymentStatus, JobStatus, NodeStatus
from cli import build_parser


def _snapshot() -> ClusterSnapshot:
    return ClusterSnapshot(
        nodes=[NodeStatus("f" * 51 + "00000", "head", "RUNNING", "127.0.0.1", 2, 1.5, 0, 0),
               NodeStatus("f" * 51 + "00001", "gpu_worker", "RUNNING", "127.0.0.1", 1, 1, 1, 1),
               NodeStatus("f" * 51 + "00002", "gpu_worker", "DEAD", "127.0.0.1", 0, 0, 0, 0)],
        apps=[AppStatus("digitiser", "RUNNING", [DeploymentStatus("Segmenter", "UPSCALING",
                                                                  {"RUNNING": 1, "STARTING": 1}, 7.0),
                                                 DeploymentStatus("Ingress", "HEALTHY", {"RUNNING": 1}, None)])],
        jobs=[JobStatus("03000000", "batch", "digitise batch s3://a s3://b --replicas auto", 1234)],
        pending_launches={"gpu_worker": 1}, demands=[Demand({"CPU": 1.0, "GPU": 1.0}, 2)])


def test_snapshot_counts_alive_nodes_and_free_resources():
    snap = _snapshot()
    assert [n.node_type for n in snap.alive()] == ["head", "gpu_worker"]
    assert len(snap.alive("gpu_worker")) == 1
    head = snap.alive("head")[0]
    assert head.cpus_free == 0.5 and head.gpus_free == 0
    assert snap.app("digitiser").deployments[0].running == 1 and snap.app("other") is None


def test_snapshot_survives_a_json_round_trip():
    snap = _snapshot()
    assert ClusterSnapshot.from_dict(json.loads(json.dumps(snap.to_dict()))) == snap


def test_table_names_nodes_replicas_queues_jobs_and_demands():
    text = format_snapshot(_snapshot())
    assert "nodes: 2 alive, CPU 2.5/3 used, GPU 1/1 used" in text
    assert "gpu_worker" in text and "DEAD" in text
    assert "launching: 1 x gpu_worker" in text
    assert "waiting for resources: 2 x {CPU: 1, GPU: 1}" in text
    assert "Segmenter: UPSCALING, replicas running 1, starting 1; requests running or queued 7" in text
    assert "Ingress: HEALTHY, replicas running 1; requests running or queued ?" in text
    assert "03000000 [batch] pid 1234: digitise batch s3://a s3://b --replicas auto" in text


def test_table_of_an_empty_cluster_says_so():
    text = format_snapshot(ClusterSnapshot())
    assert "nodes: 0 alive" in text and "launching: none" in text and "waiting for resources: none" in text
    assert "serve: 0 application(s)" in text and "jobs: 0 running" in text


def test_cli_parses_cluster_status():
    args = build_parser().parse_args(["cluster", "status", "--address", "127.0.0.1:6379", "--json"])
    assert (args.action, args.address, args.json) == ("status", "127.0.0.1:6379", True)
    assert build_parser().parse_args(["cluster", "status"]).address == "auto"


@pytest.mark.parametrize("replicas, size", [(3, (3, 3)), ("auto", (1, AUTO_MAX_REPLICAS)), ("2-5", (2, 5))])
def test_replicas_give_a_fixed_or_autoscaling_actor_pool(replicas, size):
    assert JobConfig("src", "dst", replicas=replicas).pool_size == size


@pytest.mark.parametrize("replicas", [0, "0-2", "3-2", "many", "1-", True])
def test_bad_replicas_are_refused_with_what_is_allowed(replicas):
    with pytest.raises(ValueError, match="replicas must be N >= 1, MIN-MAX"):
        JobConfig("src", "dst", replicas=replicas)


def test_cli_replicas_accepts_auto_ranges_and_numbers():
    parse = lambda *a: build_parser().parse_args(["batch", "src", "dst", *a]).replicas  # noqa: E731
    assert (parse("--replicas", "auto"), parse("--replicas", "1-4"), parse("--replicas", "2"), parse()) == \
        ("auto", "1-4", 2, 1)
