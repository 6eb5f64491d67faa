"""The values a deployment is rendered from: `deploy/values.yaml`, then each overlay given with `-f`, merged in order.

Merging follows Helm's rule: mappings merge key by key, anything else (lists included) is replaced, and a `null`
removes the key (so an overlay can drop a consumer group: `groups: {embed: null}`). Every key is known: a misspelt
one is refused by name, like Liftoff's own settings. Keys are camelCase, as in Kubernetes, except inside `config`
and a group's `reader`, which hold Liftoff's settings under their own names (README, config.toml).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.alias_generators import to_camel

DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DEFAULT_VALUES = Path(__file__).resolve().parent.parent / "values.yaml"
PORT_NAMES = ("inference", "management", "vertex", "openai", "snowflake", "internal")


class ValuesError(Exception):
    """The values cannot be rendered; the message names the key and says why."""


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, frozen=True)


class SecretRef(Model):
    """One key of a Secret the operator creates (`kubectl create secret generic NAME --from-literal=KEY=...`)."""

    name: str
    key: str


class Image(Model):
    repository: str
    tag: str
    pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    pull_secrets: list[str] = Field(default_factory=list)
    python: str = "python"  # the image's interpreter with Liftoff installed (it runs the reader probe)

    @property
    def ref(self) -> str:
        return f"{self.repository}:{self.tag}"


class Redis(Model):
    url: str  # redis://host:port/db or rediss://...; no password in it when password_secret is set
    password_secret: SecretRef | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://")):
            raise ValueError("redis.url must be a redis:// or rediss:// URL of the Redis or Valkey every pod reaches "
                             f"(an embedded or unix-socket Redis cannot be shared by pods); given {value!r}")
        if urlsplit(value).password is not None:
            raise ValueError("redis.url must not hold a password: put it in a Secret and name it in "
                             "redis.passwordSecret")
        return value


class ApiKeys(Model):
    """Plaintext keys from Secrets, handed to the gateway as LIFTOFF_ADMIN_API_KEY, LIFTOFF_READ_API_KEY and
    LIFTOFF_INFERENCE_API_KEY (hashed when the settings load)."""

    admin: SecretRef | None = None
    read: SecretRef | None = None
    inference: SecretRef | None = None


class Service(Model):
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    annotations: dict[str, str] = Field(default_factory=dict)
    enabled: bool = True


class Disruption(Model):
    max_unavailable: int = Field(default=1, ge=1)


class Placement(Model):
    """Where pods run and what they get; passed to the pod spec as they are (checked by the Kubernetes schema)."""

    resources: dict[str, Any] = Field(default_factory=dict)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    affinity: dict[str, Any] = Field(default_factory=dict)


class Gateway(Placement):
    replicas: int = Field(default=2, ge=1)
    # Seconds between the pod's removal from its Services' endpoints and SIGTERM, so that no new request lands on a
    # gateway that has stopped taking them (endpoint updates reach every node's proxy and the load balancers).
    pre_stop_sleep_seconds: int = Field(default=5, ge=0, le=120)
    pod_disruption_budget: Disruption = Field(default_factory=Disruption)
    services: dict[str, Service] = Field(default_factory=dict)

    @field_validator("services")
    @classmethod
    def _services(cls, value: dict[str, Service]) -> dict[str, Service]:
        unknown = sorted(set(value) - set(PORT_NAMES))
        if unknown:
            raise ValueError(f"unknown port {unknown}; the ports are {list(PORT_NAMES)}")
        internal = value.get("internal")
        if internal is not None and (internal.type != "ClusterIP" or not internal.enabled):
            raise ValueError("the internal port's Service stays an enabled ClusterIP: it has no API keys, and "
                             "the autoscaler reads each group's backlog through it")
        return value


class Autoscaling(Model):
    """A KEDA ScaledObject on the group's backlog (queued + in progress, from the internal port)."""

    enabled: bool = True
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=4, ge=1)
    backlog_per_replica: int = Field(default=16, ge=1)  # the backlog one reader is meant to hold
    activation_backlog: int = Field(default=0, ge=0)  # from zero readers: scale up once the backlog exceeds it
    polling_interval_seconds: int = Field(default=10, ge=1)
    cooldown_period_seconds: int = Field(default=300, ge=0)  # last request to scaling to zero
    scale_down_stabilization_seconds: int = Field(default=300, ge=0, le=3600)


class Group(Placement):
    """One consumer group: its reader Deployment, its PodDisruptionBudget and its ScaledObject."""

    reader: dict[str, Any] = Field(default_factory=dict)  # Liftoff's reader settings (config.toml's [[readers]])
    gpus: int = Field(default=0, ge=0)  # nvidia.com/gpu per reader pod; > 0: the reader runs on device cuda
    access_token_secret: SecretRef | None = None  # a Hugging Face token for downloads (LIFTOFF_READER_ACCESS_TOKEN)
    replicas: int = Field(default=1, ge=0)  # without autoscaling
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    pod_disruption_budget: Disruption = Field(default_factory=Disruption)
    # A rollout's surge/unavailable; None: one extra pod at a time on a CPU, one pod replaced at a time on GPUs
    # (a surge pod would wait for a free GPU that may not exist).
    max_surge: int | None = Field(default=None, ge=0)
    max_unavailable: int | None = Field(default=None, ge=0)


class Models(Model):
    """Where readers keep models (`repository_path`): a PersistentVolumeClaim shared by reader pods, or an emptyDir
    per pod (downloaded at every start where there is network)."""

    persistent_volume_claim: str = ""
    read_only: bool = False
    empty_dir_size_limit: str = "20Gi"


class Values(Model):
    name: str = "liftoff"
    namespace: str = "default"
    image: Image
    redis: Redis
    api_keys: ApiKeys = Field(default_factory=ApiKeys)
    config: dict[str, Any] = Field(default_factory=dict)  # Liftoff's server settings, into config.toml
    gateway: Gateway = Field(default_factory=Gateway)
    models: Models = Field(default_factory=Models)
    groups: dict[str, Group] = Field(default_factory=dict)

    @field_validator("name", "namespace")
    @classmethod
    def _dns(cls, value: str) -> str:
        if not DNS_LABEL.match(value) or len(value) > 40:
            raise ValueError(f"must be a DNS label of at most 40 characters (lowercase letters, digits, '-'); "
                             f"given {value!r}")
        return value

    @field_validator("groups")
    @classmethod
    def _groups(cls, value: dict[str, Group]) -> dict[str, Group]:
        if not value:
            raise ValueError("at least one consumer group is needed")
        for group in value:
            if not DNS_LABEL.match(group):
                raise ValueError(f"consumer group {group!r} must be a DNS label (lowercase letters, digits and '-'): "
                                 "it names the group's Kubernetes objects")
        return value


def merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """`overlay` over `base`: mappings merge, other values replace, None removes."""
    merged = dict(base)
    for key, value in overlay.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValuesError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise ValuesError(f"{path}: the values must be a mapping at the top level")
    return data


def load_values(overlays: list[Path] | None = None, base: Path = DEFAULT_VALUES,
                extra: dict[str, Any] | None = None) -> Values:
    """The default values, each overlay file in order, then `extra`, merged and checked."""
    data = read_yaml(base)
    for path in overlays or []:
        data = merge(data, read_yaml(path))
    if extra:
        data = merge(data, extra)
    try:
        return Values.model_validate(data)
    except ValidationError as exc:
        raise ValuesError(describe(exc)) from None


def describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "values"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        lines.append(f"invalid value '{where}': {msg}")
    return "; ".join(lines)
