"""Offline checks of the deployment configs, before anything is launched.

- `check_launcher_config(cfg)`: a Ray cluster-launcher config (cluster.yaml) through Ray's own
  `prepare_config` + `validate_config` (unknown keys, non-integer node resources), plus a node type's
  min_workers <= max_workers, which Ray 2.60 does not check.
- `check_manifest(doc)`: a KubeRay v1 RayService or RayJob against the CRD's schema made strict (an unknown
  field fails, which Kubernetes itself would only prune with a warning), the operator's own rules the schema
  leaves out (name length and form, worker group min <= replicas <= max), and an embedded `serveConfigV2`.
- `check_serve_config(raw)`: a Serve config (serve_app/config.yaml, or serveConfigV2) through Serve's
  `ServeDeploySchema` and `AutoscalingConfig`, and no key Serve would silently drop.

Each `check_*` returns a list of problems, one readable line each; empty means valid. The CRD schemas are
KubeRay v1.7.0's (Apache-2.0), kept in k8s/schemas/ (see its README).
"""
import copy
import functools
import json
import re
from pathlib import Path

import jsonschema
import yaml

SCHEMAS = Path(__file__).parent / "k8s" / "schemas"
SCHEMA_FILES = {"RayService": "rayservice.v1.json", "RayJob": "rayjob.v1.json"}
CLUSTER_SPEC = {"RayService": "rayClusterConfig", "RayJob": "rayClusterSpec"}
MAX_NAME = 47                                    # KubeRay: longer names overflow derived resource names
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def check_launcher_config(cfg: dict) -> list[str]:
    """Ray's own launcher validation (the schema `ray/autoscaler/ray-schema.json` plus its fill-out)."""
    from ray.autoscaler._private.util import prepare_config, validate_config
    try:
        validate_config(prepare_config(copy.deepcopy(cfg)))
    except jsonschema.ValidationError as e:
        return [f"{_path(e.absolute_path)}: {e.message}"]
    except ValueError as e:   # prepare_config's and validate_config's own consistency checks
        return [str(e)]
    return [f"available_node_types.{name}: min_workers {t['min_workers']} > max_workers {t['max_workers']}"
            for name, t in cfg["available_node_types"].items()   # Ray 2.60 lets this pass
            if t.get("min_workers", 0) > t.get("max_workers", cfg.get("max_workers", 2))]


def check_manifest(doc: dict) -> list[str]:
    """A RayService or RayJob manifest (one YAML document, parsed)."""
    kind = doc.get("kind")
    if kind not in SCHEMA_FILES or doc.get("apiVersion") != "ray.io/v1":
        return [f"apiVersion/kind: expected ray.io/v1 {' or '.join(SCHEMA_FILES)}, got "
                f"{doc.get('apiVersion')} {kind}"]
    problems = _name_problems(doc.get("metadata") or {})
    validator = _strict_validator(kind)
    problems += [f"spec.{_path(e.absolute_path)}: {e.message}"
                 for e in sorted(validator.iter_errors(doc.get("spec") or {}), key=lambda e: list(e.path))]
    cluster = (doc.get("spec") or {}).get(CLUSTER_SPEC[kind]) or {}
    problems += _worker_group_problems(cluster)
    if kind == "RayService":
        text = doc["spec"].get("serveConfigV2")
        if not isinstance(text, str):
            problems.append("spec.serveConfigV2: missing (the Serve config, as a YAML string)")
        else:
            problems += [f"spec.serveConfigV2: {p}" for p in check_serve_config(yaml.safe_load(text))]
    return problems


def check_serve_config(raw: dict) -> list[str]:
    """A Serve deploy config: Serve's schema, each autoscaling_config, and only keys Serve knows (it drops
    unknown deployment keys without a word, so an old or misspelt key would silently change nothing)."""
    from ray.serve.config import AutoscalingConfig, BackpressureConfig
    from ray.serve.schema import (DeploymentSchema, HTTPOptionsSchema, RayActorOptionsSchema,
                                  ServeApplicationSchema, ServeDeploySchema)
    from pydantic import ValidationError
    try:
        ServeDeploySchema.model_validate(raw)
    except ValidationError as e:
        return [f"ServeDeploySchema: {e}"]
    problems = _unknown(raw, ServeDeploySchema, "")
    problems += _unknown(raw.get("http_options") or {}, HTTPOptionsSchema, "http_options.")
    for app in raw.get("applications", []):
        where = f"applications[{app.get('name')}]."
        problems += _unknown(app, ServeApplicationSchema, where)
        for d in app.get("deployments", []):
            at = f"{where}deployments[{d.get('name')}]."
            problems += _unknown(d, DeploymentSchema, at)
            for key, model in (("autoscaling_config", AutoscalingConfig), ("backpressure_config", BackpressureConfig),
                               ("ray_actor_options", RayActorOptionsSchema)):
                if d.get(key) is not None:
                    problems += _unknown(d[key], model, f"{at}{key}.")
            if d.get("autoscaling_config") is not None:
                try:
                    AutoscalingConfig(**d["autoscaling_config"])
                except (ValidationError, ValueError) as e:
                    problems.append(f"{at}autoscaling_config: {e}")
    return problems


def strict_schema(schema: dict) -> dict:
    """A copy of an OpenAPI v3 schema in which every object with declared `properties` refuses others, except
    where the CRD itself says unknown fields are kept (`x-kubernetes-preserve-unknown-fields`)."""
    schema = copy.deepcopy(schema)
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return schema


@functools.cache
def _strict_validator(kind: str) -> jsonschema.Draft7Validator:
    schema = json.loads((SCHEMAS / SCHEMA_FILES[kind]).read_text())
    return jsonschema.Draft7Validator(strict_schema(schema["properties"]["spec"]))


def _name_problems(metadata: dict) -> list[str]:
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        return ["metadata.name: missing"]
    problems = []
    if len(name) > MAX_NAME:
        problems.append(f"metadata.name: {name!r} is {len(name)} characters; KubeRay allows at most {MAX_NAME}")
    if not DNS_1035.match(name):
        problems.append(f"metadata.name: {name!r} is not a DNS-1035 label (lower-case letters, digits and '-', "
                        "starting with a letter)")
    return problems


def _worker_group_problems(cluster: dict) -> list[str]:
    problems, seen = [], set()
    for g in cluster.get("workerGroupSpecs") or []:
        name = g.get("groupName")
        if name in seen:
            problems.append(f"workerGroupSpecs: group name {name!r} is used twice")
        seen.add(name)
        lo, hi, n = g.get("minReplicas", 0), g.get("maxReplicas", 2 ** 31 - 1), g.get("replicas")
        if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
            problems.append(f"workerGroupSpecs[{name}]: minReplicas {lo} > maxReplicas {hi}")
        elif isinstance(n, int) and isinstance(lo, int) and isinstance(hi, int) and not lo <= n <= hi:
            problems.append(f"workerGroupSpecs[{name}]: replicas {n} outside minReplicas..maxReplicas {lo}..{hi}")
    return problems


def _unknown(obj: dict, model, where: str) -> list[str]:
    return [f"{where}{k}: unknown key (Serve would drop it silently)" for k in sorted(set(obj) - set(model.model_fields))]


def _path(parts) -> str:
    return ".".join(str(p) for p in parts) or "<root>"
