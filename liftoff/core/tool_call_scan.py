"""The scanner under `liftoff.core.tool_calls`: the JSON objects of an answer's tool calls, read character by
character as the text grows, with the spans of each object's top-level values (a call's `name`, its arguments), so
that a stream can send a call's name as soon as it is read and its arguments as they are written, and a whole
answer is read by the same code."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

MARKERS = {"hermes": "<tool_call>", "mistral": "[TOOL_CALLS]", "llama3_json": "<|python_tag|>"}
_WS = " \t\r\n"


@dataclass
class Object:
    """One call's JSON object in the text: where it starts and ends, and the spans of its top-level values."""

    start: int
    end: int | None = None  # just past the closing brace
    spans: dict[str, tuple[int, int | None]] = field(default_factory=dict)  # key -> value's [start, end)


class Scan:
    """The calls' objects of one answer (from where its first call begins), read as the text grows. Framing per
    format: Hermes blocks (anything between an object and the next `<tool_call>` is skipped), Mistral's array (or
    one object), Llama 3's objects separated by `;`."""

    def __init__(self, parser: str) -> None:
        self.parser = parser
        self.objects: list[Object] = []
        self.at = 0
        self.frame = "marker" if parser == "hermes" else "open"
        self.done = False
        # inside an object: nesting depth, string state, the key being read and what is expected next at depth 1
        self.depth = 0
        self.in_string = self.escaped = False
        self.key_start = -1
        self.key = ""
        self.expect = "key"
        self.value_start = -1

    def feed(self, text: str) -> None:
        """Scan `text` (the answer from its first call on, all of it so far) from where the last feed stopped."""
        while not self.done and self.at < len(text):
            if self.depth:
                self._object_char(text)
                continue
            if not self._frame(text):
                return

    def _frame(self, text: str) -> bool:
        """One step between objects; False when it must wait for more text."""
        at, parser = self.at, self.parser
        if self.frame == "marker":  # Hermes: the next block
            found = text.find(MARKERS["hermes"], at)
            if found < 0:
                self.at = max(at, len(text) - len(MARKERS["hermes"]) + 1)
                return False
            self.at, self.frame = found + len(MARKERS["hermes"]), "object"
            return True
        if self.frame == "open":  # the format's own opening, once
            marker = MARKERS[parser]
            if parser == "llama3_json":
                rest = text[at:].lstrip(_WS)
                if marker.startswith(rest[:len(marker)]) and len(rest) < len(marker):
                    return False
                self.at = len(text) - len(rest) + (len(marker) if rest.startswith(marker) else 0)
                self.frame = "between"
                return True
            self.at, self.frame = at + len(marker), "mistral"
            return True
        char = text[at]
        if char in _WS:
            self.at += 1
            return True
        if self.frame == "mistral":
            self.frame = "between" if char == "[" else "single"
            self.at += char == "["
            return True
        if char == "{" and self.frame in ("object", "between", "single"):
            self.objects.append(Object(at))
            self.depth, self.expect, self.at = 1, "key", at + 1
            return True
        if self.frame == "between" and char in (",;"[parser == "llama3_json"]):
            self.at += 1
            return True
        if self.frame == "object":  # a block without an object: skip to the next one
            self.frame = "marker"
            return True
        self.done = True  # the array's end, or text that is not a call
        return False

    def _object_char(self, text: str) -> None:
        at, char = self.at, text[self.at]
        self.at += 1
        if self.in_string:
            if self.escaped:
                self.escaped = False
            elif char == "\\":
                self.escaped = True
            elif char == '"':
                self.in_string = False
                if self.depth == 1 and self.expect == "key":
                    self.key, self.expect = text[self.key_start:at + 1], "colon"
                elif self.depth == 1 and self.expect == "string":
                    self._value_end(at + 1)
            return
        if char == '"':
            self.in_string = True
            if self.depth == 1 and self.expect == "key":
                self.key_start = at
            elif self.depth == 1 and self.expect == "value":
                self._value_start(at, "string")
            return
        if self.depth == 1:
            if self.expect == "primitive" and char in ",}":
                self._value_end(at)
            if self.expect == "colon" and char == ":":
                self.expect = "value"
                return
            if self.expect == "value" and char not in _WS:
                self._value_start(at, "container" if char in "{[" else "primitive")
            if char == "," and self.expect == "after":
                self.expect = "key"
        if char in "{[":
            self.depth += 1
        elif char in "}]":
            self.depth -= 1
            if self.depth == 1 and self.expect == "container":
                self._value_end(at + 1)
        if self.depth == 0:
            self.objects[-1].end = at + 1
            if self.parser == "hermes":
                self.frame = "marker"
            elif self.frame == "single":
                self.done = True
            else:
                self.frame = "between"

    def _value_start(self, at: int, kind: str) -> None:
        self.value_start, self.expect = at, kind
        self.objects[-1].spans[self._key_name()] = (at, None)

    def _value_end(self, end: int) -> None:
        obj = self.objects[-1]
        obj.spans[self._key_name()] = (self.value_start, end)
        self.expect = "after"

    def _key_name(self) -> str:
        try:
            return str(json.loads(self.key))
        except ValueError:
            return self.key
