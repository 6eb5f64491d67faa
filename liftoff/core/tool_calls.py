"""Tool calls in generated text: the formats model families write them in, which one a chat template uses, the
grammar that makes a model write a valid call, and the parsers (whole texts and streams) that read calls back.

Formats (`PARSERS`):
- `hermes` (Hermes, Qwen 2/2.5/3 and most templates that write `<tool_call>`): one block per call,
  `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`, blocks one after another.
- `llama3_json` (Llama 3.1-3.3): the answer is a JSON object `{"name": ..., "parameters": {...}}` (optionally after
  `<|python_tag|>`); several are separated by `;`.
- `mistral`: `[TOOL_CALLS]` followed by a JSON array of `{"name": ..., "arguments": {...}}`.

A reader picks the format (its `tool_call_parser` setting, or `detect_parser` on its chat template) and publishes
it in the registry; the gateway parses with it. Both import this module, so it stays free of torch and of web code.
Arguments come back as JSON text written by `json.dumps` of the parsed value, the same for whole answers and streams.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

PARSERS = ("hermes", "llama3_json", "mistral")
_MARKERS = {"hermes": "<tool_call>", "mistral": "[TOOL_CALLS]", "llama3_json": "<|python_tag|>"}
_ARGS_KEY = {"hermes": "arguments", "llama3_json": "parameters", "mistral": "arguments"}
# A call's JSON: compact but for one optional space after separators (what models write), so that a model under a
# grammar spends no tokens on blanks.
_JSON_OPTIONS = {"whitespace_pattern": "[ ]?"}
ARGUMENT_PIECE = 16  # characters of a call's arguments per streamed delta


def detect_parser(template: str | None) -> str | None:
    """The format a chat template's text shows it uses, or None when it shows none."""
    if not template:
        return None
    if "<tool_call>" in template:
        return "hermes"
    if "[TOOL_CALLS]" in template:
        return "mistral"
    if "<|python_tag|>" in template or ('"parameters"' in template and "tools" in template):
        return "llama3_json"
    return None


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: str  # JSON text
    id: str = field(default_factory=lambda: "call_" + secrets.token_hex(12), compare=False)

    def openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


# --- grammars -----------------------------------------------------------------------------------------------------
def _call_schema(parser: str, tools: list[dict[str, Any]]) -> dict[str, Any]:
    """One call as JSON: the name one of the tools', its arguments that tool's parameters."""
    key = _ARGS_KEY[parser]
    options = [{"type": "object", "properties": {"name": {"const": t["name"]},
                                                 key: t.get("parameters") or {"type": "object"}},
                "required": ["name", key], "additionalProperties": False} for t in tools]
    return {"anyOf": options} if len(options) > 1 else options[0]


def tool_grammar(parser: str, tools: list[dict[str, Any]], parallel: bool) -> str:
    """A Lark grammar (llguidance's dialect) for an answer that is only tool calls of `tools` (each {name,
    parameters}): one call, or one or more when `parallel`."""
    schema = _call_schema(parser, tools)
    if parser == "mistral":
        array = {"type": "array", "items": schema, "minItems": 1, **({} if parallel else {"maxItems": 1})}
        return f'start: "[TOOL_CALLS]" calls\ncalls: %json {json.dumps({**array, "x-guidance": _JSON_OPTIONS})}\n'
    body = f"call: %json {json.dumps({**schema, 'x-guidance': _JSON_OPTIONS})}\n"
    if parser == "hermes":
        block = 'block: "<tool_call>\\n" call "\\n</tool_call>"\n'
        return ('start: block ("\\n" block)*\n' if parallel else "start: block\n") + block + body
    return ('start: call ("; " call)*\n' if parallel else "start: call\n") + body


# --- parsing ------------------------------------------------------------------------------------------------------
def _call(parser: str, value: Any, names: set[str] | None) -> ToolCall | None:
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    args = value.get(_ARGS_KEY[parser], value.get("arguments", {}))
    if names is not None and value["name"] not in names:
        return None
    if isinstance(args, str):  # some models write the arguments as JSON text
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return ToolCall(value["name"], json.dumps(args, ensure_ascii=False))


_HERMES_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.DOTALL)


def _json_values(text: str, separators: str) -> list[Any]:
    """The JSON values at the start of `text`, one after another (separated by whitespace and `separators`),
    up to the first that does not decode."""
    decoder, values, at = json.JSONDecoder(), [], 0
    while True:
        while at < len(text) and (text[at].isspace() or text[at] in separators):
            at += 1
        if at >= len(text):
            return values
        try:
            value, at = decoder.raw_decode(text, at)
        except ValueError:
            return values
        values.append(value)


def parse(parser: str, text: str, names: set[str] | None = None) -> tuple[str | None, list[ToolCall]]:
    """(content, calls) of a whole answer. Calls that do not parse, or name no tool in `names`, are dropped; an
    answer without a call is all content. The content of an answer with calls is what came before the first."""
    start = call_start(parser, text)
    if start is None:
        return text, []
    calls: list[ToolCall | None]
    if parser == "hermes":
        calls = []
        for block in _HERMES_BLOCK.findall(text, start):
            values = _json_values(block, "")
            calls.append(_call(parser, values[0], names) if len(values) == 1 else None)
    elif parser == "mistral":
        rest = text[start + len(_MARKERS["mistral"]):].lstrip()
        # the array's items one by one, so that an array cut short (max_tokens) keeps its whole calls
        items = _json_values(rest[1:], ",]") if rest.startswith("[") else _json_values(rest, "")[:1]
        calls = [_call(parser, v, names) for v in items]
    else:
        rest = text[start:].removeprefix(_MARKERS["llama3_json"])
        calls = [_call(parser, v, names) for v in _json_values(rest, ";")]
    found = [c for c in calls if c is not None]
    if not found:
        return text, []
    content = text[:start]
    return (content if content.strip() else None), found


def call_start(parser: str, text: str) -> int | None:
    """Where the first call begins in `text`, or None. A Llama 3 JSON call must open the answer."""
    if parser == "llama3_json":
        stripped = len(text) - len(text.lstrip())
        rest = text[stripped:]
        return stripped if rest.startswith("{") or rest.startswith(_MARKERS["llama3_json"]) else None
    at = text.find(_MARKERS[parser])
    return at if at >= 0 else None


def _held(parser: str, text: str) -> int:
    """How many characters at the end of `text` (no call in it yet) could still begin a call."""
    if parser == "llama3_json":
        marker = _MARKERS[parser]
        rest = text.lstrip()
        return len(text) if not rest or marker.startswith(rest) else 0
    marker = _MARKERS[parser]
    return max((k for k in range(1, len(marker)) if text.endswith(marker[:k])), default=0)


class ToolStream:
    """One streamed choice's text, split into content pieces and tool calls as it comes: content is forwarded until
    something that could begin a call; calls go out once the whole answer is known (`finish`), parsed by `parse`
    from the whole text, so that what a stream sends equals the whole answer."""

    def __init__(self, parser: str, names: set[str] | None) -> None:
        self.parser, self.names = parser, names
        self.text = ""
        self.sent = 0
        self.in_call = False

    def feed(self, piece: str) -> str:
        """The content that may be forwarded now."""
        self.text += piece
        if self.in_call:
            return ""
        start = call_start(self.parser, self.text)
        if start is not None:
            self.in_call = True
            safe = start
        else:
            safe = len(self.text) - _held(self.parser, self.text)
        out = self.text[self.sent:max(self.sent, safe)]
        self.sent = max(self.sent, safe)
        return out

    def finish(self) -> tuple[str, list[ToolCall]]:
        """(content still held back, the calls) once the text is whole."""
        _, calls = parse(self.parser, self.text, self.names)
        if not calls:
            out, self.sent = self.text[self.sent:], len(self.text)
            return out, []
        return "", calls


def argument_pieces(arguments: str) -> list[str]:
    """A call's arguments as the fragments of a stream."""
    return [arguments[i:i + ARGUMENT_PIECE] for i in range(0, len(arguments), ARGUMENT_PIECE)] or [""]
