"""The ConfigMap's config.toml and each group's reader settings, checked by Liftoff's own settings models.

What the pods' layout decides is written by the renderer and refused in the values (`FIXED`, `REFUSED`); everything
else in `config` goes into config.toml as given, and the whole file is checked as `liftoff serve` would check it,
so that a misspelt setting fails the render instead of a pod.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from liftoff.core.reader_config import ReaderConfig
from liftoff.core.settings import Settings, describe_validation_error, settings_from_mapping

from .values import Values, ValuesError

CONFIG_DIR = "/etc/liftoff"
CONFIG_PATH = f"{CONFIG_DIR}/config.toml"
STATE_DIR = "/var/lib/liftoff"
MODELS_DIR = "/models"
FIXED: dict[str, Any] = {"host": "0.0.0.0", "state_dir": STATE_DIR, "repository_path": MODELS_DIR, "readers": []}
REFUSED = {
    "readers": "readers are the values' `groups`: one Deployment per consumer group",
    "redis_url": "set redis.url (and redis.passwordSecret for its password)",
    "admin_api_key": "plaintext keys come from Secrets: set apiKeys.admin",
    "read_api_key": "plaintext keys come from Secrets: set apiKeys.read",
    "inference_api_key": "plaintext keys come from Secrets: set apiKeys.inference",
    "host": "every port listens on the pod's addresses, where probes and Services reach it",
    "management_host": "the management port listens on the pod's addresses, where its probes and Service reach it",
    "role": "each Deployment sets its pods' role: the gateway's run `liftoff serve --role gateway`, the readers' "
            "`liftoff reader`",
    "host_name": "each pod names its host: a gateway pod by its pod name, a reader by the node it runs on",
    "state_dir": f"a pod keeps its state in {STATE_DIR}",
    "repository_path": f"readers keep models in {MODELS_DIR} (models.persistentVolumeClaim)",
}
READER_REFUSED = {
    "consumer_group": "the group is the key under `groups`",
    "reader_id": "each reader pod's id is its pod name",
    "access_token": "a token comes from a Secret: set the group's accessTokenSecret",
    "cuda_visible_devices": "the GPUs a pod sees are the ones Kubernetes gives it (gpus)",
}
# A reader drains on SIGTERM for shutdown_grace_s, then flushes its last replies and deregisters; the gateway's
# supervisor gives gunicorn shutdown_grace_s and itself SUPERVISOR_MARGIN_S more before it kills what is left.
SUPERVISOR_MARGIN_S = 5
EXIT_MARGIN_S = 10


@dataclass(frozen=True)
class Rendered:
    toml: str
    settings: Settings
    readers: dict[str, str]  # group → the reader's settings as JSON (`liftoff reader --config-json`)

    @property
    def gateway_grace_s(self) -> int:
        return math.ceil(self.settings.shutdown_grace_s) + SUPERVISOR_MARGIN_S + EXIT_MARGIN_S

    @property
    def reader_grace_s(self) -> int:
        return math.ceil(self.settings.shutdown_grace_s) + EXIT_MARGIN_S


def build_config(values: Values) -> Rendered:
    refused = [f"invalid value 'config.{k}': {why}" for k, why in REFUSED.items() if k in values.config]
    if refused:
        raise ValuesError("; ".join(refused))
    data = {**FIXED, **values.config}
    try:
        settings = settings_from_mapping(data)
    except ValidationError as exc:
        raise ValuesError(describe_validation_error(exc, source="values 'config'")) from None
    _check_drain(settings)
    _check_management_keys(values, settings)
    _check_scale_to_zero(values, settings)
    text = toml_document(data)
    if tomllib.loads(text) != data:
        raise ValuesError(f"config.toml does not read back as the values' config: {data!r}")
    readers = {group: reader_json(values, group) for group in values.groups}
    return Rendered(text, settings, readers)


def reader_json(values: Values, group: str) -> str:
    spec = values.groups[group]
    given = dict(spec.reader)
    where = f"groups.{group}.reader"
    refused = [f"invalid value '{where}.{k}': {why}" for k, why in READER_REFUSED.items() if k in given]
    device = str(given.get("device", "cuda" if spec.gpus else "cpu")).strip().lower()
    if spec.gpus and not device.startswith("cuda"):
        refused.append(f"invalid value '{where}.device': a group with gpus runs on cuda; given {device!r}")
    if not spec.gpus and device != "cpu":
        refused.append(f"invalid value '{where}.device': {device!r} needs gpus > 0 (only cpu without them)")
    if refused:
        raise ValuesError("; ".join(refused))
    threads = cpu_threads(spec.resources, f"groups.{group}.resources")
    if threads and "cpu_threads" not in given:  # torch would take one thread per core of the node, not of the pod
        given["cpu_threads"] = threads
    try:
        config = ReaderConfig.model_validate({**given, "device": device, "consumer_group": group})
    except ValidationError as exc:
        raise ValuesError(describe_validation_error(exc, source=f"values '{where}'")) from None
    return json.dumps(config.model_dump(mode="json", exclude_unset=True), separators=(",", ":"))


def cpu_threads(resources: dict[str, Any], where: str) -> int | None:
    """Whole CPUs of the pod's CPU limit, else of its request (at least 1); None when it names neither."""
    for kind in ("limits", "requests"):
        quantity = (resources.get(kind) or {}).get("cpu")
        if quantity is None:
            continue
        text = str(quantity).strip()
        try:
            cores = float(text[:-1]) / 1000 if text.endswith("m") else float(text)
        except ValueError:
            raise ValuesError(f"invalid value '{where}.{kind}.cpu': a CPU quantity such as 2 or 500m; "
                              f"given {quantity!r}") from None
        return max(1, math.floor(cores))
    return None


def _check_drain(settings: Settings) -> None:
    if settings.shutdown_grace_s < settings.request_timeout_s:
        raise ValuesError(
            f"invalid value 'config.shutdown_grace_s': {settings.shutdown_grace_s:g} s is shorter than "
            f"request_timeout_s ({settings.request_timeout_s:g} s), so a pod stopping (a rollout, a scale-down, a "
            "node drain) could cut off requests still within their time; make it at least request_timeout_s")


def _check_management_keys(values: Values, settings: Settings) -> None:
    keys = values.api_keys
    if not (keys.admin or keys.read or settings.management_api_keys):
        raise ValuesError(
            "invalid value 'apiKeys.admin': without a management API key the management port listens on loopback "
            "only, where neither the probes nor its Service reach it; set apiKeys.admin (a Secret) or "
            "config.management_api_keys")


def _check_scale_to_zero(values: Values, settings: Settings) -> None:
    reserved = set(settings.reserved_groups())
    for group, spec in values.groups.items():
        scaled = spec.autoscaling
        if scaled.enabled and scaled.min_replicas == 0 and group not in reserved:
            raise ValuesError(
                f"invalid value 'groups.{group}.autoscaling.minReplicas': 0 readers of a group that is not in "
                f"config.reserved_consumers means its requests are refused at once (503), so no backlog ever "
                f"builds up to scale it back; add {group!r} to reserved_consumers (its requests then wait up to "
                "request_timeout_s for a reader) or keep at least one reader")
        if scaled.enabled and scaled.min_replicas > scaled.max_replicas:
            raise ValuesError(f"invalid value 'groups.{group}.autoscaling.minReplicas': {scaled.min_replicas} is "
                              f"over maxReplicas ({scaled.max_replicas})")


# --- TOML: the subset settings use (scalars, arrays, inline tables) -------------------------------------------------
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_document(data: dict[str, Any]) -> str:
    return "".join(f"{_key(k)} = {toml_value(v)}\n" for k, v in data.items())


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValuesError(f"config: {value!r} has no place in config.toml")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's, and `\/` is never written
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise ValuesError(f"config: {value!r} ({type(value).__name__}) has no place in config.toml")


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)
