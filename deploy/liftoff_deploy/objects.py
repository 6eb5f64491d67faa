"""The Kubernetes objects of one Liftoff deployment, built from checked values.

- a ConfigMap: config.toml (the server settings every pod reads) and the reader probe;
- the gateway Deployment (`liftoff serve --role gateway`: the six ports, no readers), one Service per port and a
  PodDisruptionBudget;
- per consumer group: a reader Deployment (`liftoff reader`, one reader per pod, named after the pod, its host name
  the node's), a PodDisruptionBudget and a KEDA ScaledObject that sizes it on the group's backlog from the internal
  port. Kubernetes supervises the readers (restarts, rollouts), so no readers-role supervisor runs in their pods.

Pods never link Services into their environment (`enableServiceLinks: false`): a Service named `liftoff-management`
would otherwise hand every pod `LIFTOFF_MANAGEMENT_PORT=tcp://...`, which Liftoff reads as its management_port.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from .config_file import CONFIG_DIR, CONFIG_PATH, MODELS_DIR, STATE_DIR, Rendered, build_config
from .values import Group, Placement, SecretRef, Values, ValuesError

Obj = dict[str, Any]
PROBE_FILE = "reader_probe.py"
PROBE_SOURCE = Path(__file__).with_name(PROBE_FILE)
GPU_RESOURCE = "nvidia.com/gpu"
GROUP_LABEL = "liftoff/consumer-group"
# The gateway's process answers its management port's /health without Redis or readers (the fit engine's liveness
# body), so a probe of it says whether this pod serves, not whether the cluster's readers do (docs/scaling.md).
GATEWAY_PROBE_PATH = "/health"
SCALE_DOWN_PERIOD_S = 60


def render(values: Values) -> list[Obj]:
    config = build_config(values)
    probe = PROBE_SOURCE.read_text()
    checksum = hashlib.sha256((config.toml + probe).encode()).hexdigest()
    objects = [config_map(values, config, probe), *services(values, config), gateway(values, config, checksum),
               disruption_budget(values, "gateway", None, values.gateway.pod_disruption_budget.max_unavailable)]
    for group, spec in values.groups.items():
        objects.append(reader(values, config, group, checksum))
        objects.append(disruption_budget(values, "reader", group, spec.pod_disruption_budget.max_unavailable))
        if spec.autoscaling.enabled:
            objects.append(scaled_object(values, config, group))
    too_long = [o["metadata"]["name"] for o in objects if len(o["metadata"]["name"]) > 63]
    if too_long:
        raise ValuesError(f"object names over 63 characters: {too_long}; shorten `name` or the group names")
    return objects


# --- names and labels -----------------------------------------------------------------------------------------------
def reader_name(values: Values, group: str) -> str:
    return f"{values.name}-reader-{group}"


def service_name(values: Values, port: str) -> str:
    return f"{values.name}-{port}"


def labels(values: Values, component: str, group: str | None) -> dict[str, str]:
    chosen = {"app.kubernetes.io/name": "liftoff", "app.kubernetes.io/instance": values.name,
              "app.kubernetes.io/component": component}
    return {**chosen, GROUP_LABEL: group} if group else chosen


def metadata(values: Values, name: str, component: str, group: str | None = None,
             annotations: dict[str, str] | None = None) -> Obj:
    meta: Obj = {"name": name, "namespace": values.namespace,
                 "labels": {**labels(values, component, group), "app.kubernetes.io/version": values.image.tag}}
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


# --- shared pieces ---------------------------------------------------------------------------------------------------
def config_map(values: Values, config: Rendered, probe: str) -> Obj:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(values, f"{values.name}-config", "config"),
            "data": {"config.toml": config.toml, PROBE_FILE: probe}}


def secret_env(name: str, ref: SecretRef) -> Obj:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def redis_env(values: Values) -> list[Obj]:
    """LIFTOFF_REDIS_URL, with the password from its Secret put into the URL by Kubernetes (`$(REDIS_PASSWORD)`
    expands variables defined before it). redis-py percent-decodes it, so a password with URL characters is kept
    percent-encoded in the Secret."""
    redis = values.redis
    if redis.password_secret is None:
        return [{"name": "LIFTOFF_REDIS_URL", "value": redis.url}]
    scheme, rest = redis.url.split("://", 1)
    user, at, hosts = rest.partition("@")  # the URL holds no password (values.Redis); hosts may be several
    url = f"{scheme}://{user if at else ''}:$(REDIS_PASSWORD)@{hosts if at else rest}"
    return [secret_env("REDIS_PASSWORD", redis.password_secret), {"name": "LIFTOFF_REDIS_URL", "value": url}]


def field_env(name: str, path: str) -> Obj:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def common_env(values: Values) -> list[Obj]:
    return [field_env("POD_NAME", "metadata.name"), {"name": "LIFTOFF_CONFIG", "value": CONFIG_PATH},
            *redis_env(values)]


def container_base(values: Values, name: str) -> Obj:
    return {"name": name, "image": values.image.ref, "imagePullPolicy": values.image.pull_policy,
            "securityContext": {"allowPrivilegeEscalation": False}}


def pod_spec(values: Values, spec: Placement, containers: list[Obj], volumes: list[Obj], grace_s: int) -> Obj:
    pod: Obj = {"enableServiceLinks": False, "terminationGracePeriodSeconds": grace_s, "containers": containers,
                "volumes": volumes}
    if values.image.pull_secrets:
        pod["imagePullSecrets"] = [{"name": n} for n in values.image.pull_secrets]
    for key, value in (("nodeSelector", spec.node_selector), ("tolerations", spec.tolerations),
                       ("affinity", spec.affinity)):
        if value:
            pod[key] = value
    return pod


def config_volume(values: Values) -> Obj:
    return {"name": "config", "configMap": {"name": f"{values.name}-config"}}


def template(values: Values, component: str, group: str | None, checksum: str, pod: Obj) -> Obj:
    annotations = {"liftoff/config-sha256": checksum}  # a changed ConfigMap rolls the pods
    return {"metadata": {"labels": labels(values, component, group), "annotations": annotations}, "spec": pod}


# --- the gateway ----------------------------------------------------------------------------------------------------
def services(values: Values, config: Rendered) -> list[Obj]:
    selector = labels(values, "gateway", None)
    found = []
    for port_name, port in config.settings.ports().items():
        chosen = values.gateway.services.get(port_name)
        if chosen is not None and not chosen.enabled:
            continue
        spec: Obj = {"type": chosen.type if chosen else "ClusterIP", "selector": selector,
                     "ports": [{"name": port_name, "port": port, "targetPort": port_name, "protocol": "TCP"}]}
        annotations = chosen.annotations if chosen else None
        meta = metadata(values, service_name(values, port_name), "gateway", None, annotations)
        found.append({"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec})
    return found


def http_probe(period_s: int, failures: int, timeout_s: int = 5) -> Obj:
    return {"httpGet": {"path": GATEWAY_PROBE_PATH, "port": "management"}, "periodSeconds": period_s,
            "timeoutSeconds": timeout_s, "failureThreshold": failures}


def gateway(values: Values, config: Rendered, checksum: str) -> Obj:
    spec = values.gateway
    keys = values.api_keys
    env = common_env(values)
    for name, ref in (("LIFTOFF_ADMIN_API_KEY", keys.admin), ("LIFTOFF_READ_API_KEY", keys.read),
                      ("LIFTOFF_INFERENCE_API_KEY", keys.inference)):
        if ref is not None:
            env.append(secret_env(name, ref))
    container = container_base(values, "gateway")
    container.update({
        "command": ["liftoff", "serve", "--role", "gateway"],
        "env": env,
        "ports": [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in config.settings.ports().items()],
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                         {"name": "state", "mountPath": STATE_DIR}],
        "startupProbe": http_probe(2, 60),
        "livenessProbe": http_probe(10, 3),
        "readinessProbe": http_probe(5, 2),
    })
    if spec.resources:
        container["resources"] = spec.resources
    if spec.pre_stop_sleep_seconds:
        container["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", str(spec.pre_stop_sleep_seconds)]}}}
    volumes = [config_volume(values), {"name": "state", "emptyDir": {}}]
    pod = pod_spec(values, spec, [container], volumes, spec.pre_stop_sleep_seconds + config.gateway_grace_s)
    pod["topologySpreadConstraints"] = [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                         "whenUnsatisfiable": "ScheduleAnyway",
                                         "labelSelector": {"matchLabels": labels(values, "gateway", None)}}]
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": metadata(values, f"{values.name}-gateway", "gateway"),
        "spec": {"replicas": spec.replicas, "selector": {"matchLabels": labels(values, "gateway", None)},
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                 "template": template(values, "gateway", None, checksum, pod)},
    }


# --- readers ---------------------------------------------------------------------------------------------------------
def exec_probe(values: Values, state: str, period_s: int, failures: int, pass_when_unreachable: bool = False) -> Obj:
    command = [values.image.python, f"{CONFIG_DIR}/{PROBE_FILE}", "--state", state]
    if pass_when_unreachable:
        command.append("--pass-when-unreachable")
    return {"exec": {"command": command}, "periodSeconds": period_s, "timeoutSeconds": 10,
            "failureThreshold": failures}


def reader_resources(group: str, spec: Group) -> Obj:
    resources = {k: dict(v) for k, v in spec.resources.items()}
    if not spec.gpus:
        for kind in ("requests", "limits"):
            if GPU_RESOURCE in resources.get(kind, {}):
                raise ValuesError(f"invalid value 'groups.{group}.resources.{kind}': set gpus rather than "
                                  f"{GPU_RESOURCE}")
        return resources
    for kind in ("requests", "limits"):
        given = resources.get(kind, {}).get(GPU_RESOURCE)
        if given is not None and str(given) != str(spec.gpus):
            raise ValuesError(f"invalid value 'groups.{group}.resources.{kind}': {GPU_RESOURCE} {given} is not "
                              f"gpus ({spec.gpus})")
    resources.setdefault("limits", {})[GPU_RESOURCE] = spec.gpus
    return resources


def reader(values: Values, config: Rendered, group: str, checksum: str) -> Obj:
    spec = values.groups[group]
    env = [*common_env(values), field_env("LIFTOFF_HOST_NAME", "spec.nodeName")]  # /status: the reader's node
    if spec.access_token_secret is not None:
        env.append(secret_env("LIFTOFF_READER_ACCESS_TOKEN", spec.access_token_secret))
    container = container_base(values, "reader")
    container.update({
        "command": ["liftoff", "reader", "--config-json", config.readers[group], "--reader-id", "$(POD_NAME)"],
        "env": env,
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
                         {"name": "models", "mountPath": MODELS_DIR, "readOnly": values.models.read_only}],
        # registered within 2 minutes (the model may load for longer: that is `loading`, which passes)
        "startupProbe": exec_probe(values, "loading", 5, 24),
        "livenessProbe": exec_probe(values, "loading", 30, 3, pass_when_unreachable=True),
        "readinessProbe": exec_probe(values, "live", 10, 1),
    })
    resources = reader_resources(group, spec)
    if resources:
        container["resources"] = resources
    models = values.models
    volume: Obj = ({"persistentVolumeClaim": {"claimName": models.persistent_volume_claim,
                                              "readOnly": models.read_only}}
                   if models.persistent_volume_claim else {"emptyDir": {"sizeLimit": models.empty_dir_size_limit}})
    pod = pod_spec(values, spec, [container], [config_volume(values), {"name": "models", **volume}],
                   config.reader_grace_s)
    surge = spec.max_surge if spec.max_surge is not None else (0 if spec.gpus else 1)
    unavailable = spec.max_unavailable if spec.max_unavailable is not None else (1 if spec.gpus else 0)
    if surge == 0 and unavailable == 0:
        raise ValuesError(f"invalid value 'groups.{group}.maxSurge': maxSurge and maxUnavailable cannot both be 0")
    deployment_spec: Obj = {
        "selector": {"matchLabels": labels(values, "reader", group)},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}},
        "template": template(values, "reader", group, checksum, pod),
    }
    if not spec.autoscaling.enabled:  # with a ScaledObject, its HPA owns the replica count
        deployment_spec = {"replicas": spec.replicas, **deployment_spec}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": metadata(values, reader_name(values, group), "reader", group), "spec": deployment_spec}


def disruption_budget(values: Values, component: str, group: str | None, max_unavailable: int) -> Obj:
    name = reader_name(values, group) if group else f"{values.name}-{component}"
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": metadata(values, name, component, group),
            "spec": {"maxUnavailable": max_unavailable,
                     "selector": {"matchLabels": labels(values, component, group)}}}


def backlog_url(values: Values, config: Rendered, group: str) -> str:
    """The group's entry on the internal port (liftoff/gateway/internal.py), by the Service's in-cluster name, which
    KEDA's
    operator reaches from its own namespace."""
    host = f"{service_name(values, 'internal')}.{values.namespace}.svc"
    return f"http://{host}:{config.settings.internal_port}/consumer_groups/{group}"


def scaled_object(values: Values, config: Rendered, group: str) -> Obj:
    scaling = values.groups[group].autoscaling
    target = reader_name(values, group)
    trigger = {
        "type": "metrics-api",
        "metricType": "AverageValue",  # the backlog divided by the readers, held near backlogPerReplica
        "metadata": {"url": backlog_url(values, config, group), "format": "json", "valueLocation": "backlog",
                     "targetValue": str(scaling.backlog_per_replica),
                     "activationTargetValue": str(scaling.activation_backlog)},
    }
    behavior = {"scaleDown": {"stabilizationWindowSeconds": scaling.scale_down_stabilization_seconds,
                              "policies": [{"type": "Pods", "value": 1, "periodSeconds": SCALE_DOWN_PERIOD_S}]}}
    return {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": metadata(values, target, "reader", group),
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
                 "minReplicaCount": scaling.min_replicas, "maxReplicaCount": scaling.max_replicas,
                 "pollingInterval": scaling.polling_interval_seconds,
                 "cooldownPeriod": scaling.cooldown_period_seconds,
                 "advanced": {"horizontalPodAutoscalerConfig": {"behavior": behavior}},
                 "triggers": [trigger]},
    }
