"""Structured-output extras (vLLM's guided_* and structured_outputs) and tool calling on the OpenAI port, end to end
through the official `openai` client: a real `liftoff serve` with tiny random Llamas whose chat templates (written
here) support tools, one Hermes style (`<tool_call>`), one Mistral style (`[TOOL_CALLS]`)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema
import openai
import pytest

from support.servers import Server, ServerFactory
from support.tools import (
    ADD,
    ASK,
    HERMES_READER,
    HERMES_TEMPLATE,
    MISTRAL_TEMPLATE,
    PLAIN_TEMPLATE,
    SCHEMAS,
    TOOLS,
    WEATHER,
    build_tool_model,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Server]:
    from support.servers import server_factory

    repo = tmp_path_factory.mktemp("artefacts")
    build_tool_model(repo / "hermes", HERMES_TEMPLATE)
    build_tool_model(repo / "mistral", MISTRAL_TEMPLATE)
    build_tool_model(repo / "hermes-wp", HERMES_TEMPLATE, wordpiece=True)
    build_tool_model(repo / "plain", PLAIN_TEMPLATE)
    servers: list[Server] = []
    make: ServerFactory = server_factory(tmp_path_factory.mktemp("tools"), redis_url, servers)
    readers = [
        HERMES_READER,
        {"model_name": "mistral", "consumer_group": "mistral", "reader_id": "mistral", "max_batch_size": 8,
         "max_sequence_length": 1024},
        {"model_name": "hermes-wp", "consumer_group": "hermes-wp", "reader_id": "hermes-wp", "max_batch_size": 8,
         "max_sequence_length": 512},
        {"model_name": "plain", "consumer_group": "plain", "reader_id": "plain", "max_batch_size": 8,
         "max_sequence_length": 1024},
        {"model_name": "echo", "consumer_group": "primary", "reader_id": "echo-0"},
    ]
    srv = make(readers=readers, repository_path=str(repo), reserved_consumers="", request_timeout_s=120.0)
    yield srv
    srv.stop()



def _chat(client: openai.OpenAI, model: str = "hermes", **kwargs: Any) -> Any:
    kwargs.setdefault("messages", ASK)
    kwargs.setdefault("max_tokens", 120)
    kwargs.setdefault("temperature", 0)
    return client.chat.completions.create(model=model, **kwargs)


def _valid_calls(message: Any) -> list[tuple[str, dict[str, Any]]]:
    calls = []
    for call in message.tool_calls or []:
        assert call.type == "function" and re.fullmatch(r"call_[0-9a-f]{24}", call.id)
        args = json.loads(call.function.arguments)
        jsonschema.validate(args, SCHEMAS[call.function.name])
        calls.append((call.function.name, args))
    return calls


# --- vLLM's structured-output extras ------------------------------------------------------------------------------
def test_guided_json_regex_choice_and_grammar_conform(client: openai.OpenAI) -> None:
    r = _chat(client, max_tokens=300, extra_body={"guided_json": WEATHER})
    assert r.choices[0].finish_reason == "stop", r.choices[0].message.content
    jsonschema.validate(json.loads(r.choices[0].message.content), WEATHER)
    r = _chat(client, extra_body={"guided_regex": r"[a-z]{3,6}-[0-9]{2}"})
    assert re.fullmatch(r"[a-z]{3,6}-[0-9]{2}", r.choices[0].message.content)
    choices = ["yes", "no", "a.b (maybe)"]
    assert _chat(client, extra_body={"guided_choice": choices}).choices[0].message.content in choices
    r = _chat(client, temperature=1, seed=3, extra_body={"structured_outputs": {"choice": choices}})
    assert r.choices[0].message.content in choices
    r = _chat(client, max_tokens=300, extra_body={"structured_outputs": {"json": ADD}})
    jsonschema.validate(json.loads(r.choices[0].message.content), ADD)
    r = _chat(client, extra_body={"structured_outputs": {"regex": "(ab)+"}})
    assert re.fullmatch("(ab)+", r.choices[0].message.content)
    grammar = 'start: "x=" NUM ("+" NUM)*\nNUM: /[0-9]{1,3}/\n'
    r = _chat(client, extra_body={"guided_grammar": grammar})
    assert re.fullmatch(r"x=[0-9]{1,3}(\+[0-9]{1,3})*", r.choices[0].message.content)


def test_two_constraints_are_422_naming_both(client: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as exc:
        _chat(client, extra_body={"guided_regex": "a", "guided_json": {"type": "object"}})
    assert "guided_json" in exc.value.message and "guided_regex" in exc.value.message
    with pytest.raises(openai.UnprocessableEntityError) as exc:
        _chat(client, response_format={"type": "json_object"}, extra_body={"structured_outputs": {"regex": "a"}})
    assert "response_format" in exc.value.message and "structured_outputs.regex" in exc.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        _chat(client, extra_body={"guided_grammar": "start: nothing_here"})
    assert bad.value.body["param"] == "guided_grammar"  # type: ignore[index]


@pytest.mark.parametrize("model", ["hermes", "hermes-wp"])  # a byte-level BPE and a WordPiece tokenizer
def test_every_response_format_kind_parses_on_both_tokenizers(client: openai.OpenAI, model: str) -> None:
    r = _chat(client, model=model, max_tokens=300,
              response_format={"type": "json_schema", "json_schema": {"name": "weather", "schema": WEATHER}})
    assert r.choices[0].finish_reason == "stop", r.choices[0].message.content
    jsonschema.validate(json.loads(r.choices[0].message.content), WEATHER)
    r = _chat(client, model=model, max_tokens=300, response_format={"type": "json_object"})
    if r.choices[0].finish_reason == "stop":  # a random model may write an object longer than the budget
        assert isinstance(json.loads(r.choices[0].message.content), dict)
    else:
        assert r.choices[0].finish_reason == "length" and r.choices[0].message.content.lstrip().startswith("{")
    text = _chat(client, model=model, response_format={"type": "text"}).choices[0]
    assert text.finish_reason in ("stop", "length")
    # both vocabularies can write a Hermes call (a WordPiece one has no newline: the format's newlines are optional)
    r = _chat(client, model=model, tools=TOOLS, tool_choice="required", max_tokens=200)
    assert r.choices[0].finish_reason == "tool_calls" and _valid_calls(r.choices[0].message)
    r = _chat(client, model=model, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "add"}},
              max_tokens=200)
    assert [name for name, _ in _valid_calls(r.choices[0].message)] == ["add"]


# --- tool calls ---------------------------------------------------------------------------------------------------
def test_required_and_named_choices_make_valid_calls(client: openai.OpenAI) -> None:
    r = _chat(client, tools=TOOLS, tool_choice="required")
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and _valid_calls(choice.message)
    r = _chat(client, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "add"}})
    calls = _valid_calls(r.choices[0].message)
    assert [name for name, _ in calls] == ["add"] and r.choices[0].finish_reason == "tool_calls"


def test_parallel_tool_calls_false_makes_exactly_one(client: openai.OpenAI) -> None:
    for seed in range(3):
        r = _chat(client, tools=TOOLS, tool_choice="required", parallel_tool_calls=False, temperature=1, seed=seed)
        assert len(_valid_calls(r.choices[0].message)) == 1
    r = _chat(client, tools=TOOLS, tool_choice="required", parallel_tool_calls=True, temperature=1, seed=1,
              max_tokens=200)
    assert len(_valid_calls(r.choices[0].message)) >= 1


def test_none_makes_no_calls_and_auto_never_fails(client: openai.OpenAI) -> None:
    r = _chat(client, tools=TOOLS, tool_choice="none", max_tokens=30)
    assert not r.choices[0].message.tool_calls and r.choices[0].finish_reason in ("stop", "length")
    for seed in range(3):
        r = _chat(client, tools=TOOLS, temperature=1, seed=seed, max_tokens=40)
        message = r.choices[0].message
        assert message.tool_calls or message.content is not None
        _valid_calls(message)


def _reassemble(stream: Any) -> tuple[list[tuple[str, str]], str, str | None]:
    calls: dict[int, list[str]] = {}
    content, reason = "", None
    for chunk in stream:
        for c in chunk.choices:
            content += c.delta.content or ""
            for d in c.delta.tool_calls or []:
                if d.id is not None:
                    assert d.index not in calls and d.type == "function" and d.function.arguments == ""
                    calls[d.index] = [d.function.name, ""]
                else:
                    calls[d.index][1] += d.function.arguments
            reason = c.finish_reason or reason
    return [(n, a) for _, (n, a) in sorted(calls.items())], content, reason


@pytest.mark.parametrize("model", ["hermes", "mistral"])
def test_streamed_calls_reassemble_into_the_whole_answer(client: openai.OpenAI, model: str) -> None:
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        whole = _chat(client, model, tools=TOOLS, tool_choice=choice)
        expected = [(c.function.name, c.function.arguments) for c in whole.choices[0].message.tool_calls or []]
        _valid_calls(whole.choices[0].message)
        assert expected and whole.choices[0].finish_reason == "tool_calls"
        calls, content, reason = _reassemble(_chat(client, model, tools=TOOLS, tool_choice=choice, stream=True))
        assert calls[:len(expected)] == expected and content == ""
        if len(calls) == len(expected):
            assert reason == "tool_calls"
        else:  # the token limit cut a further call after it began: the stream says so, the whole answer drops it
            assert len(calls) == len(expected) + 1 and reason == "length", (calls, reason)
            with pytest.raises(ValueError):
                json.loads(calls[-1][1])


def test_two_turns_with_a_tool_message(client: openai.OpenAI) -> None:
    first = _chat(client, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}})
    call = first.choices[0].message.tool_calls[0]
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [
        {"id": call.id, "type": "function", "function": {"name": call.function.name,
                                                         "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}]
    r = _chat(client, messages=history, tools=TOOLS, tool_choice="none", max_tokens=20)
    assert r.choices[0].message.content is not None and not r.choices[0].message.tool_calls
    assert r.usage is not None and r.usage.prompt_tokens > first.usage.prompt_tokens  # the history was rendered


@pytest.mark.parametrize("stream", [False, True])
def test_forced_calls_work_on_a_model_whose_template_knows_no_tools(client: openai.OpenAI, stream: bool) -> None:
    """`plain`'s template shows neither tools nor a call format: a named or required choice still makes a valid
    call (the grammar forces it; the tools are described in a system message), and `auto` is refused (400)."""
    named = {"type": "function", "function": {"name": "get_weather"}}
    for choice, names in ((named, {"get_weather"}), ("required", {"get_weather", "add"})):
        if stream:
            calls, content, reason = _reassemble(_chat(client, "plain", tools=TOOLS, tool_choice=choice,
                                                       stream=True))
            assert reason == "tool_calls" and calls and not content, (calls, content, reason)
            for name, arguments in calls:
                assert name in names
                jsonschema.validate(json.loads(arguments), SCHEMAS[name])
        else:
            r = _chat(client, "plain", tools=TOOLS, tool_choice=choice)
            assert r.choices[0].finish_reason == "tool_calls", r.choices[0]
            assert {name for name, _ in _valid_calls(r.choices[0].message)} <= names
    with pytest.raises(openai.BadRequestError) as exc:
        _chat(client, "plain", tools=TOOLS)  # auto: the model would have to know a format to choose to call
    assert exc.value.body["param"] == "tools" and "required or named" in exc.value.message  # type: ignore[index]


def test_tool_errors_are_400s_naming_the_parameter(client: openai.OpenAI) -> None:
    cases = [
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
         "tool_choice.function.name", "nope"),
        ({"tool_choice": "required"}, "tool_choice", "tools"),
        ({"tools": [*TOOLS, TOOLS[0]]}, "tools", "unique"),
        ({"messages": [*ASK, {"role": "tool", "content": "x"}], "tools": TOOLS}, "messages.1.tool_call_id", "tool"),
    ]
    for kwargs, param, word in cases:
        with pytest.raises(openai.BadRequestError) as exc:
            _chat(client, **kwargs)
        assert exc.value.body["param"] == param and word in exc.value.message, exc.value.body  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as exc:  # the echo model's template shows no tool-call format
        _chat(client, "primary", tools=TOOLS)
    assert exc.value.body["param"] == "tools"  # type: ignore[index]
