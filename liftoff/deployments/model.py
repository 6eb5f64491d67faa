"""Live deployments: the request and stored models, resource identifiers, the error envelope, and the node check.

A live deployment is a consumer group served by reader replicas of one model. The public shape (`LiveDeployment`)
follows the Models v2 API; what Liftoff needs beyond it travels in extension fields of the create body:

* `modelName`: the Liftoff model the replicas load (e.g. `"echo"`, a local path, a Hugging Face name). A model rid
  is mapped to its name in the `deployment_models` hash; a create body with `modelName` and no `modelRid` gets the
  rid `ri.liftoff.main.model.<uuid5(name)>`, the same for every deployment of that name. A create body with only a
  `modelRid` must name a model that an earlier deployment registered (else 404 `ModelNotFound`).
* `consumerGroup`: the group the replicas serve; default `deployment-<first 8 hex digits of the rid's uuid>`.
* `readerConfig`: reader settings applied to every replica (`max_batch_size`, `device`, `echo_token_delay_ms`, …),
  minus those the deployment sets itself (model, group, reader id, CPU threads).

Liftoff keeps no model versions: `modelVersionRid` is derived from the model rid and name, so it is stable.
"""

from __future__ import annotations

import math
import re
import uuid
from typing import Any

import psutil
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from liftoff.core.errors import ApiError
from liftoff.core.reader_config import ReaderConfig

RID_PATTERN = re.compile(r"^ri\.([a-z][a-z0-9-]*)\.([a-z0-9][a-z0-9-]*)?\.([a-z][a-z0-9-]*)\.([a-zA-Z0-9._-]+)$")
SERVICE, INSTANCE = "liftoff", "main"
DEPLOYMENT_TYPE, MODEL_TYPE, MODEL_VERSION_TYPE = "live-deployment", "model", "model-version"
DEFAULT_THREAD_COUNT = 32  # the reference's default; capped at the node's logical CPUs
DEFAULT_BRANCH = "master"
SET_BY_DEPLOYMENT = ("model_name", "consumer_group", "reader_id", "cpu_threads")
_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|K|KB|KI|KIB|M|MB|MI|MIB|G|GB|GI|GIB|T|TB|TI|TIB)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 10**3, "KB": 10**3, "KI": 2**10, "KIB": 2**10, "M": 10**6, "MB": 10**6, "MI": 2**20,
          "MIB": 2**20, "G": 10**9, "GB": 10**9, "GI": 2**30, "GIB": 2**30, "T": 10**12, "TB": 10**12, "TI": 2**40,
          "TIB": 2**40}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


# --- errors ---------------------------------------------------------------------------------------------------------
class DeploymentError(ApiError):
    """An error in the Models API envelope: `{errorCode, errorName, errorInstanceId, parameters}`."""

    def __init__(self, status: int, code: str, name: str, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(f"{name}: {parameters or {}}")
        self.status = status
        self.code = code
        self.name = name
        self.parameters = parameters or {}

    def body(self) -> dict[str, Any]:
        return {"errorCode": self.code, "errorName": self.name, "errorInstanceId": str(uuid.uuid4()),
                "parameters": self.parameters}


def invalid(name: str, **parameters: Any) -> DeploymentError:
    return DeploymentError(400, "INVALID_ARGUMENT", name, parameters)


def not_found(name: str, **parameters: Any) -> DeploymentError:
    return DeploymentError(404, "NOT_FOUND", name, parameters)


def from_validation(exc: ValidationError, prefix: str = "") -> DeploymentError:
    """The first problem names its field (`runtimeConfiguration.maxReplicas`); all of them are listed."""
    problems = [{"field": prefix + ".".join(str(p) for p in e["loc"]) or "body",
                 "message": e["msg"].removeprefix("Value error, ")} for e in exc.errors(include_url=False)]
    return invalid("InvalidArgument", field=problems[0]["field"], message=problems[0]["message"], errors=problems)


# --- resource identifiers -------------------------------------------------------------------------------------------
def mint_rid(kind: str, locator: uuid.UUID | None = None) -> str:
    return f"ri.{SERVICE}.{INSTANCE}.{kind}.{locator or uuid.uuid4()}"


def model_rid_for(model_name: str) -> str:
    return mint_rid(MODEL_TYPE, uuid.uuid5(uuid.NAMESPACE_URL, f"liftoff-model:{model_name}"))


def model_version_rid_for(model_rid: str, model_name: str) -> str:
    return mint_rid(MODEL_VERSION_TYPE, uuid.uuid5(uuid.NAMESPACE_URL, f"{model_rid}|{model_name}"))


def check_rid(value: str, parameter: str, kind: str, unsupported: str | None = None) -> str:
    """400 for a malformed rid; a well-formed rid of another service or type is `unsupported` (or malformed)."""
    match = RID_PATTERN.match(value)
    if match is None:
        raise invalid("InvalidResourceIdentifier", **{parameter: value})
    if (match.group(1), match.group(3)) != (SERVICE, kind):
        raise invalid(unsupported or "InvalidResourceIdentifier", **{parameter: value})
    return value


# --- request and stored models --------------------------------------------------------------------------------------
def parse_duration_s(value: float | int | str) -> float:
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"must be seconds or a duration like '500ms', '5s', '2m'; given {value!r}")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if not 0 <= seconds <= 86_400:
        raise ValueError(f"must be between 0 and 24h; given {value!r}")
    return seconds


def parse_memory_bytes(value: str | int) -> int:
    if isinstance(value, int):
        return value
    match = _MEMORY.match(value)
    if match is None:
        raise ValueError(f"must be a size like '256MiB' or '1GiB'; given {value!r}")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "").upper()])


class Camel(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ScalingConfiguration(Camel):
    scale_up_load_threshold: float = Field(default=0.75, gt=0, le=1, alias="scaleUpLoadThreshold")
    scale_up_delay: float | str = Field(default="5s", alias="scaleUpDelay")
    scale_down_delay: float | str = Field(default="30s", alias="scaleDownDelay")

    @field_validator("scale_up_delay", "scale_down_delay")
    @classmethod
    def _delay(cls, value: float | str) -> float | str:
        parse_duration_s(value)
        return value

    def delays_s(self) -> tuple[float, float]:
        """(scale-up delay, scale-down delay) in seconds."""
        return parse_duration_s(self.scale_up_delay), parse_duration_s(self.scale_down_delay)


def default_thread_count() -> int:
    return min(DEFAULT_THREAD_COUNT, psutil.cpu_count(logical=True) or 1)


class RuntimeConfiguration(Camel):
    min_replicas: int = Field(ge=0, le=64, alias="minReplicas")
    max_replicas: int = Field(ge=1, le=64, alias="maxReplicas")
    cpu: float = Field(default=1.0, gt=0)  # cores per replica (request = limit)
    memory: str = "1GiB"  # per replica (request = limit)
    thread_count: int = Field(default_factory=default_thread_count, ge=1, alias="threadCount")
    scaling_configuration: ScalingConfiguration | None = Field(default=None, alias="scalingConfiguration")

    @field_validator("memory", mode="before")
    @classmethod
    def _memory(cls, value: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            value = f"{value}B"
        if not isinstance(value, str):
            raise ValueError(f"must be a size like '256MiB' or '1GiB'; given {value!r}")  # noqa: TRY004
        if parse_memory_bytes(value) <= 0:
            raise ValueError(f"must be more than 0 bytes; given {value!r}")
        return value

    @model_validator(mode="after")
    def _bounds(self) -> RuntimeConfiguration:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"minReplicas ({self.min_replicas}) must not exceed maxReplicas ({self.max_replicas})")
        return self

    @property
    def memory_bytes(self) -> int:
        return parse_memory_bytes(self.memory)

    @property
    def scaling(self) -> ScalingConfiguration:
        return self.scaling_configuration or ScalingConfiguration()

    def view(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class DeploymentType(Camel):
    type: str
    model_rid: str | None = Field(default=None, alias="modelRid")
    branch: str | None = None


class CreateRequest(Camel):
    deployment_type: DeploymentType = Field(alias="deploymentType")
    runtime_configuration: RuntimeConfiguration = Field(alias="runtimeConfiguration")
    model_name: str | None = Field(default=None, min_length=1, alias="modelName")
    consumer_group: str | None = Field(default=None, alias="consumerGroup")
    reader_config: dict[str, Any] = Field(default_factory=dict, alias="readerConfig")


class ReplaceRequest(Camel):
    runtime_configuration: RuntimeConfiguration = Field(alias="runtimeConfiguration")


class Deployment(BaseModel):
    """What the `deployments` hash keeps per rid (written by the API only; the controller reads it)."""

    rid: str
    model_rid: str
    model_name: str
    model_version_rid: str
    branch: str | None
    consumer_group: str
    runtime: RuntimeConfiguration
    reader: dict[str, Any] = Field(default_factory=dict)  # ReaderConfig fields for every replica
    supervisor: str  # the `liftoff serve` whose controller runs the replicas
    disabled: bool = False

    @property
    def short(self) -> str:
        return "ld-" + self.rid.rsplit(".", 1)[1].replace("-", "")[:8]

    @property
    def reader_prefix(self) -> str:
        return f"{self.short}-r"

    def reader_config(self, reader_id: str) -> ReaderConfig:
        return ReaderConfig.model_validate({**self.reader, "model_name": self.model_name, "reader_id": reader_id,
                                            "consumer_group": self.consumer_group,
                                            "cpu_threads": self.runtime.thread_count})

    def view(self, state: str, ready: bool, reason: str | None = None) -> dict[str, Any]:
        status: dict[str, Any] = {"state": state, "isReady": ready}
        if reason:
            status["reason"] = reason
        out: dict[str, Any] = {
            "rid": self.rid,
            "modelVersion": {"modelRid": self.model_rid, "modelVersionRid": self.model_version_rid},
            "runtimeConfiguration": self.runtime.view(),
            "status": status,
            "consumerGroup": self.consumer_group,
            "modelName": self.model_name,
        }
        if self.branch is not None:
            out["branch"] = self.branch
        return out


def check_reader_config(fields: dict[str, Any]) -> dict[str, Any]:
    """The create body's `readerConfig`, validated as ReaderConfig fields, without those the deployment sets."""
    taken = sorted(k for k in fields if k in SET_BY_DEPLOYMENT)
    if taken:
        raise invalid("InvalidArgument", field=f"readerConfig.{taken[0]}",
                      message=f"{taken} are set by the deployment (modelName, consumerGroup, threadCount)")
    try:
        config = ReaderConfig.model_validate({**fields, "model_name": "x"})
    except ValidationError as exc:
        raise from_validation(exc, "readerConfig.") from None
    if config.device == "auto":
        raise invalid("InvalidArgument", field="readerConfig.device",
                      message="deployment replicas need a fixed device: cpu, cuda or cuda:N")
    return fields


# --- the node check -------------------------------------------------------------------------------------------------
def check_fits_node(runtime: RuntimeConfiguration) -> None:
    """Refuse what this node cannot give: one replica beyond the node, or `minReplicas` beyond what is free now."""
    cores = psutil.cpu_count(logical=True) or 1
    mem = psutil.virtual_memory()
    if runtime.thread_count > cores:
        raise invalid("ThreadCountTooHigh", maxThreadCount=cores, providedThreadCount=runtime.thread_count)
    need_cpu, need_mem = runtime.cpu * runtime.min_replicas, runtime.memory_bytes * runtime.min_replicas
    if runtime.cpu > cores or need_cpu > cores:
        raise invalid("RuntimeConfigurationNotSatisfiable", field="runtimeConfiguration.cpu",
                      requested=runtime.cpu, minReplicas=runtime.min_replicas, available=cores,
                      message=f"{runtime.min_replicas} replica(s) of {runtime.cpu:g} cores do not fit the node's "
                              f"{cores} cores")
    if runtime.memory_bytes > mem.total or need_mem > mem.available:
        raise invalid("RuntimeConfigurationNotSatisfiable", field="runtimeConfiguration.memory",
                      requested=runtime.memory, minReplicas=runtime.min_replicas, available=mem.available,
                      message=f"{runtime.min_replicas} replica(s) of {runtime.memory} do not fit the node's "
                              f"{mem.available} bytes available")


def node_replica_cap(runtime: RuntimeConfiguration) -> int:
    """How many replicas of this shape the node holds at most (the autoscaler stays within it)."""
    cores = psutil.cpu_count(logical=True) or 1
    by_cpu = math.floor(cores / runtime.cpu + 1e-9)
    by_mem = psutil.virtual_memory().total // max(1, runtime.memory_bytes)
    return max(runtime.min_replicas, min(runtime.max_replicas, by_cpu, by_mem))
