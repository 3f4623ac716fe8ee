"""The deployment configs, checked offline: cluster.yaml by Ray's own launcher validation, the KubeRay manifests
against the v1 CRD schemas made strict plus the operator's rules, and one source of truth for Serve settings:
the RayService's serveConfigV2 embeds serve_app/config.yaml's applications (whose repeated values equal what
ServeConfig makes of its args: tests/test_serve.py)."""
import copy
import json
from pathlib import Path

import pytest
import yaml

from cluster.manifests import (SCHEMAS, check_launcher_config, check_manifest, check_serve_config,
                               strict_schema)

ROOT = Path(__file__).parent.parent
SHARED_CRDS = ROOT.parent / "shared" / "cluster" / "kuberay-crds"


def _load(path) -> dict:
    return yaml.load(Path(path).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@pytest.fixture(scope="module")
def launcher() -> dict:
    return _load(ROOT / "cluster.yaml")


@pytest.fixture(scope="module")
def rayservice() -> dict:
    return _load(ROOT / "cluster" / "k8s" / "rayservice.yaml")


@pytest.fixture(scope="module")
def rayjob() -> dict:
    return _load(ROOT / "cluster" / "k8s" / "rayjob.yaml")


@pytest.fixture(scope="module")
def serve_yaml() -> dict:
    return _load(ROOT / "serve_app" / "config.yaml")


def _group(doc: dict, name: str) -> dict:
    spec = doc["spec"].get("rayClusterConfig") or doc["spec"]["rayClusterSpec"]
    return next(g for g in spec["workerGroupSpecs"] if g["groupName"] == name)


# ----------------------------------------------------------------------------- cluster.yaml (AWS launcher)

def test_cluster_yaml_passes_rays_launcher_validation(launcher):
    assert check_launcher_config(launcher) == []


def test_launcher_check_rejects_an_unknown_key(launcher):
    broken = copy.deepcopy(launcher)
    broken["idle_timout_minutes"] = 5
    (problem,) = check_launcher_config(broken)
    assert "idle_timout_minutes" in problem


def test_launcher_check_rejects_a_fractional_gpu(launcher):
    broken = copy.deepcopy(launcher)
    broken["available_node_types"]["gpu_worker"]["resources"]["GPU"] = 0.5
    (problem,) = check_launcher_config(broken)
    assert "GPU" in problem and "integer" in problem


def test_launcher_check_rejects_min_workers_above_max(launcher):
    broken = copy.deepcopy(launcher)
    broken["available_node_types"]["gpu_worker"]["min_workers"] = 5
    assert check_launcher_config(broken) == ["available_node_types.gpu_worker: min_workers 5 > max_workers 4"]


def test_cluster_yaml_has_a_cpu_head_cpu_workers_and_gpu_workers_from_zero(launcher):
    types = launcher["available_node_types"]
    assert "GPU" not in types[launcher["head_node_type"]]["resources"]
    assert types["cpu_worker"]["resources"].get("GPU", 0) == 0 and types["cpu_worker"]["resources"]["CPU"] >= 1
    gpu = types["gpu_worker"]
    assert gpu["min_workers"] == 0 and gpu["max_workers"] >= 1 and gpu["resources"]["GPU"] == 1
    assert 0 < launcher["idle_timeout_minutes"] <= 30


def test_cluster_yaml_uses_instance_profiles_installs_the_checkout_and_deploys_serve(launcher):
    for name, node_type in launcher["available_node_types"].items():
        assert node_type["node_config"]["IamInstanceProfile"]["Name"], name
    text = (ROOT / "cluster.yaml").read_text()
    assert "aws_access_key_id" not in text.lower() and "AWS_SECRET" not in text
    assert launcher["file_mounts"] == {"/home/ubuntu/welllog-digitiser": "."}
    assert any("pip install -q ." in c for c in launcher["setup_commands"])
    assert any(c.startswith("serve deploy") and c.endswith("serve_app/config.yaml")
               for c in launcher["head_start_ray_commands"])


def test_serve_config_fits_the_gpu_worker_type(launcher, serve_yaml):
    """A Segmenter replica's reservation fits one gpu_worker, so the autoscaler can place it."""
    (app,) = serve_yaml["applications"]
    options = {d["name"]: d for d in app["deployments"]}["Segmenter"]["ray_actor_options"]
    resources = launcher["available_node_types"]["gpu_worker"]["resources"]
    assert options["num_gpus"] <= resources["GPU"] and options["num_cpus"] <= resources["CPU"]


# ----------------------------------------------------------------------------- KubeRay manifests

@pytest.mark.parametrize("name", ["rayservice", "rayjob"])
def test_manifest_is_valid(name, request):
    assert check_manifest(request.getfixturevalue(name)) == []


def test_strict_schema_rejects_an_unknown_field(rayservice):
    broken = copy.deepcopy(rayservice)
    _group(broken, "gpu")["maxReplica"] = 8
    (problem,) = check_manifest(broken)
    assert "maxReplica" in problem and "not allowed" in problem


def test_strict_schema_rejects_an_unknown_field_deep_in_a_pod_template(rayjob):
    broken = copy.deepcopy(rayjob)
    _group(broken, "gpu")["template"]["spec"]["containers"][0]["imagePullPolice"] = "Always"
    (problem,) = check_manifest(broken)
    assert "imagePullPolice" in problem


def test_strict_schema_keeps_the_crds_own_types(rayservice):
    broken = copy.deepcopy(rayservice)
    broken["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0   # must be a string
    assert any("num-cpus" in p for p in check_manifest(broken))


def test_strict_schema_leaves_preserved_unknown_fields_open():
    schema = {"type": "object", "properties": {
        "open": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {"a": {}}},
        "closed": {"type": "object", "properties": {"a": {}}}}}
    strict = strict_schema(schema)
    assert strict["additionalProperties"] is False
    assert "additionalProperties" not in strict["properties"]["open"]
    assert strict["properties"]["closed"]["additionalProperties"] is False
    assert "additionalProperties" not in schema   # the input is not modified


@pytest.mark.parametrize("name", ["rayservice", "rayjob"])
def test_operator_rejects_a_name_over_47_characters(name, request):
    broken = copy.deepcopy(request.getfixturevalue(name))
    broken["metadata"]["name"] = "d" * 48
    (problem,) = check_manifest(broken)
    assert "47" in problem


def test_operator_rejects_a_name_that_is_not_dns_1035(rayjob):
    broken = copy.deepcopy(rayjob)
    broken["metadata"]["name"] = "Digitise_Archive"
    (problem,) = check_manifest(broken)
    assert "DNS-1035" in problem


def test_operator_rejects_min_replicas_above_max(rayjob):
    broken = copy.deepcopy(rayjob)
    _group(broken, "gpu").update(minReplicas=3, maxReplicas=2, replicas=2)
    (problem,) = check_manifest(broken)
    assert "minReplicas 3 > maxReplicas 2" in problem


def test_embedded_serve_config_is_checked_by_serve(rayservice):
    broken = copy.deepcopy(rayservice)
    serve = yaml.safe_load(broken["spec"]["serveConfigV2"])
    serve["applications"][0]["deployments"][0]["autoscaling_config"].update(min_replicas=5, max_replicas=2)
    broken["spec"]["serveConfigV2"] = yaml.safe_dump(serve)
    (problem,) = check_manifest(broken)
    assert problem.startswith("spec.serveConfigV2") and "max_replicas" in problem


def test_embedded_serve_config_refuses_keys_serve_would_drop(rayservice):
    broken = copy.deepcopy(rayservice)
    serve = yaml.safe_load(broken["spec"]["serveConfigV2"])
    serve["applications"][0]["deployments"][0]["max_concurrent_queries"] = 16   # the pre-2.x name
    broken["spec"]["serveConfigV2"] = yaml.safe_dump(serve)
    (problem,) = check_manifest(broken)
    assert "max_concurrent_queries" in problem and "unknown" in problem


def test_rayservice_autoscales_a_gpu_group_from_zero(rayservice):
    cluster = rayservice["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True and cluster["autoscalerOptions"]["idleTimeoutSeconds"] > 0
    gpu = _group(rayservice, "gpu")
    assert gpu["minReplicas"] == 0 and gpu["maxReplicas"] >= 1
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
    serve = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    segmenter = {d["name"]: d for d in serve["applications"][0]["deployments"]}["Segmenter"]
    assert segmenter["num_replicas"] == "auto"
    assert segmenter["autoscaling_config"]["max_replicas"] <= gpu["maxReplicas"]


def test_rayjob_entrypoint_is_a_valid_digitise_batch_on_the_cluster(rayjob):
    from cli import build_parser
    argv = rayjob["spec"]["entrypoint"].split()
    assert argv[0] == "digitise"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "batch" and args.address == "auto" and args.replicas == "auto"
    assert args.num_gpus == 1 and rayjob["spec"]["shutdownAfterJobFinishes"] is True


# ----------------------------------------------------------------------------- one source of truth for Serve

def test_serve_config_yaml_passes_the_serve_checks(serve_yaml):
    assert check_serve_config(serve_yaml) == []


def test_rayservice_embeds_exactly_the_serve_config_yaml_applications(rayservice, serve_yaml):
    embedded = yaml.safe_load(rayservice["spec"]["serveConfigV2"])
    assert embedded["applications"] == serve_yaml["applications"]
    # http_options differ only where a pod must differ: the proxy listens beyond loopback
    assert {**embedded["http_options"], "host": "127.0.0.1"} == serve_yaml["http_options"]
    assert embedded["http_options"]["host"] == "0.0.0.0"


# ----------------------------------------------------------------------------- the vendored CRD schemas

def _v1_schema_without_descriptions(crd: dict) -> dict:
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k != "description"}
        return [strip(i) for i in x] if isinstance(x, list) else x
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return strip(v1["schema"]["openAPIV3Schema"])


@pytest.mark.skipif(not SHARED_CRDS.is_dir(), reason=f"{SHARED_CRDS} (KubeRay's CRDs) is absent; the vendored "
                                                       "schemas are used as they are")
@pytest.mark.parametrize("kind", ["rayservice", "rayjob"])
def test_vendored_schemas_are_the_kuberay_crds_without_descriptions(kind):
    crd = _load(SHARED_CRDS / f"ray.io_{kind}s.yaml")
    assert json.loads((SCHEMAS / f"{kind}.v1.json").read_text()) == _v1_schema_without_descriptions(crd)
