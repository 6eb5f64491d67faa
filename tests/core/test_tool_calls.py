"""The tool-call parsers, whole answers and streams: a stream fed in pieces of any size sends exactly the calls that
the whole text parses into, and sends each call's first piece as soon as its name is read."""

from __future__ import annotations

import json

import pytest

from liftoff.core.tool_calls import ToolStream, parse

NAMES = {"get_weather", "add"}
HERMES = ('Let me check. <tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris, \\"FR\\"", "days": 3}}'
          '\n</tool_call>\n<tool_call>{"arguments":{"a":1,"b":[2,{"c":"}"}]},"name":"add"}</tool_call>')
MISTRAL = '[TOOL_CALLS] [{"name": "add", "arguments": {"a": 1, "b": 2}}, {"name": "get_weather", "arguments": {}}]'
LLAMA = '<|python_tag|>{"name": "add", "parameters": {"a": 5}}; {"name": "get_weather", "parameters": {"city": "x"}}'


def _stream(parser: str, text: str, step: int, max_calls: int | None = None) -> tuple[str, dict[int, list[str]]]:
    stream = ToolStream(parser, NAMES, max_calls)
    content, calls = "", {}

    def take(pieces: list) -> None:
        for p in pieces:
            if p.id is not None:
                assert p.index not in calls and p.arguments == ""
                calls[p.index] = [p.id, p.name, ""]
            else:
                calls[p.index][2] += p.arguments

    for i in range(0, len(text), step):
        content += stream.feed(text[i:i + step])
        take(stream.pieces())
    held, whole = stream.finish()
    content += held
    take(stream.rest())
    assert [(c.id, c.name, c.arguments) for c in whole] == [tuple(calls[i]) for i in sorted(calls)]
    return content, calls


@pytest.mark.parametrize(("parser", "text", "expected"), [
    ("hermes", HERMES, [("get_weather", {"city": 'Paris, "FR"', "days": 3}), ("add", {"a": 1, "b": [2, {"c": "}"}]})]),
    ("mistral", MISTRAL, [("add", {"a": 1, "b": 2}), ("get_weather", {})]),
    ("llama3_json", LLAMA, [("add", {"a": 5}), ("get_weather", {"city": "x"})]),
])
def test_whole_and_streamed_answers_agree_for_every_piece_size(parser: str, text: str, expected: list) -> None:
    content, calls = parse(parser, text, NAMES)
    assert [(c.name, json.loads(c.arguments)) for c in calls] == expected
    assert content == ("Let me check. " if parser == "hermes" else None)
    for step in (1, 2, 3, 7, 1000):
        streamed, _ = _stream(parser, text, step)
        assert streamed == (content or "")


def test_arguments_are_the_text_the_model_wrote() -> None:
    _, calls = parse("hermes", '<tool_call>{"name": "add", "arguments": {"a":1,  "b": 2}}</tool_call>', NAMES)
    assert calls[0].arguments == '{"a":1,  "b": 2}'
    _, calls = parse("hermes", '<tool_call>{"name": "add", "arguments": "{\\"a\\": 1}"}</tool_call>', NAMES)
    assert calls[0].arguments == '{"a": 1}'  # JSON text in a string: decoded, and sent whole at the end
    assert _stream("hermes", '<tool_call>{"name": "add", "arguments": "{\\"a\\": 1}"}</tool_call>', 1)[1][0][2] == \
        '{"a": 1}'


def test_a_call_goes_out_once_its_name_is_read_and_its_arguments_as_written() -> None:
    stream = ToolStream("hermes", NAMES)
    assert stream.feed("Sure <tool") == "Sure "
    assert stream.feed("_call>{\"name\": \"get_wea") == ""
    assert stream.pieces() == []
    stream.feed('ther", "arguments": {"city": "Pa')
    first, args = stream.pieces()
    assert (first.name, first.arguments, args.arguments) == ("get_weather", "", '{"city": "Pa')
    stream.feed('ris"}}</tool_call>')
    assert [p.arguments for p in stream.pieces()] == ['ris"}']


def test_unknown_names_broken_calls_and_plain_text() -> None:
    text = '<tool_call>{"name": "nope", "arguments": {}}</tool_call><tool_call>{"name": "add", "arguments": {"a": 1'
    assert parse("hermes", text, NAMES) == (text, [])  # an unknown tool and a call cut short: no call
    assert parse("hermes", "just words", NAMES) == ("just words", [])
    assert parse("llama3_json", 'text first {"name": "add"}', NAMES)[1] == []  # a Llama 3 call opens the answer
    stream = ToolStream("hermes", NAMES)
    assert stream.feed("a < b") == "a < b" and stream.finish() == ("", [])
    _, calls = _stream("hermes", '<tool_call>{"name": "nope", "arguments": {}}</tool_call>'
                                 '<tool_call>{"name": "add", "arguments": {"a": 2}}</tool_call>', 4)
    assert [c[1] for c in calls.values()] == ["add"]


def test_max_calls_sends_only_the_first() -> None:
    _, calls = _stream("mistral", MISTRAL, 5, max_calls=1)
    assert [c[1] for c in calls.values()] == ["add"]


def test_a_started_call_that_is_no_call_keeps_the_others_ids() -> None:
    text = ('<tool_call>{"name": "add", "arguments": 5}</tool_call>'
            '<tool_call>{"name": "get_weather", "arguments": {"city": "x"}}</tool_call>')
    stream = ToolStream("hermes", NAMES)
    sent = []
    for i in range(0, len(text), 3):
        stream.feed(text[i:i + 3])
        sent += stream.pieces()
    _, calls = stream.finish()
    sent += stream.rest()
    firsts = {p.index: p for p in sent if p.id is not None}
    assert [p.name for p in firsts.values()] == ["add", "get_weather"]  # `add` went out before it proved no call
    assert [(c.name, c.id) for c in calls] == [("get_weather", firsts[1].id)]
    assert "".join(p.arguments for p in sent if p.index == 1) == '{"city": "x"}' and stream.dropped
