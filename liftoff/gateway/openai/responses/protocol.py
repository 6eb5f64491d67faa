"""Request models of the Responses API (`POST /v1/responses`), and their translation into the chat completions' terms.

A request is a conversation of input items (messages, the model's function calls, their outputs) that becomes the
chat messages a reader's template renders (`chat_messages`), sampling settings that become a `ChatSampling` (what
`liftoff.gateway.chat.generation.Completion` reads), and function tools for the tool-calling engine
(`liftoff.gateway.chat.tools`). `parse_responses` is the one entry: OpenAI's parameters that Liftoff cannot honour are
refused by name (built-in tools, reasoning, background, ...), unknown ones as OpenAI refuses them.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import (
    Field,
    PrivateAttr,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from liftoff.gateway.chat.errors import OpenAIError, from_validation, invalid
from liftoff.gateway.chat.protocol import BOUNDS, SamplingRequest
from liftoff.gateway.chat.tools import FunctionDef, FunctionName, NamedToolChoice, Tool, check_tools
from liftoff.gateway.rules import (
    Strict,
    StrictByName,
    bounds_validator,
    group_validator,
    part_types,
    parts_validator,
    rule,
)

MAX_METADATA = 16  # OpenAI's limits on `metadata`: pairs, key and value lengths
MAX_METADATA_KEY, MAX_METADATA_VALUE = 64, 512

# OpenAI's parameters that Liftoff cannot honour: refused (400 naming them) unless absent or the value meaning "off".
_OFF: dict[str, tuple[tuple[Any, ...], str]] = {
    "background": ((None, False), "a response runs while its request is open; background mode is not offered"),
    "background_options": ((None,), "background mode is not offered"),
    "reasoning": ((None,), "reasoning settings are not offered"),
    "include": ((None, []), "no extra output data (log probabilities, reasoning, tool sources) is offered"),
    "truncation": ((None, "disabled"), "the input is never truncated: a conversation too long for the model is "
                                       "refused"),
    "conversation": ((None,), "conversations are not offered; chain responses with previous_response_id"),
    "prompt": ((None,), "stored prompt templates are not offered"),
    "top_logprobs": ((None, 0), "log probabilities are not offered here; /v1/chat/completions has them"),
    "max_tool_calls": ((None,), "it bounds built-in tool calls, and only function tools are offered"),
    "service_tier": ((None, "auto", "default"), "there is one service tier"),
    "stream_options": ((None, {}, {"include_obfuscation": False}), "streams are not obfuscated"),
    "prompt_cache_key": ((None,), "prompt caching is automatic (the readers' prefix cache), with no key"),
    "prompt_cache_retention": ((None,), "prompt caching is automatic (the readers' prefix cache)"),
    "prompt_cache_options": ((None,), "prompt caching is automatic (the readers' prefix cache)"),
    "safety_identifier": ((None,), "this server makes no safety checks to attribute"),
    "moderation": ((None,), "moderation is not offered"),
    "context_management": ((None,), "context compaction is not offered"),
    "image": ((None,), "images are not offered"),
    "access_programs": ((None,), "access programs are not offered"),
}
_BUILT_IN = "only function tools are offered (no built-in tools: web search, file search, code interpreter, ...)"


def parse_responses(data: dict[str, Any]) -> ResponsesRequest:
    """Validate a `POST /v1/responses` body; unknown and unsupported parameters are refused by name."""
    known = set(ResponsesRequest.model_fields) | set(_OFF)
    unknown = sorted(k for k in data if k not in known)
    if unknown:
        raise invalid(f"Unrecognized request argument supplied: {', '.join(unknown)}", unknown[0])
    for name, (off, why) in _OFF.items():
        if name in data and data[name] not in off:
            raise invalid(f"{name} is not supported: {why}; given {data[name]!r}"[:500], name)
    return ResponsesRequest.model_validate({k: v for k, v in data.items() if k in ResponsesRequest.model_fields})


def nested(exc: ValidationError, prefix: str) -> OpenAIError:
    """A validation error of one part of the body (an input item), its parameter named from the body's root."""
    err = from_validation(exc)
    if not err.param:
        return invalid(f"{prefix}: {err.message}", prefix)
    param = f"{prefix}.{err.param}"
    return invalid(err.message.replace(f"'{err.param}'", f"'{param}'", 1), param)


# --- input items --------------------------------------------------------------------------------------------------
class InputText(Strict):
    type: Literal["input_text"]
    text: StrictStr


class OutputText(Strict):
    """An assistant's text, as this server (or OpenAI) answered it; what it was annotated with does not matter here."""

    type: Literal["output_text"]
    text: StrictStr
    annotations: list[Any] | None = None
    logprobs: list[Any] | None = None


class Refusal(Strict):
    type: Literal["refusal"]
    refusal: StrictStr


ContentPart = InputText | OutputText | Refusal


class MessageItem(Strict):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: StrictStr | list[ContentPart]
    id: StrictStr | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None

    _parts = parts_validator("content", ("input_text", "output_text", "refusal"), "only text content parts are "
                             "supported (input_text, output_text, refusal; no images, files or audio)")

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.refusal if isinstance(p, Refusal) else p.text for p in self.content)


class FunctionCallItem(Strict):
    """A call the model made (an earlier answer's `function_call` output item)."""

    type: Literal["function_call"]
    call_id: StrictStr
    name: StrictStr
    arguments: StrictStr  # JSON text
    id: StrictStr | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None

    @field_validator("arguments")
    @classmethod
    def _json(cls, v: str) -> str:
        try:
            json.loads(v)
        except ValueError:
            raise ValueError(f"arguments must be JSON text; given {v[:200]!r}") from None
        return v


class FunctionCallOutputItem(Strict):
    """What the client's function returned for one call."""

    type: Literal["function_call_output"]
    call_id: StrictStr
    output: StrictStr | list[InputText]
    id: StrictStr | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None

    _parts = parts_validator("output", ("input_text",), "only input_text parts are supported in a function's output")

    def text(self) -> str:
        return self.output if isinstance(self.output, str) else "".join(p.text for p in self.output)


InputItem = MessageItem | FunctionCallItem | FunctionCallOutputItem
_ITEMS: dict[str, type[MessageItem | FunctionCallItem | FunctionCallOutputItem]] = {
    "message": MessageItem, "function_call": FunctionCallItem, "function_call_output": FunctionCallOutputItem}


def input_items(raw: list[Any], where: str = "input") -> list[InputItem]:
    """Each raw item validated as its type's model; an item of another type (reasoning, item_reference, a built-in
    tool's call) is refused by name."""
    items: list[InputItem] = []
    for i, value in enumerate(raw):
        if not isinstance(value, dict):
            raise invalid(f"{where}[{i}] must be an object (an input item); given {value!r}"[:300], f"{where}.{i}")
        kind = value.get("type", "message")
        model = _ITEMS.get(kind) if isinstance(kind, str) else None
        if model is None:
            raise invalid(f"{where}[{i}]: input items of type {kind!r} are not supported; the supported types are "
                          f"{', '.join(_ITEMS)}"[:400], f"{where}.{i}.type")
        try:
            items.append(model.model_validate(value))
        except ValidationError as exc:
            raise nested(exc, f"{where}.{i}") from None
    return items


# --- tools, text format -------------------------------------------------------------------------------------------
class FunctionTool(FunctionDef):
    """A function tool in the Responses API's flat shape (`{type, name, parameters, ...}`, not nested in
    `function`)."""

    type: Literal["function"]

    def chat_tool(self) -> Tool:
        return Tool(type="function", function=FunctionDef.model_validate(self.model_dump(exclude={"type"})))


class FunctionToolChoice(Strict):
    type: Literal["function"]
    name: StrictStr


ToolChoice = Literal["none", "auto", "required"] | FunctionToolChoice


class TextFormat(StrictByName):
    """`text.format`: plain text, any JSON object, or JSON following a schema (the structured-output path)."""

    type: Literal["text", "json_object", "json_schema"]
    name: StrictStr | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    description: StrictStr | None = None
    strict: StrictBool | None = None

    @model_validator(mode="after")
    def _fields(self) -> TextFormat:
        if self.type == "json_schema":
            if self.name is None or self.schema_ is None:
                raise ValueError("a json_schema format needs a name and a schema")
            rule(_valid_name(self.name), "a format name is 1 to 64 letters, digits, '_' or '-'", self.name)
        elif any(v is not None for v in (self.name, self.schema_, self.description, self.strict)):
            raise ValueError(f"a {self.type} format takes no name, schema, description or strict")
        return self

    def response_format(self) -> dict[str, Any]:
        """As the chat completions' `response_format`."""
        if self.type != "json_schema":
            return {"type": self.type}
        schema = {"name": self.name, "schema": self.schema_, "description": self.description, "strict": self.strict}
        return {"type": "json_schema", "json_schema": {k: v for k, v in schema.items() if v is not None}}

    def echo(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


def _valid_name(name: str) -> bool:
    return 1 <= len(name) <= 64 and all(c.isascii() and (c.isalnum() or c in "_-") for c in name)


class TextConfig(Strict):
    format: TextFormat | None = None
    verbosity: Literal["medium"] | None = None  # the one verbosity: the model writes as it writes


class ChatSampling(SamplingRequest):
    """A Responses request's sampling settings in the chat completions' terms: what `Completion` reads."""

    add_generation_prompt: StrictBool = True


# --- the request --------------------------------------------------------------------------------------------------
class ResponsesRequest(Strict):
    _sampling: ChatSampling | None = PrivateAttr(default=None)

    model: StrictStr
    input: StrictStr | list[InputItem] | None = None
    instructions: StrictStr | None = None
    previous_response_id: StrictStr | None = None
    max_output_tokens: StrictInt | None = None
    temperature: float | None = None
    top_p: float | None = None
    text: TextConfig | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: StrictBool | None = None
    store: StrictBool | None = None
    stream: StrictBool | None = None
    metadata: dict[str, StrictStr] | None = None
    user: StrictStr | None = None

    _within_bounds = bounds_validator({"max_output_tokens": BOUNDS["max_tokens"],
                                       "temperature": BOUNDS["temperature"], "top_p": BOUNDS["top_p"]})

    _group = group_validator()

    @field_validator("input", mode="before")
    @classmethod
    def _items(cls, v: Any) -> Any:
        return input_items(v) if isinstance(v, list) else v

    @field_validator("tools", mode="before")
    @classmethod
    def _function_tools(cls, v: Any) -> Any:
        for i, kind in enumerate(part_types(v)):
            if kind != "function":
                raise invalid(f"tools[{i}]: tools of type {kind!r} are not supported: {_BUILT_IN}", f"tools.{i}.type")
        return v

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _choice(cls, v: Any) -> Any:
        if isinstance(v, dict) and v.get("type") != "function":
            raise invalid(f"tool_choice of type {v.get('type')!r} is not supported: {_BUILT_IN}; choose none, auto, "
                          "required or {\"type\": \"function\", \"name\": ...}", "tool_choice.type")
        return v

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is not None:
            rule(len(v) <= MAX_METADATA, f"metadata holds at most {MAX_METADATA} pairs", len(v))
            for key, value in v.items():
                rule(len(key) <= MAX_METADATA_KEY, f"metadata keys are at most {MAX_METADATA_KEY} characters", key)
                rule(len(value) <= MAX_METADATA_VALUE, f"metadata values are at most {MAX_METADATA_VALUE} "
                     "characters", value[:80] + "...")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ResponsesRequest:
        if self.input is None and self.previous_response_id is None:
            raise invalid("input is required (unless previous_response_id continues a stored conversation)", "input")
        try:
            check_tools(self.chat_tools(), self.chat_tool_choice())
        except OpenAIError as err:
            param = (err.param or "").replace("tool_choice.function.name", "tool_choice.name")
            raise invalid(err.message, param) from None
        self._sampling = self._chat_sampling()
        return self

    @property
    def format(self) -> TextFormat:
        return self.text.format if self.text is not None and self.text.format is not None else TextFormat(type="text")

    def chat_tools(self) -> list[Tool] | None:
        return [t.chat_tool() for t in self.tools] if self.tools else None

    def chat_tool_choice(self) -> Literal["none", "auto", "required"] | NamedToolChoice | None:
        if isinstance(self.tool_choice, FunctionToolChoice):
            return NamedToolChoice(type="function", function=FunctionName(name=self.tool_choice.name))
        return self.tool_choice

    def constraint_param(self) -> str | None:
        """The structured-output parameter the request sets, if any (a forced tool choice cannot be combined)."""
        return "text.format" if self.format.type != "text" else None

    @property
    def sampling(self) -> ChatSampling:
        """The sampling settings, validated with the request (the text format's schema compiled)."""
        assert self._sampling is not None
        return self._sampling

    def _chat_sampling(self) -> ChatSampling:
        fields = {"model": self.model, "max_tokens": self.max_output_tokens, "temperature": self.temperature,
                  "top_p": self.top_p, "stream": self.stream, "response_format": self.format.response_format()}
        try:
            return ChatSampling.model_validate({k: v for k, v in fields.items() if v is not None})
        except ValidationError as exc:
            problem = exc.errors(include_url=False)[0]["msg"].removeprefix("Value error, ")
            raise invalid(f"text.format: {problem.removeprefix('response_format: ')}"[:600], "text.format") from None


# --- the conversation as chat messages ----------------------------------------------------------------------------
def chat_messages(instructions: str | None, items: list[InputItem], first_new: int) -> list[dict[str, Any]]:
    """The conversation as the chat template's messages: `instructions` first (a system message), a message per
    message item, the model's function calls joined to the assistant message they follow, each function's output a
    `tool` message. `first_new`: where the request's own items begin (earlier ones came from the store), for naming
    an item in an error."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": instructions}] if instructions else []
    names: dict[str, str] = {}
    for i, item in enumerate(items):
        if isinstance(item, MessageItem):
            role = "system" if item.role == "developer" else item.role
            messages.append({"role": role, "content": item.text()})
        elif isinstance(item, FunctionCallItem):
            call = {"id": item.call_id, "type": "function",
                    "function": {"name": item.name, "arguments": json.loads(item.arguments)}}
            if messages and messages[-1]["role"] == "assistant":  # the answer this call was part of
                messages[-1].setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
            names[item.call_id] = item.name
        else:
            if item.call_id not in names:
                where = f"input.{i - first_new}.call_id"
                raise invalid(f"No tool call found for function call output with call_id {item.call_id!r}: a "
                              "function_call_output answers a function_call earlier in the conversation", where)
            messages.append({"role": "tool", "tool_call_id": item.call_id, "name": names[item.call_id],
                             "content": item.text()})
    return messages
