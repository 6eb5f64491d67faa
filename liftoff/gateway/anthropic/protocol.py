"""Request models of the Anthropic Messages API, and their translation into the OpenAI port's chat request.

Each field is validated with a message naming it by its place in the body; what Liftoff cannot honour is refused by
name (400) rather than ignored: image, document and thinking blocks, server tools, `thinking`, `mcp_servers`,
`container`, `output_config`, a `service_tier` other than `auto`, and any field this API does not define.

A request becomes a `ChatCompletionRequest` (`chat_request`), so that it runs through the same generation path as
`/v1/chat/completions`: the system prompt is a system message, an assistant turn's `tool_use` blocks are its
`tool_calls`, a user turn's `tool_result` blocks are `tool` messages (before the turn's text), `tools` are function
tools and `tool_choice` maps onto OpenAI's (`any` is `required`, `tool` a named function). Consecutive turns of one
role are one turn, as Anthropic combines them; the text blocks of a turn are joined with a blank line.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    Discriminator,
    StrictBool,
    StrictInt,
    StrictStr,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from liftoff.gateway.anthropic.errors import AnthropicError, invalid
from liftoff.gateway.chat.errors import OpenAIError
from liftoff.gateway.chat.protocol import MAX_STOP, ChatCompletionRequest
from liftoff.gateway.rules import Bound, Strict, bounds_validator, group_validator, part_types, rule
from liftoff.gateway.takeoff.protocol import MAX_NEW_TOKENS_LIMIT

BOUNDS: dict[str, Bound] = {
    "max_tokens": (1, True, MAX_NEW_TOKENS_LIMIT, ""),
    "temperature": (0, True, 1, " (0 = greedy)"),
    "top_p": (0, False, 1, ""),
    "top_k": (0, True, None, " (0 = no cut)"),
}
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
BLOCKS = {"user": ("text", "tool_result"), "assistant": ("text", "tool_use")}
TURN_JOIN = "\n\n"
ERROR_PREFIX = "Error: "  # a tool_result with is_error, as the model reads it

# Fields of Anthropic's API that Liftoff cannot honour: refused (400 naming them) unless absent, null or the value
# that means "off", which is dropped.
_OFF: dict[str, tuple[tuple[Any, ...], str]] = {
    "thinking": ((None, {"type": "disabled"}), "extended thinking is not supported"),
    "mcp_servers": ((None, []), "MCP servers are not supported"),
    "container": ((None,), "containers (server-side code execution) are not supported"),
    "output_config": ((None, {}), "output_config (effort, output format) is not supported"),
    "service_tier": ((None, "auto"), "this server has one service tier: auto"),
    "context_management": ((None,), "context management is not supported"),
    "inference_geo": ((None,), "inference_geo is not supported"),
    "speed": ((None, "standard"), "this server has one speed: standard"),
    "diagnostics": ((None,), "diagnostics are not supported"),
}

M = TypeVar("M", bound=BaseModel)


def parse_anthropic(model: type[M], data: dict[str, Any]) -> M:
    """Validate `data` as `model`; unknown and unsupported fields are refused by name."""
    unknown = sorted(k for k in data if k not in model.model_fields and k not in _OFF)
    if unknown:
        raise invalid(f"unknown field{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)} (not part of the "
                      f"Messages API as this server speaks it)")
    for name, (off, why) in _OFF.items():
        if name in data and data[name] not in off:
            raise invalid(f"{name}: {why}; given {json.dumps(data[name], default=str)[:300]}")
    return model.model_validate({k: v for k, v in data.items() if k not in _OFF})


def _tag(kind: str) -> Any:
    """The tag of a union member: its `type` (the tag appears in an error's location, where `-` marks it)."""
    return Tag(f"{kind}-")


def _type_of(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return f"{kind}-" if isinstance(kind, str) else None


class CacheControl(Strict):
    """Accepted: the readers reuse any prompt prefix they hold, so a cache breakpoint needs nothing further."""

    type: Literal["ephemeral"]
    ttl: Literal["5m", "1h"] | None = None


class TextBlock(Strict):
    type: Literal["text"]
    text: StrictStr
    cache_control: CacheControl | None = None
    citations: None = None  # an answer's text block carries it back as null; citations are not supported


class ToolUseBlock(Strict):
    type: Literal["tool_use"]
    id: StrictStr
    name: StrictStr
    input: dict[str, Any]
    cache_control: CacheControl | None = None


class ToolResultBlock(Strict):
    type: Literal["tool_result"]
    tool_use_id: StrictStr
    content: StrictStr | list[TextBlock] = ""
    is_error: StrictBool = False
    cache_control: CacheControl | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, v: Any) -> Any:
        for j, kind in enumerate(part_types(v)):
            if kind != "text":
                raise ValueError(f"block {j} is of type {kind!r}; a tool_result holds text blocks only (no images or "
                                 "documents)")
        return v

    def text(self) -> str:
        text = self.content if isinstance(self.content, str) else TURN_JOIN.join(b.text for b in self.content)
        return ERROR_PREFIX + text if self.is_error else text


Block = Annotated[
    Annotated[TextBlock, _tag("text")] | Annotated[ToolUseBlock, _tag("tool_use")]
    | Annotated[ToolResultBlock, _tag("tool_result")],
    Discriminator(_type_of, custom_error_type="block_type",
                  custom_error_message="a block's type must be 'text', 'tool_use' or 'tool_result'"),
]


class MessageParam(Strict):
    role: Literal["user", "assistant"]
    content: StrictStr | list[Block]

    @field_validator("role", mode="before")
    @classmethod
    def _role(cls, v: Any) -> Any:
        if v == "system":
            raise ValueError("'system' is not a message role here: give the system prompt as the top-level system "
                             "field")
        return v

    @field_validator("content", mode="before")
    @classmethod
    def _blocks(cls, v: Any, info: ValidationInfo) -> Any:
        """Block types checked first, so that a refusal says what the role's message may hold."""
        role = info.data.get("role")
        if role in BLOCKS and isinstance(v, list):
            rule(len(v) > 0, "content must hold at least one block", v)
            for j, kind in enumerate(part_types(v)):
                if kind not in BLOCKS[role]:
                    raise ValueError(f"block {j} is of type {kind!r}; the {role}'s messages hold "
                                     f"{' and '.join(BLOCKS[role])} blocks (no images, documents or thinking)")
        return v

    def blocks(self) -> list[TextBlock | ToolUseBlock | ToolResultBlock]:
        return [TextBlock(type="text", text=self.content)] if isinstance(self.content, str) else list(self.content)


class ToolDef(Strict):
    """A client tool: the model may call it with an `input` that follows `input_schema`."""

    name: StrictStr
    description: StrictStr | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None
    cache_control: CacheControl | None = None
    strict: StrictBool | None = None  # true: only with a tool_choice (any, tool) that constrains calls to the schema

    @model_validator(mode="before")
    @classmethod
    def _custom(cls, data: Any) -> Any:
        kind = data.get("type") if isinstance(data, dict) else None
        if kind not in (None, "custom"):
            raise ValueError(f"server tools (type {kind!r}) are not supported; give client tools: name, description "
                             "and input_schema")
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        rule(bool(_TOOL_NAME.match(v)), "a tool name is 1 to 64 letters, digits, '_' or '-'", v)
        return v

    @field_validator("input_schema")
    @classmethod
    def _object(cls, v: dict[str, Any]) -> dict[str, Any]:
        rule(v.get("type") == "object", "input_schema must be a JSON schema of type 'object'", v.get("type"))
        return v


class ToolChoiceAuto(Strict):
    type: Literal["auto"]
    disable_parallel_tool_use: StrictBool = False


class ToolChoiceAny(Strict):
    type: Literal["any"]
    disable_parallel_tool_use: StrictBool = False


class ToolChoiceTool(Strict):
    type: Literal["tool"]
    name: StrictStr
    disable_parallel_tool_use: StrictBool = False


class ToolChoiceNone(Strict):
    type: Literal["none"]


ToolChoice = Annotated[
    Annotated[ToolChoiceAuto, _tag("auto")] | Annotated[ToolChoiceAny, _tag("any")]
    | Annotated[ToolChoiceTool, _tag("tool")] | Annotated[ToolChoiceNone, _tag("none")],
    Discriminator(_type_of, custom_error_type="tool_choice_type",
                  custom_error_message="type must be 'auto', 'any', 'tool' or 'none'"),
]


class Metadata(Strict):
    user_id: StrictStr | None = None  # accepted: it does not change what is generated


class ConversationRequest(Strict):
    """What a message and a token count share: the model (a consumer group), the conversation and the tools."""

    model: StrictStr
    messages: list[MessageParam]
    system: StrictStr | list[TextBlock] | None = None
    tools: list[ToolDef] | None = None
    tool_choice: ToolChoice | None = None
    cache_control: CacheControl | None = None

    _group = group_validator()

    @field_validator("messages")
    @classmethod
    def _some(cls, v: list[MessageParam]) -> list[MessageParam]:
        rule(len(v) > 0, "messages must hold at least one message", v)
        return v

    @model_validator(mode="after")
    def _tools(self) -> ConversationRequest:
        names = [t.name for t in self.tools or []]
        choice = self.tool_choice
        if len(set(names)) != len(names):
            raise invalid(f"tools: tool names must be unique; given {names}")
        if isinstance(choice, ToolChoiceAny | ToolChoiceTool) and not names:
            raise invalid(f"tool_choice: {choice.type!r} needs tools")
        if isinstance(choice, ToolChoiceTool) and choice.name not in names:
            raise invalid(f"tool_choice.name: {choice.name!r} is not among the tools {names}")
        strict = [t.name for t in self.tools or [] if t.strict]
        if strict and not isinstance(choice, ToolChoiceAny | ToolChoiceTool):
            raise invalid(f"tools: strict is honoured only with tool_choice 'any' or 'tool' (their calls are "
                          f"constrained to the schema); given strict tools {strict} with tool_choice "
                          f"{choice.type if choice else 'auto'!r}")
        return self

    def chat_request(self, **sampling: Any) -> ChatCompletionRequest:
        """The OpenAI port's chat request for this conversation, with `sampling` (its field names)."""
        body: dict[str, Any] = {"model": self.model, "messages": self._chat_messages(), **sampling}
        choice = self.tool_choice
        if self.tools and not isinstance(choice, ToolChoiceNone):
            body["tools"] = [{"type": "function", "function": {
                "name": t.name, "parameters": t.input_schema, **({"description": t.description}
                                                                  if t.description is not None else {})}}
                for t in self.tools]
            if isinstance(choice, ToolChoiceAny):
                body["tool_choice"] = "required"
            elif isinstance(choice, ToolChoiceTool):
                body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
            body["parallel_tool_calls"] = not (choice is not None and choice.disable_parallel_tool_use)
        try:
            return ChatCompletionRequest.model_validate(body)
        except (ValidationError, OpenAIError) as exc:  # what this model checked first should leave nothing here
            raise AnthropicError(400, f"the request cannot be served as a chat: {exc}"[:600]) from None

    def _chat_messages(self) -> list[dict[str, Any]]:
        """The conversation as chat messages, its tool results checked against the calls they answer."""
        out: list[dict[str, Any]] = []
        if self.system:
            system = self.system if isinstance(self.system, str) else TURN_JOIN.join(b.text for b in self.system)
            out.append({"role": "system", "content": system})
        turns: list[tuple[str, list[tuple[str, Any]]]] = []  # role, [(where, block)]
        for i, message in enumerate(self.messages):
            blocks = [(f"messages.{i}.content.{j}", b) for j, b in enumerate(message.blocks())]
            if turns and turns[-1][0] == message.role:
                turns[-1][1].extend(blocks)
            else:
                turns.append((message.role, blocks))
        if turns[-1][0] != "user":
            raise invalid("messages: the last message must be a user message (continuing an assistant message, "
                          "prefill, is not supported)")
        calls: dict[str, str] = {}  # id → name of the tool_use blocks the last assistant turn left unanswered
        for role, blocks in turns:
            if role == "assistant":
                out.append(_assistant(blocks))
                calls = {b.id: b.name for _, b in blocks if isinstance(b, ToolUseBlock)}
                continue
            texts: list[str] = []
            for where, block in blocks:
                if isinstance(block, ToolResultBlock):
                    if texts:
                        raise invalid(f"{where}: tool_result blocks come first in a user turn, before its text")
                    if block.tool_use_id not in calls:
                        raise invalid(f"{where}.tool_use_id: {block.tool_use_id!r} answers no unanswered tool_use "
                                      f"of the assistant turn before it (its tool_use ids: {sorted(calls)})")
                    out.append({"role": "tool", "tool_call_id": block.tool_use_id, "name": calls.pop(block.tool_use_id),
                                "content": block.text()})
                else:
                    texts.append(block.text)
            if calls:
                raise invalid(f"{blocks[0][0].rsplit('.content', 1)[0]}: the tool_use ids {sorted(calls)} of the "
                              f"assistant turn before have no tool_result; answer each in this user turn")
            if texts:
                out.append({"role": "user", "content": TURN_JOIN.join(texts)})
        return out


def _assistant(blocks: list[tuple[str, Any]]) -> dict[str, Any]:
    texts = [b.text for _, b in blocks if isinstance(b, TextBlock)]
    uses = [b for _, b in blocks if isinstance(b, ToolUseBlock)]
    message: dict[str, Any] = {"role": "assistant", "content": TURN_JOIN.join(texts)}
    if uses:
        message["tool_calls"] = [{"id": b.id, "type": "function",
                                  "function": {"name": b.name, "arguments": json.dumps(b.input, ensure_ascii=False)}}
                                 for b in uses]
    return message


class CountTokensRequest(ConversationRequest):
    """`/v1/messages/count_tokens`: the conversation and tools of a message, nothing to sample."""


class MessagesRequest(ConversationRequest):
    max_tokens: StrictInt
    stop_sequences: list[StrictStr] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: StrictInt | None = None
    metadata: Metadata | None = None
    stream: StrictBool | None = None

    _within_bounds = bounds_validator(BOUNDS)

    @field_validator("stop_sequences")
    @classmethod
    def _stops(cls, v: list[str] | None) -> list[str] | None:
        rule(len(v or []) <= MAX_STOP, f"stop_sequences may hold at most {MAX_STOP} strings", v)
        rule(all(v or []), "stop sequences must not be empty", v)
        return v

    def as_chat(self) -> ChatCompletionRequest:
        sampling = {"max_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p,
                    "top_k": self.top_k, "stop": self.stop_sequences or None, "stream": self.stream}
        return self.chat_request(**{k: v for k, v in sampling.items() if v is not None})
