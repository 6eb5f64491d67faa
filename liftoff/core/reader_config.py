"""One reader's settings (`[[readers]]` in config.toml, a `POST /reader` body, a deployment's template), with the
reference's reader-config field names, and how its secret is kept.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    SerializationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from liftoff.core.model_names import check_model_name, check_simple_name

Device = str  # "cpu", "cuda", "cuda:N" or "auto"; checked by ReaderConfig.device's validator
# A reader's `dtype` names and the torch dtype each stands for ("auto": fp32 on CPU, bf16 on a GPU with native
# bf16, else fp16); liftoff.readers.engines.torch_device turns them into torch dtypes.
DTYPE_NAMES = {"auto": "auto", "float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
               "float16": "float16", "fp16": "float16"}
DTYPE_CHOICES = "auto, float32 (fp32), bfloat16 (bf16), float16 (fp16)"
DEFAULT_MAX_BATCH_SIZE = 8  # readers whose max_batch_size is "auto" and that do not plan their own (embeddings, ...)


class ReaderConfig(BaseModel):
    """One reader, with the reference's reader-config field names.

    Every field of the reference's reader config is here. Those that name a feature this server does not have
    (`UNSUPPORTED`) are refused when set, with one line naming them; a value that asks for what the server does
    anyway (`tensor_parallel = 1`, `disable_cuda_graph = true`) is accepted.
    """

    model_config = ConfigDict(extra="forbid")

    model_name: str = "echo"
    device: Device = "cpu"
    consumer_group: str = "primary"
    reader_id: str | None = None  # stable id; the supervisor assigns `<consumer_group>-<n>` when absent
    redis_host: str | None = None  # refused when set: readers use the server's redis_url
    backend: str | None = None
    log_level: str = "INFO"
    # The GPUs the reader process sees (CUDA_VISIBLE_DEVICES, set before torch loads): "0,2", GPU UUIDs, or "" for
    # none; `device = "cuda:N"` then counts among these
    cuda_visible_devices: str | None = None
    # Rows served at once. "auto": generation readers size it from their KV plan (see
    # liftoff/readers/engines/kv_blocks.py);
    # other readers take DEFAULT_MAX_BATCH_SIZE.
    max_batch_size: int | Literal["auto"] = Field(default="auto", union_mode="left_to_right")
    batch_duration_millis: int = Field(default=100, ge=0, le=60_000)
    # A Hugging Face token for downloads. A secret: every dump of a config shows it as SECRET_MASK (the registry,
    # `/config`, logs, the supervisor's children's environment) except the one that hands a config to the supervisor
    # (reader_store, `model_dump_json(context=REVEAL)`); a reader gets it in its environment (READER_TOKEN_ENV).
    access_token: SecretStr | None = None
    tensor_parallel: int | None = Field(default=None, ge=1)
    # Weight quantisation applied at load ("int8": int8 weight-only); the reader refuses, by name, any other value
    # (liftoff.readers.engines.load_options). None: the weights as saved, a model saved quantized loading as it is.
    quant_type: str | None = None
    max_sequence_length: int | None = Field(default=None, ge=1)
    nvlink_unavailable: bool | None = None
    disable_static: bool | None = None
    disable_cuda_graph: bool | None = None
    cuda_graph_cache_capacity: int | None = Field(default=None, ge=0)
    disable_paged_attention: bool | None = None  # generation: true turns the prefix cache off (see prefix_caching)
    page_cache_size: str | int | None = None  # generation: KV-cache budget, bytes ("4GB") or % of free memory ("20%")
    # generation: prompt tokens prefilled per scheduler iteration, between decode steps; 0 = whole prompts at once.
    # None: DEFAULT_PREFILL_CHUNK_SIZE (chosen by measurement, bench/README.md).
    prefill_chunk_size: int | None = Field(default=None, ge=0, le=1_048_576)
    prefix_caching: bool = True  # generation: requests sharing a prompt prefix reuse its KV blocks
    # generation: the format this model writes tool calls in (liftoff.core.tool_calls.PARSERS); "auto": the one its
    # chat template's text shows (none when it shows none); "none": the model is offered no tools
    tool_call_parser: Literal["auto", "none", "hermes", "llama3_json", "mistral"] = "auto"
    # generation: the grammar engine of requests that name none (Takeoff's reader option); llguidance is the one
    # this server offers (liftoff.core.grammar_check says why lm-format-enforcer is not), so other names are refused
    constrained_decoding_backend: str | None = None
    # generation: LoRA adapters loaded at start, each "SOURCE" or "NAME=SOURCE" (liftoff.core.adapters; docs/lora.md);
    # one comma-separated string is read as a list
    loras: list[str] = Field(default_factory=list)
    # None: read from the model's files; "image-to-text": a vision-language model
    # (liftoff/readers/engines/image_to_text.py)
    model_type: Literal["generation", "embedding", "classification", "image-to-text"] | None = None
    dtype: str = "auto"  # one of DTYPE_NAMES, kept in its long form (None or "" is taken as "auto")
    echo_token_delay_ms: int = Field(default=0, ge=0, le=60_000)  # echo engine: pause between tokens (a model's pace)
    cpu_threads: int | None = Field(default=None, ge=1, le=1024)  # torch CPU threads; None: torch's default
    # Served instead of model_name when model_name cannot be had (offline, not in the repository); the reader says so
    # in its log and in /status. None: such a reader fails.
    fallback_model_name: str | None = None

    @field_validator("max_batch_size")
    @classmethod
    def _batch(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 1 <= value <= 4096:
            raise ValueError(f"max_batch_size must be between 1 and 4096, or \"auto\"; given {value}")
        return value

    @field_validator("constrained_decoding_backend")
    @classmethod
    def _backend(cls, value: str | None) -> str | None:
        from liftoff.core.grammar_check import backend_error

        problem = backend_error(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("loras", mode="before")
    @classmethod
    def _loras(cls, value: object) -> object:
        from liftoff.core.adapters import parse_loras

        if value is None:
            return []
        if isinstance(value, str):
            value = [part for part in value.split(",") if part.strip()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            parse_loras(value)
            return [v.strip() for v in value]
        return value

    @field_validator("page_cache_size")
    @classmethod
    def _page_cache(cls, value: str | int | None) -> str | int | None:
        if value is not None:
            from liftoff.core.sizes import parse_cache_size

            parse_cache_size(value, 1 << 40)  # the form only; the share of free memory is taken at load
        return value

    def batch_slots(self, default: int = DEFAULT_MAX_BATCH_SIZE) -> int:
        """max_batch_size as a number: `default` where it is "auto" (the reader decides at load)."""
        return default if self.max_batch_size == "auto" else int(self.max_batch_size)

    @property
    def prefix_cache_on(self) -> bool:
        return self.prefix_caching and not self.disable_paged_attention

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype(cls, value: object) -> str:
        if value is None or (isinstance(value, str) and not value.strip()):
            return "auto"
        name = DTYPE_NAMES.get(value.strip().lower()) if isinstance(value, str) else None
        if name is None:
            raise ValueError(f"dtype must be one of {DTYPE_CHOICES}; given {value!r}")
        return name

    @field_validator("quant_type", mode="before")
    @classmethod
    def _quant_type(cls, value: object) -> object:
        # Only the spelling is settled here; whether this reader can load it is known at its start, on its device.
        if isinstance(value, str):
            value = value.strip().lower()
            return None if value in ("", "none") else value
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        value = value.strip().lower()
        if value in ("cpu", "cuda", "auto") or (value.startswith("cuda:") and value[5:].isdigit()):
            return value
        raise ValueError(f"device must be cpu, cuda, cuda:N or auto; given {value!r}")

    @field_validator("consumer_group", "reader_id")
    @classmethod
    def _simple_name(cls, value: str | None, info: Any) -> str | None:
        # they become Redis keys, URL paths (/reader/{id}) and process names: letters, digits, '-', '_', '.' only
        # (so no ':', which is the OpenAI port's `group:adapter`, and no '/'); an empty reader_id is an unset one
        if value is None or (value == "" and info.field_name == "reader_id"):
            return value
        return check_simple_name(value, info.field_name)

    @field_validator("cuda_visible_devices")
    @classmethod
    def _visible(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.replace(" ", "")
        if value and not all(part.isdigit() or part.startswith(("GPU-", "MIG-")) for part in value.split(",")):
            raise ValueError(f"cuda_visible_devices must be GPU indices or UUIDs separated by commas (\"0,2\"), "
                             f"or \"\" for none; given {value!r}")
        return value

    @model_validator(mode="after")
    def _supported(self) -> ReaderConfig:
        refused = [f"{name} ({why})" for name, (allowed, why) in UNSUPPORTED.items()
                   if getattr(self, name) is not None and getattr(self, name) != allowed]
        if refused:
            raise ValueError("not supported by this server, remove: " + "; ".join(refused))
        return self

    @field_serializer("access_token")
    def _hide_token(self, value: SecretStr | None, info: SerializationInfo) -> str | None:
        if value is None:
            return None
        return value.get_secret_value() if (info.context or {}).get("reveal_secrets") else SECRET_MASK

    @field_validator("model_name", "fallback_model_name")
    @classmethod
    def _model_name(cls, value: str | None, info: Any) -> str | None:
        return value if value is None else check_model_name(value, info.field_name)


# Reference reader-config fields for features this server does not have: (the one value that asks for nothing
# more than it does, why). Set to anything else, a reader config is refused naming them.
UNSUPPORTED: dict[str, tuple[object, str]] = {
    "tensor_parallel": (1, "a reader runs its model on one device"),
    "nvlink_unavailable": (None, "it only matters to tensor parallelism"),
    "disable_static": (None, "there is no static batching mode to turn off"),
    "disable_cuda_graph": (True, "decode steps are not captured as CUDA graphs"),
    "cuda_graph_cache_capacity": (None, "decode steps are not captured as CUDA graphs"),
    "redis_host": (None, "readers use the server's redis_url"),
}
SECRET_MASK = "**********"
REVEAL = {"reveal_secrets": True}  # serialization context under which secrets are written out as they are
READER_TOKEN_ENV = "LIFTOFF_READER_ACCESS_TOKEN"  # how a supervised reader receives its access_token
