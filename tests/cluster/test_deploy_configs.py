"""cluster.yaml and the KubeRay manifest are valid for the tools that read them.

cluster.yaml is checked with Ray's own validator (``ray.autoscaler._private.util
.validate_config``, which applies the ``ray-schema.json`` shipped in the ray package we
install). The RayCluster manifest is checked against a JSON schema written here from the
KubeRay RayCluster CRD (``ray-operator/config/crd/bases/ray.io_rayclusters.yaml``): the
required fields and types of ``spec``, ``headGroupSpec``, ``workerGroupSpecs`` and the pod
templates' containers, with no unknown field at those levels. Both checks are shown to
reject a broken copy, and both files must start Boardcast the way docs/operations.md says.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

# Ray reads its auth mode once, when first imported: importing ray_backend first lets it
# set the mode, or every later ray.init in this test process starts a cluster it cannot join.
from actors import ray_backend  # noqa: F401

ROOT = Path(__file__).parents[2]
CLUSTER_YAML = ROOT / "cluster.yaml"
RAYCLUSTER = ROOT / "deploy" / "kuberay" / "raycluster.yaml"

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_QUANTITIES = {
    "type": "object",
    "additionalProperties": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
}
_CONTAINER = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "image": {"type": "string"},
        "command": {"type": "array", "items": {"type": "string"}},
        "args": {"type": "array", "items": {"type": "string"}},
        "env": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "value": {"type": "string"},
                    "valueFrom": {"type": "object"},
                },
                "additionalProperties": False,
            },
        },
        "ports": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["containerPort"],
                "properties": {
                    "name": {"type": "string"},
                    "containerPort": {"type": "integer"},
                    "protocol": {"type": "string"},
                },
                "additionalProperties": False,
            },
        },
        "resources": {
            "type": "object",
            "properties": {"limits": _QUANTITIES, "requests": _QUANTITIES},
            "additionalProperties": False,
        },
        "lifecycle": {
            "type": "object",
            "properties": {"postStart": {"type": "object"}, "preStop": {"type": "object"}},
            "additionalProperties": False,
        },
        "readinessProbe": {"type": "object"},
        "livenessProbe": {"type": "object"},
        "volumeMounts": {"type": "array"},
    },
    "additionalProperties": False,
}
_POD_TEMPLATE = {
    "type": "object",
    "properties": {
        "metadata": {
            "type": "object",
            "properties": {"labels": _STRING_MAP, "annotations": _STRING_MAP},
        },
        "spec": {
            "type": "object",
            "required": ["containers"],
            "properties": {
                "containers": {"type": "array", "minItems": 1, "items": _CONTAINER},
                "terminationGracePeriodSeconds": {"type": "integer"},
                "volumes": {"type": "array"},
                "nodeSelector": _STRING_MAP,
                "serviceAccountName": {"type": "string"},
            },
        },
    },
    "additionalProperties": False,
}
RAYCLUSTER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"enum": ["ray.io/v1"]},
        "kind": {"const": "RayCluster"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["headGroupSpec"],
            "properties": {
                "rayVersion": {"type": "string"},
                "enableInTreeAutoscaling": {"type": "boolean"},
                "autoscalerOptions": {"type": "object"},
                "headServiceAnnotations": _STRING_MAP,
                "headGroupSpec": {
                    "type": "object",
                    "required": ["rayStartParams", "template"],
                    "properties": {
                        "rayStartParams": _STRING_MAP,
                        "serviceType": {"type": "string"},
                        "enableIngress": {"type": "boolean"},
                        "template": _POD_TEMPLATE,
                    },
                    "additionalProperties": False,
                },
                "workerGroupSpecs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": [
                            *("groupName", "maxReplicas", "minReplicas"),
                            *("rayStartParams", "replicas", "template"),
                        ],
                        "properties": {
                            "groupName": {"type": "string"},
                            "replicas": {"type": "integer"},
                            "minReplicas": {"type": "integer"},
                            "maxReplicas": {"type": "integer"},
                            "rayStartParams": _STRING_MAP,
                            "template": _POD_TEMPLATE,
                        },
                        "additionalProperties": False,
                    },
                },
            },
            "additionalProperties": False,
        },
    },
}


def load(path: Path) -> Any:
    """A YAML file as data."""
    return yaml.safe_load(path.read_text())


def validate_cluster_yaml(config: dict[str, Any]) -> None:
    """Ray's own checks of a cluster launcher config, as ``ray up`` runs them.

    The file as written against the shipped schema, then with the provider's defaults
    filled in (``prepare_config``), which ``validate_config`` expects. The AWS bootstrap
    that follows in ``ray up`` needs AWS credentials and is not run.
    """
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema_path = Path(ray.autoscaler.__file__).with_name("ray-schema.json")
    jsonschema.validate(config, json.loads(schema_path.read_text()))
    validate_config(prepare_config(copy.deepcopy(config)))


def test_cluster_yaml_passes_rays_schema() -> None:
    validate_cluster_yaml(load(CLUSTER_YAML))


def test_the_cluster_yaml_check_rejects_a_broken_config() -> None:
    config = load(CLUSTER_YAML)
    broken = copy.deepcopy(config)
    broken["available_node_types"]["board"]["min_workers"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        validate_cluster_yaml(broken)
    unknown = copy.deepcopy(config)
    unknown["head_start_commands"] = unknown.pop("head_start_ray_commands")
    with pytest.raises(jsonschema.ValidationError):
        validate_cluster_yaml(unknown)


def test_every_cluster_yaml_node_starts_ray_then_boardcast_joining_it() -> None:
    config = load(CLUSTER_YAML)
    assert config["head_node_type"] in config["available_node_types"]
    assert any("pip install" in command for command in config["setup_commands"])
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        ray_start, serve = config[key]
        assert "ray start" in ray_start and "RAY_AUTH_MODE=token" in ray_start
        assert "boardcast serve --address" in serve and "--host-bind node" in serve


def test_raycluster_manifest_matches_the_crd() -> None:
    jsonschema.validate(load(RAYCLUSTER), RAYCLUSTER_SCHEMA)


def test_the_raycluster_check_rejects_a_broken_manifest() -> None:
    manifest = load(RAYCLUSTER)
    missing = copy.deepcopy(manifest)
    del missing["spec"]["workerGroupSpecs"][0]["groupName"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(missing, RAYCLUSTER_SCHEMA)
    misplaced = copy.deepcopy(manifest)
    misplaced["spec"]["headGroupSpec"]["replica"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(misplaced, RAYCLUSTER_SCHEMA)


def test_every_raycluster_pod_runs_boardcast_and_drains_on_stop() -> None:
    spec = load(RAYCLUSTER)["spec"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for group in groups:
        (container,) = group["template"]["spec"]["containers"]
        start = " ".join(container["lifecycle"]["postStart"]["exec"]["command"])
        stop = " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
        assert "boardcast serve --address" in start and "--host-bind node" in start
        assert "kill -TERM" in stop
        names = {env["name"] for env in container["env"]}
        assert {"BOARDCAST_STORE", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"} <= names
