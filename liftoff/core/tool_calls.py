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
Arguments come back as the JSON text the model wrote, the same for whole answers and streams.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from liftoff.core.tool_call_scan import MARKERS as _MARKERS
from liftoff.core.tool_call_scan import Object as _Object
from liftoff.core.tool_call_scan import Scan as _Scan

PARSERS = ("hermes", "llama3_json", "mistral")
# The texts of each format's markers: a reader keeps them in a tool request's text when its vocabulary has them as
# special tokens (Mistral's `[TOOL_CALLS]`, Llama's `<|python_tag|>`), which decoding would otherwise drop.
MARKER_TOKENS = {"hermes": ("<tool_call>", "</tool_call>"), "mistral": ("[TOOL_CALLS]",),
                 "llama3_json": ("<|python_tag|>",)}
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
        # the newlines the format shows are optional, so that a vocabulary without one (WordPiece) can write calls
        block = 'block: "<tool_call>" "\\n"? call "\\n"? "</tool_call>"\n'
        return ('start: block ("\\n"? block)*\n' if parallel else "start: block\n") + block + body
    return ('start: call ("; " call)*\n' if parallel else "start: call\n") + body


# --- parsing ------------------------------------------------------------------------------------------------------
# One scanner reads calls for whole answers and for streams alike, character by character as the text grows, so that
# what a stream sends is what the whole answer holds. A call's arguments are the text the model wrote for them (when
# it wrote an object; JSON text inside a string is decoded and re-encoded), as OpenAI returns them.
def _arguments(parser: str, text: str, obj: _Object, value: dict[str, Any]) -> str | None:
    """The call's arguments as JSON text: as written when the model wrote an object, else None (not a call)."""
    key = _ARGS_KEY[parser] if _ARGS_KEY[parser] in value else "arguments"
    args = value.get(key, {})
    if isinstance(args, str):  # some models write the arguments as JSON text
        try:
            args = json.loads(args)
        except ValueError:
            return None
        return json.dumps(args, ensure_ascii=False) if isinstance(args, dict) else None
    if not isinstance(args, dict):
        return None
    span = obj.spans.get(key)
    if span is None or span[1] is None:
        return "{}"
    return text[span[0]:span[1]]


def _complete_call(parser: str, text: str, obj: _Object, names: set[str] | None) -> tuple[str, str] | None:
    """(name, arguments) of a whole object that is a call of one of `names`, else None."""
    if obj.end is None:
        return None
    try:
        value = json.loads(text[obj.start:obj.end])
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    if names is not None and value["name"] not in names:
        return None
    arguments = _arguments(parser, text, obj, value)
    return None if arguments is None else (value["name"], arguments)


def parse(parser: str, text: str, names: set[str] | None = None) -> tuple[str | None, list[ToolCall]]:
    """(content, calls) of a whole answer. Calls that do not parse, or name no tool in `names`, are dropped; an
    answer without a call is all content. The content of an answer with calls is what came before the first."""
    start = call_start(parser, text)
    if start is None:
        return text, []
    scan = _Scan(parser)
    scan.feed(text[start:])
    found = [ToolCall(*c) for c in (_complete_call(parser, text[start:], o, names) for o in scan.objects) if c]
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


@dataclass(frozen=True)
class CallPiece:
    """A piece of a streamed call: its first (id and name, no arguments yet), then fragments of its arguments."""

    index: int
    arguments: str
    id: str | None = None
    name: str | None = None

    def openai(self) -> dict[str, Any]:
        if self.id is not None:
            return {"index": self.index, "id": self.id, "type": "function",
                    "function": {"name": self.name, "arguments": self.arguments}}
        return {"index": self.index, "function": {"arguments": self.arguments}}


class ToolStream:
    """One streamed choice's text, split into content pieces and tool calls as it comes: content is forwarded until
    something that could begin a call; a call goes out as soon as its name is read (`pieces`: its id and name, then
    its arguments as the model writes them), and `finish` gives the calls of the whole text with `rest`, the pieces
    still to send, so that what a stream sends equals the whole answer. (A call that turns out broken after its
    first pieces went out — its JSON never closes, say — cannot be taken back; the whole answer drops it.)"""

    def __init__(self, parser: str, names: set[str] | None, max_calls: int | None = None) -> None:
        self.parser, self.names, self.max_calls = parser, names, max_calls
        self.text = ""
        self.sent = 0
        self.in_call = False
        self._start = 0
        self._scan = _Scan(parser)
        self._started: list[tuple[str, str]] = []  # (id, name) of the calls whose first piece went out
        self._args_sent: list[int] = []  # characters of each started call's arguments sent
        self._positions: list[int | None] = []  # per scanned object: its stream index, None when not a call
        self._calls: list[tuple[int, ToolCall]] = []  # after finish: (stream index, call)
        self._pending: list[CallPiece] = []

    def feed(self, piece: str) -> str:
        """The content that may be forwarded now."""
        self.text += piece
        if self.in_call:
            self._scan.feed(self.text[self._start:])
            return ""
        start = call_start(self.parser, self.text)
        if start is not None:
            self.in_call, self._start = True, start
            self._scan.feed(self.text[start:])
            safe = start
        else:
            safe = len(self.text) - _held(self.parser, self.text)
        out = self.text[self.sent:max(self.sent, safe)]
        self.sent = max(self.sent, safe)
        return out

    def pieces(self) -> list[CallPiece]:
        """The call pieces the text read so far allows, not sent before."""
        out: list[CallPiece] = []
        text = self.text[self._start:]
        for position, obj in enumerate(self._scan.objects):
            if position == len(self._positions) and not self._begin(obj, text, out):
                break  # its name is not read yet: nothing after it goes out before it
            index = self._positions[position]
            if index is None:
                continue
            span = obj.spans.get(_ARGS_KEY[self.parser]) or obj.spans.get("arguments")
            if span is None or text[span[0]] != "{":
                continue  # arguments not begun, or written as a string: they go out whole at the end
            end = span[1] if span[1] is not None else len(text)
            fragment = text[span[0] + self._args_sent[index]:end]
            if fragment:
                self._args_sent[index] += len(fragment)
                out.append(CallPiece(index, fragment))
        return out

    def _begin(self, obj: _Object, text: str, out: list[CallPiece]) -> bool:
        """Give `obj` its stream index (None: not a call of ours) once its name is read, and queue its first piece;
        False while its name is not read yet."""
        span = obj.spans.get("name")
        if span is None or span[1] is None:
            if obj.end is None:
                return False
            self._positions.append(None)  # a whole object without a name: not a call
            return True
        try:
            name = json.loads(text[span[0]:span[1]])
        except ValueError:
            name = None
        if not isinstance(name, str) or (self.names is not None and name not in self.names) or (
                self.max_calls is not None and len(self._started) >= self.max_calls):
            self._positions.append(None)
            return True
        index = len(self._started)
        call_id = "call_" + secrets.token_hex(12)
        self._started.append((call_id, name))
        self._args_sent.append(0)
        self._positions.append(index)
        out.append(CallPiece(index, "", call_id, name))
        return True

    def finish(self) -> tuple[str, list[ToolCall]]:
        """(content still held back, the calls) once the text is whole: the calls `parse` finds in it, each with
        the id its first piece went out with."""
        self._pending = self.pieces() if self.in_call else []  # every object whose name is read has its index now
        text = self.text[self._start:]
        self._calls = []
        fresh = len(self._started)
        for position, obj in enumerate(self._scan.objects if self.in_call else []):
            found = _complete_call(self.parser, text, obj, self.names)
            if found is None:
                continue
            if self.max_calls is not None and len(self._calls) >= self.max_calls:
                break
            index = self._positions[position] if position < len(self._positions) else None
            if index is None:  # a call that could not be started while streaming (only past max_calls)
                index, fresh = fresh, fresh + 1
                self._calls.append((index, ToolCall(*found)))
            else:
                self._calls.append((index, ToolCall(*found, self._started[index][0])))
        if not self._calls:
            out, self.sent = self.text[self.sent:], len(self.text)
            return out, []
        return "", [call for _, call in self._calls]

    @property
    def dropped(self) -> bool:
        """After `finish`: whether a call whose first pieces went out is not among the calls (its JSON never
        closed, most often because the token limit cut it)."""
        return len(self._started) > len({index for index, _ in self._calls if index < len(self._started)})

    def rest(self) -> list[CallPiece]:
        """After `finish`: the pieces that complete what was streamed into its calls, under the stream's indexes."""
        out, self._pending = self._pending, []
        for index, call in self._calls:
            if index >= len(self._started):
                out.append(CallPiece(index, "", call.id, call.name))
                out.extend(CallPiece(index, p) for p in argument_pieces(call.arguments) if p)
                continue
            sent = self._args_sent[index]
            if sent < len(call.arguments):
                out.extend(CallPiece(index, p) for p in argument_pieces(call.arguments[sent:]))
        return out


def argument_pieces(arguments: str) -> list[str]:
    """A call's arguments as the fragments of a stream."""
    return [arguments[i:i + ARGUMENT_PIECE] for i in range(0, len(arguments), ARGUMENT_PIECE)] or [""]
