"""Rendered objects against the Kubernetes JSON schemas (the `kubernetes-validate` package bundles them, so this runs
offline), strictly: an unknown field is an error. A ScaledObject has no schema there; it is checked against
`keda_scaledobject.schema.json` and its HPA behaviour against Kubernetes' own HorizontalPodAutoscaler schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate

OLDEST_KUBERNETES = "1.29"  # the oldest release the manifests are meant for
KEDA_SCHEMA = json.loads(Path(__file__).with_name("keda_scaledobject.schema.json").read_text())


def kubernetes_versions() -> tuple[str, ...]:
    """The oldest release the manifests are meant for, and the newest whose schemas are installed."""
    return OLDEST_KUBERNETES, kubernetes_validate.latest_version()


def problems(obj: dict[str, Any]) -> list[str]:
    """What is wrong with one object (empty when nothing is), for every Kubernetes version checked."""
    where = f"{obj.get('kind')} {obj.get('metadata', {}).get('name')}"
    if obj.get("kind") == "ScaledObject":
        return [f"{where}: {p}" for p in _scaled_object(obj)]
    found = []
    for version in kubernetes_versions():
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            found.append(f"{where} (Kubernetes {version}): {exc.message} at {'.'.join(map(str, exc.path))}")
        except kubernetes_validate.SchemaNotFoundError:
            found.append(f"{where}: Kubernetes {version} has no {obj.get('apiVersion')} {obj.get('kind')}")
    return found


def _scaled_object(obj: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(KEDA_SCHEMA)
    found = [f"{e.message} at {'.'.join(map(str, e.absolute_path)) or 'the top'}" for e in validator.iter_errors(obj)]
    spec = obj.get("spec", {})
    if spec.get("minReplicaCount", 0) > spec.get("maxReplicaCount", 100):
        found.append("minReplicaCount must be less than or equal to maxReplicaCount")
    behavior = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
    if behavior is not None:
        hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "behavior"},
               "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "behavior"}, "maxReplicas": 1,
                        "behavior": behavior}}
        found += [f"advanced.horizontalPodAutoscalerConfig.{p.split(': ', 1)[1]}" for p in problems(hpa)]
    return found
