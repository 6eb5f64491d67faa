"""Request models of the OpenAI-compatible API (port 3003), apart from the serving code.

Each model validates every parameter with a message naming it, refuses what Liftoff cannot honour with a 400
naming the parameter (functions, logit_bias, penalties other than 0, ...) rather than ignoring it, and
converts itself to the wire's GenerationParams fields (`params()`). `parse_openai` is the one entry: unknown
parameters are refused as OpenAI does ("Unrecognized request argument supplied").
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from liftoff.core.grammar_check import constraint_error
from liftoff.core.wire import MAX_TOP_LOGPROBS
from liftoff.gateway.chat.errors import OpenAIError, invalid
from liftoff.gateway.chat.guided import StructuredOutputs, constraint_names, constraint_params
from liftoff.gateway.chat.tools import HistoryToolCall, Tool, ToolChoice, check_tools
from liftoff.gateway.rules import Bound, Strict, StrictByName, bounds_validator, group_validator, parts_validator, rule
from liftoff.gateway.takeoff.protocol import MAX_NEW_TOKENS_LIMIT

MAX_N = 128
MAX_STOP = 16

# One rule per sampling parameter with a range.
BOUNDS: dict[str, Bound] = {
    "max_tokens": (1, True, MAX_NEW_TOKENS_LIMIT, ""),
    "max_completion_tokens": (1, True, MAX_NEW_TOKENS_LIMIT, ""),
    "temperature": (0, True, 2, " (0 = greedy)"),
    "top_p": (0, False, 1, ""),
    "n": (1, True, MAX_N, ""),
    "top_k": (0, True, None, ""),
    "min_tokens": (0, True, None, ""),
    "repetition_penalty": (0, False, 10, " (1 = off)"),
}

# Parameters of OpenAI's API that Liftoff cannot honour: refused (400 naming them) unless absent, null or the value
# that means "off".
_OFF: dict[str, tuple[Any, ...]] = {
    "tools": (None, []), "tool_choice": (None, "none", "auto"), "functions": (None, []),
    "function_call": (None, "none", "auto"), "logit_bias": (None, {}),
    "presence_penalty": (None, 0, 0.0), "frequency_penalty": (None, 0, 0.0),
    "audio": (None,), "modalities": (None, ["text"]), "prediction": (None,), "suffix": (None, ""),
    "dimensions": (None,), "web_search_options": (None,), "reasoning_effort": (None,),
}
_WHY = {
    "presence_penalty": "use repetition_penalty (> 1 penalises repeats) instead",
    "frequency_penalty": "use repetition_penalty (> 1 penalises repeats) instead",
    "suffix": "insertion (fill-in-the-middle) is not supported",
    "dimensions": "embeddings come at the model's own dimension",
}
# Accepted and ignored: they do not change what is generated.
_IGNORED = ("user", "store", "metadata", "service_tier", "parallel_tool_calls")

M = TypeVar("M", bound=BaseModel)


def parse_openai(model: type[M], data: dict[str, Any]) -> M:
    """Validate `data` as `model`; unknown and unsupported parameters are refused by name."""
    known = set(model.model_fields) | set(_OFF) | set(_IGNORED)
    unknown = sorted(k for k in data if k not in known)
    if unknown:
        raise invalid(f"Unrecognized request argument supplied: {', '.join(unknown)}", unknown[0])
    for name in _OFF:
        if name in data and data[name] not in _OFF[name] and name not in model.model_fields:
            why = _WHY.get(name, "this server does not support it")
            raise invalid(f"{name} is not supported: {why}; given {data[name]!r}"[:500], name)
    return model.model_validate({k: v for k, v in data.items() if k in model.model_fields})


def _param_rule(ok: bool, message: str, value: Any, param: str) -> None:
    """A rule across fields, refused with the parameter named (a model validator's errors carry no field)."""
    if not ok:
        raise invalid(f"{message}; given {value!r}", param)


class StreamOptions(Strict):
    include_usage: StrictBool = False
    continuous_usage_stats: StrictBool = False  # accepted; usage comes only in the final chunk


class JsonSchemaFormat(StrictByName):
    name: StrictStr = "response"
    description: StrictStr | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: StrictBool | None = None


class ResponseFormat(Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _usable(self) -> ResponseFormat:
        schema = self.decoding_schema()
        problem = constraint_error(schema, None) if schema is not None else None
        if problem:
            raise ValueError(f"response_format: {problem}")
        return self

    def decoding_schema(self) -> dict[str, Any] | None:
        if self.type == "json_object":
            return {"type": "object"}
        if self.type == "json_schema":
            return (self.json_schema.schema_ if self.json_schema else None) or {"type": "object"}
        return None


class SamplingRequest(Strict):
    """What chat and text completions share: the model (a consumer group) and the sampling parameters."""

    _constraint: dict[str, Any] = PrivateAttr(default_factory=dict)  # the wire's constraint fields, once validated

    model: StrictStr
    max_tokens: StrictInt | None = None
    max_completion_tokens: StrictInt | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: StrictInt | None = None
    stop: StrictStr | list[StrictStr] | None = None
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    response_format: ResponseFormat | None = None
    # Choice i of the request samples from a generator seeded with seed + i; OpenAI documents an int64.
    seed: StrictInt | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    # Extensions (the names vLLM uses for the same knobs).
    top_k: StrictInt | None = None
    min_tokens: StrictInt | None = None
    repetition_penalty: float | None = None
    # vLLM's structured-output extras (liftoff.gateway.chat.guided): at most one constraint, response_format included.
    guided_json: dict[str, Any] | StrictStr | None = None
    guided_regex: StrictStr | None = None
    guided_choice: list[StrictStr] | None = None
    guided_grammar: StrictStr | None = None
    structured_outputs: StructuredOutputs | None = None

    _group = group_validator()
    _within_bounds = bounds_validator(BOUNDS)

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        stops = [v] if isinstance(v, str) else v or []
        rule(len(stops) <= MAX_STOP, f"stop may hold at most {MAX_STOP} strings", v)
        rule(all(stops), "stop strings must not be empty", v)
        return v

    @model_validator(mode="after")
    def _consistent(self) -> SamplingRequest:
        if self.stream_options is not None and not self.stream:
            raise invalid("stream_options is only allowed when stream is true", "stream_options")
        limit = self.max_new_tokens
        if self.min_tokens is not None and limit is not None and self.min_tokens > limit:
            raise invalid(f"min_tokens must be <= the token limit ({limit}); given {self.min_tokens}", "min_tokens")
        self._constraint = constraint_params(self)
        return self

    @property
    def max_new_tokens(self) -> int | None:
        """max_completion_tokens (the newer name) wins over max_tokens."""
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    @property
    def choices_per_prompt(self) -> int:
        return self.n or 1

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def logprob_count(self) -> int | None:
        """None: no log probabilities; k: each token's, with the k most likely alternatives."""
        return None

    def params(self, defaults: dict[str, float] | None = None) -> dict[str, Any]:
        """GenerationParams fields. What the request leaves unset comes from `defaults` (the sampling the model's
        generation_config sets, as vLLM takes it), else OpenAI's: temperature 1, no top-k cut. Temperature 0 (or
        top_k 1) is greedy; a model whose default is greedy (top_k 1) samples when a request sets a temperature.
        Metadata is always asked for: usage and finish_reason come from it."""
        params: dict[str, Any] = {"return_metadata": True}
        preset = defaults or {}
        temperature = self.temperature if self.temperature is not None else preset.get("temperature", 1.0)
        top_k = self.top_k if self.top_k is not None else preset.get("top_k")
        if self.top_k is None and top_k == 1 and self.temperature:  # a greedy default, and a request that samples
            top_k = None
        top_p = self.top_p if self.top_p is not None else preset.get("top_p")
        if temperature == 0 or top_k == 1:
            params["sampling_topk"] = 1
        else:
            params["sampling_temperature"] = temperature
            params["sampling_topk"] = int(top_k or 0)
            if top_p is not None:
                params["sampling_topp"] = top_p
        if self.max_new_tokens is not None:
            params["max_new_tokens"] = self.max_new_tokens
        if self.min_tokens:
            params["min_new_tokens"] = self.min_tokens
        if self.repetition_penalty is not None:
            params["repetition_penalty"] = self.repetition_penalty
        if self.seed is not None:
            params["seed"] = self.seed
        if self.logprob_count() is not None:
            params["logprobs"] = self.logprob_count()
        if self.stop:  # the reader ends each row at its first stop string; the answer is cut there here
            params["stop"] = self.stops
        params.update(self._constraint)
        return params


class TextPart(Strict):
    type: Literal["text"]
    text: StrictStr


class ImageUrl(Strict):
    url: StrictStr
    detail: Literal["auto"] | None = None  # "low" / "high" would choose a resolution; the model's processor does


class ImagePart(Strict):
    """An image (liftoff.gateway.openai.images): a `data:` URL, or an http(s) URL where the server allows remote
    images."""

    type: Literal["image_url"]
    image_url: ImageUrl


class ChatMessage(Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[TextPart | ImagePart] | None = None
    name: StrictStr | None = None
    tool_calls: list[HistoryToolCall] | None = None  # assistant: the calls it made
    tool_call_id: StrictStr | None = None  # tool: the call this is the result of
    refusal: StrictStr | None = None  # accepted (the official client echoes assistant messages back with it)

    _parts = parts_validator("content", ("text", "image_url"), "only text and image_url content parts are supported "
                             "(no audio or files)")

    @property
    def images(self) -> list[ImagePart]:
        return [p for p in self.content if isinstance(p, ImagePart)] if isinstance(self.content, list) else []

    def template_view(self, index: int = 0, parts: bool = False) -> dict[str, Any]:
        """{role, content} for the chat template (with `tool_calls` or `tool_call_id` when given); `developer` is
        OpenAI's newer name for `system`. `parts`: content as a list of {type: text, text} and {type: image} parts,
        as vision-language models' templates read it (a chat with images)."""
        if parts:
            pieces = [self.content] if isinstance(self.content, str) else self.content or []
            content: Any = [{"type": "text", "text": p} if isinstance(p, str) else
                            {"type": "text", "text": p.text} if isinstance(p, TextPart) else {"type": "image"}
                            for p in pieces]
        elif isinstance(self.content, str):
            content = self.content
        else:
            if self.images:
                raise invalid(f"messages[{index}]: image_url content parts are for user messages of a chat "
                              "completion", f"messages.{index}.content")
            content = "".join(p.text for p in self.content or [] if isinstance(p, TextPart))
        view: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role, "content": content}
        if self.tool_calls:
            view["tool_calls"] = [c.template_view(f"messages.{index}.tool_calls.{j}")
                                  for j, c in enumerate(self.tool_calls)]
        if self.tool_call_id is not None:
            view["tool_call_id"] = self.tool_call_id
        if self.role == "tool" and self.name:
            view["name"] = self.name
        return view


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage]
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = None
    add_generation_prompt: StrictBool = True  # extension: False continues the last assistant message
    tools: list[Tool] | None = None  # liftoff.gateway.chat.tools
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None

    @model_validator(mode="after")
    def _tools(self) -> ChatCompletionRequest:
        check_tools(self.tools, self.tool_choice)
        for i, m in enumerate(self.messages):
            if m.role == "tool" and m.tool_call_id is None:
                raise invalid(f"messages[{i}]: a tool message needs tool_call_id", f"messages.{i}.tool_call_id")
            if m.tool_calls and m.role != "assistant":
                raise invalid(f"messages[{i}]: only assistant messages carry tool_calls", f"messages.{i}.tool_calls")
        return self

    def constraint_param(self) -> str | None:
        """The structured-output parameter the request sets, if any."""
        names = constraint_names(self)
        return names[0] if names else None

    @model_validator(mode="after")
    def _logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None:
            _param_rule(0 <= self.top_logprobs <= MAX_TOP_LOGPROBS,
                        f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}", self.top_logprobs, "top_logprobs")
            _param_rule(bool(self.logprobs), "top_logprobs needs logprobs: true", self.top_logprobs, "top_logprobs")
        return self

    def logprob_count(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    @field_validator("messages", mode="before")
    @classmethod
    def _messages(cls, v: Any) -> Any:
        if isinstance(v, list):
            rule(len(v) > 0, "messages must hold at least one message", v)
            for i, m in enumerate(v):
                role = m.get("role") if isinstance(m, dict) else None
                if role == "function":
                    raise OpenAIError(400, f"messages[{i}].role 'function' is not supported: the deprecated "
                                      "function calling is not; use tools and 'tool' messages", f"messages.{i}.role")
        return v


class CompletionRequest(SamplingRequest):
    prompt: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]
    echo: StrictBool = False
    best_of: StrictInt | None = None
    logprobs: StrictInt | None = None  # the legacy form: how many alternatives per token (OpenAI allows 5)

    @model_validator(mode="after")
    def _logprobs(self) -> CompletionRequest:
        if self.logprobs is not None:
            _param_rule(0 <= self.logprobs <= MAX_TOP_LOGPROBS, f"logprobs must be between 0 and {MAX_TOP_LOGPROBS}",
                        self.logprobs, "logprobs")
            _param_rule(not self.echo, "logprobs with echo (log probabilities of the prompt) is not supported",
                        self.logprobs, "logprobs")
        return self

    def logprob_count(self) -> int | None:
        return self.logprobs

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: Any) -> Any:
        return _non_empty_inputs(v, "prompt")

    @model_validator(mode="after")
    def _best_of(self) -> CompletionRequest:
        if self.best_of is not None and self.best_of != self.choices_per_prompt:
            raise invalid(f"best_of must equal n ({self.choices_per_prompt}): candidates are not ranked; "
                          f"given {self.best_of}", "best_of")
        return self

    def prompts(self) -> list[str] | list[list[int]]:
        """Text prompts, or token-id prompts (one list per prompt)."""
        return _as_inputs(self.prompt)


class EmbeddingRequest(Strict):
    model: StrictStr
    input: StrictStr | list[StrictStr] | list[StrictInt] | list[list[StrictInt]]
    encoding_format: Literal["float", "base64"] = "float"

    @field_validator("input")
    @classmethod
    def _input(cls, v: Any) -> Any:
        return _non_empty_inputs(v, "input")

    def inputs(self) -> list[str] | list[list[int]]:
        """Text inputs, or token-id inputs (one list per input)."""
        return _as_inputs(self.input)


Inputs = str | list[str] | list[int] | list[list[int]]


def _non_empty_inputs(v: Any, name: str) -> Any:
    if isinstance(v, list):
        rule(len(v) > 0 and all(x != [] for x in v), f"{name} must not be empty", v)
    return v


def _as_inputs(v: Inputs) -> list[str] | list[list[int]]:
    """A prompt or embedding input as a list of inputs: one string, or one list of token ids, is one input."""
    if isinstance(v, str):
        return [v]
    if isinstance(v[0], int):
        return [v]  # type: ignore[list-item]
    return v  # type: ignore[return-value]
