"""The Responses API (/v1/responses) end to end, through the official `openai` client: a real `liftoff serve` with an
echo reader in `primary` (its chat template renders `role: content` lines and it generates the prompt back, so that
every answer is known), a slow echo reader in `slow` (for streams caught in progress), and a tiny random Llama in
`hermes` whose chat template (written here) supports tools."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from liftoff.core.tool_calls import argument_pieces

from support.servers import Server, wait_for
from support.tools import HERMES_READER, WEATHER, hermes_server

TOOLS: list[Any] = [{"type": "function", "name": "get_weather", "description": "weather", "parameters": WEATHER,
                     "strict": True}]
FORCED: Any = {"type": "function", "name": "get_weather"}
SLOW_MS = 150  # the slow echo reader's pause between tokens


def echo_tokens(text: str) -> list[str]:
    """The echo reader's tokens: whitespace-led words, a trailing run of whitespace its own token."""
    return re.findall(r"\s*\S+|\s+", text)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Server]:
    readers = [
        {"model_name": "echo", "consumer_group": "primary", "reader_id": "echo-0"},
        {"model_name": "echo", "consumer_group": "slow", "reader_id": "slow-0", "echo_token_delay_ms": SLOW_MS},
        HERMES_READER,
    ]
    yield from hermes_server(tmp_path_factory, redis_url, "responses", readers, responses_ttl_s=600)


def _openai_url(server: Server) -> str:
    return server.port_url("openai_port") + "/v1"


# --- whole answers ------------------------------------------------------------------------------------------------
def test_a_string_input_is_answered_as_a_response(client: openai.OpenAI) -> None:
    r = client.responses.create(model="primary", input="say hello to the world")
    rendered = "user: say hello to the world\nassistant: "
    assert r.output_text == rendered
    assert re.fullmatch(r"resp_[0-9a-f]{48}", r.id) and r.object == "response" and r.model == "primary"
    assert r.status == "completed" and r.error is None and r.incomplete_details is None and r.completed_at
    [item] = r.output
    assert item.type == "message" and item.role == "assistant" and item.status == "completed"
    assert item.id.startswith("msg_") and [c.type for c in item.content] == ["output_text"]
    words = len(echo_tokens(rendered))
    assert r.usage is not None
    assert (r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens) == (words, words, 2 * words)
    assert r.usage.input_tokens_details.cached_tokens >= 0 and r.usage.output_tokens_details.reasoning_tokens == 0
    assert (r.temperature, r.top_p, r.tool_choice, r.tools, r.parallel_tool_calls) == (1.0, 1.0, "auto", [], True)
    assert r.store is True and r.truncation == "disabled" and r.text.format.type == "text" and r.metadata == {}


def test_items_instructions_and_echoed_settings(client: openai.OpenAI) -> None:
    r = client.responses.create(
        model="primary", instructions="be brief", temperature=0, top_p=0.5, metadata={"ticket": "42"}, user="u-1",
        input=[{"role": "developer", "content": "answer in French"},
               {"role": "user", "content": [{"type": "input_text", "text": "hello "}, {"type": "input_text",
                                                                                       "text": "world"}]},
               {"type": "message", "role": "assistant", "content": "bonjour"},
               {"role": "user", "content": "again"}])
    assert r.output_text == ("system: be brief\nsystem: answer in French\nuser: hello world\nassistant: bonjour\n"
                             "user: again\nassistant: ")
    assert (r.instructions, r.temperature, r.top_p, r.metadata, r.user) == ("be brief", 0, 0.5, {"ticket": "42"},
                                                                            "u-1")


def test_max_output_tokens_makes_an_incomplete_response(client: openai.OpenAI) -> None:
    r = client.responses.create(model="primary", input="one two three four five six", max_output_tokens=3)
    assert r.status == "incomplete" and r.incomplete_details is not None
    assert r.incomplete_details.reason == "max_output_tokens" and r.max_output_tokens == 3
    assert r.output_text == "user: one two" and r.output[0].status == "incomplete"
    assert r.usage is not None and r.usage.output_tokens == 3 and r.completed_at is None


# --- streams ------------------------------------------------------------------------------------------------------
TEXT_EVENTS = ["response.created", "response.in_progress", "response.output_item.added",
               "response.content_part.added"]
TEXT_END = ["response.output_text.done", "response.content_part.done", "response.output_item.done"]


def test_a_stream_is_typed_numbered_events_that_join_to_the_whole_answer(client: openai.OpenAI) -> None:
    whole = client.responses.create(model="primary", input="stream these words please", store=False)
    events = list(client.responses.create(model="primary", input="stream these words please", stream=True))
    kinds = [e.type for e in events]
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert kinds == [*TEXT_EVENTS, *["response.output_text.delta"] * len(deltas), *TEXT_END, "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(d.delta for d in deltas) == whole.output_text and len(deltas) == len(echo_tokens(whole.output_text))
    created, final = events[0].response, events[-1].response  # type: ignore[union-attr]
    assert created.status == "in_progress" and created.output == [] and created.id == final.id
    assert final.status == "completed" and final.output_text == whole.output_text
    assert final.usage is not None and whole.usage is not None
    assert final.usage.output_tokens == whole.usage.output_tokens
    added, done = events[2], events[-2]
    assert added.type == "response.output_item.added" and done.type == "response.output_item.done"
    assert {d.item_id for d in deltas} == {added.item.id} and done.item.status == "completed"
    assert events[-4].text == whole.output_text  # type: ignore[union-attr]
    assert client.responses.retrieve(final.id).output_text == whole.output_text  # stored once it ended


def test_the_stream_helper_accumulates_the_final_response(client: openai.OpenAI) -> None:
    with client.responses.stream(model="primary", input="helper stream") as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert final.output_text == "user: helper stream\nassistant: " and final.status == "completed"
    snapshots = [e.snapshot for e in events if e.type == "response.output_text.delta"]
    assert snapshots[-1] == final.output_text
    incomplete = list(client.responses.create(model="primary", input="a b c d e", max_output_tokens=2, stream=True))
    assert incomplete[-1].type == "response.incomplete"
    assert incomplete[-1].response.incomplete_details.reason == "max_output_tokens"  # type: ignore[union-attr]


# --- the store: chains, GET, DELETE, cancel -----------------------------------------------------------------------
def test_previous_response_id_continues_the_stored_conversation(client: openai.OpenAI) -> None:
    first = client.responses.create(model="primary", instructions="only for the first", input="first question")
    second = client.responses.create(model="primary", previous_response_id=first.id, input="second")
    assert second.output_text == f"user: first question\nassistant: {first.output_text}\nuser: second\nassistant: "
    assert second.previous_response_id == first.id and second.instructions is None  # instructions are not carried
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens == len(echo_tokens(second.output_text)) > first.usage.input_tokens
    with client.responses.stream(model="primary", previous_response_id=second.id, input="third") as stream:
        third = stream.get_final_response()
    assert third.output_text.startswith(f"user: first question\nassistant: {first.output_text}\nuser: second\n")
    fourth = client.responses.create(model="primary", previous_response_id=third.id, input=[])
    assert fourth.output_text.endswith(f"user: third\nassistant: {third.output_text}\nassistant: ")


def test_store_false_keeps_nothing(client: openai.OpenAI) -> None:
    r = client.responses.create(model="primary", input="forget me", store=False)
    assert r.store is False and r.output_text
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError) as exc:
        client.responses.create(model="primary", previous_response_id=r.id, input="and then?")
    assert exc.value.body["param"] == "previous_response_id"  # type: ignore[index]
    assert exc.value.body["code"] == "previous_response_not_found"  # type: ignore[index]


def test_get_and_delete(client: openai.OpenAI, server: Server) -> None:
    r = client.responses.create(model="primary", input="keep me", metadata={"k": "v"})
    assert client.responses.retrieve(r.id).model_dump() == r.model_dump()
    deleted = httpx.delete(f"{_openai_url(server)}/responses/{r.id}", timeout=10)
    assert deleted.status_code == 200 and deleted.json() == {"id": r.id, "object": "response", "deleted": True}
    for call in (lambda: client.responses.retrieve(r.id), lambda: client.responses.delete(r.id),
                 lambda: client.responses.cancel(r.id)):
        with pytest.raises(openai.NotFoundError) as exc:
            call()
        assert r.id in exc.value.message
    missing = httpx.get(f"{_openai_url(server)}/responses/resp_nope", timeout=10)
    assert missing.status_code == 404 and set(missing.json()["error"]) == {"message", "type", "param", "code"}
    refused = httpx.get(f"{_openai_url(server)}/responses/{r.id}?stream=true", timeout=10)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "stream"


def test_a_finished_response_cannot_be_cancelled(client: openai.OpenAI) -> None:
    r = client.responses.create(model="primary", input="done already")
    with pytest.raises(openai.BadRequestError) as exc:
        client.responses.cancel(r.id)
    assert "background=true" in exc.value.message and "completed" in exc.value.message


def test_a_streaming_response_is_stored_in_progress_and_cancelled_when_its_client_goes(client: openai.OpenAI,
                                                                                       server: Server) -> None:
    wait_for(lambda: "slow-0" in server.status()["status"]["live_readers"], 30, "the slow reader live", server)
    stream = client.responses.create(model="slow", input=" ".join(f"w{i}" for i in range(60)), stream=True)
    events = iter(stream)
    created = next(events)
    assert created.type == "response.created"
    response_id = created.response.id  # type: ignore[union-attr]
    running = client.responses.retrieve(response_id)
    assert running.status == "in_progress" and running.output == []
    with pytest.raises(openai.BadRequestError) as exc:
        client.responses.cancel(response_id)
    assert "in_progress" in exc.value.message and "close its stream" in exc.value.message
    assert next(e for e in events if e.type == "response.output_text.delta")
    stream.close()
    wait_for(lambda: client.responses.retrieve(response_id).status == "cancelled", 10, "stored as cancelled", server)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="primary", previous_response_id=response_id, input="more")


# --- tools --------------------------------------------------------------------------------------------------------
def _call(r: Any) -> Any:
    calls = [item for item in r.output if item.type == "function_call"]
    assert len(calls) == 1, r.output
    call = calls[0]
    assert call.name == "get_weather" and re.fullmatch(r"call_[0-9a-f]{24}", call.call_id) and call.id
    jsonschema.validate(json.loads(call.arguments), WEATHER)
    return call


def test_a_forced_tool_choice_makes_a_function_call_item(client: openai.OpenAI) -> None:
    for choice in (FORCED, "required"):
        r = client.responses.create(model="hermes", input="What is the weather in Paris?", tools=TOOLS,
                                    tool_choice=choice, temperature=0, max_output_tokens=120)
        call = _call(r)
        assert r.status == "completed" and r.output_text == "" and call.status == "completed"
        assert r.tools[0].name == "get_weather"  # type: ignore[union-attr]
        if choice == "required":
            assert r.tool_choice == "required"
        else:
            assert r.tool_choice.name == "get_weather"  # type: ignore[union-attr]


def test_a_streamed_call_equals_the_whole_one(client: openai.OpenAI) -> None:
    kwargs: Any = {"model": "hermes", "input": "Weather in Rome?", "tools": TOOLS, "tool_choice": FORCED,
                   "temperature": 0, "max_output_tokens": 120}
    whole = _call(client.responses.create(**kwargs, store=False))
    with client.responses.stream(**kwargs) as stream:
        events = list(stream)
        final = stream.get_final_response()
    call = _call(final)
    assert (call.name, call.arguments) == (whole.name, whole.arguments)
    pieces = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert "".join(pieces) == call.arguments and [d.arguments for d in done] == [call.arguments]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    kinds = [e.type for e in events]
    assert kinds[2] == "response.output_item.added" and kinds.index("response.function_call_arguments.delta") > 2
    assert len(pieces) > len(argument_pieces(call.arguments))  # as the model wrote them, not cut up once whole


def test_a_call_goes_out_as_it_is_written_and_one_cut_by_the_budget_ends_incomplete(client: openai.OpenAI) -> None:
    """Cut by max_output_tokens inside its arguments, a call the whole answer cannot hold (its JSON never closed)
    was still added to the stream, its arguments sent as far as they were written: the stream sent them before the
    answer was whole. Its item ends `incomplete`, and a conversation that continues the response leaves it out."""
    kwargs: Any = {"model": "hermes", "input": "Weather in Oslo?", "tools": TOOLS, "tool_choice": FORCED,
                   "temperature": 0}
    full = list(client.responses.create(**kwargs, max_output_tokens=120, stream=True))
    written = "".join(e.delta for e in full if e.type == "response.function_call_arguments.delta")
    fragments = sum(e.type == "response.function_call_arguments.delta" for e in full)  # one per token at most
    usage = full[-1].response.usage  # type: ignore[union-attr]
    assert full[-1].type == "response.completed" and fragments > 2 and usage is not None, [e.type for e in full]
    budget = usage.output_tokens - fragments + 2  # two tokens into the arguments, or more: never past them
    whole = client.responses.create(**kwargs, max_output_tokens=budget)
    assert whole.status == "incomplete" and [i.type for i in whole.output] == ["message"]  # the call dropped
    events = list(client.responses.create(**kwargs, max_output_tokens=budget, stream=True))
    kinds = [e.type for e in events]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    added = events[2]
    assert added.type == "response.output_item.added" and added.item.type == "function_call"  # type: ignore[union-attr]
    sent = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    arguments = "".join(sent)
    assert len(sent) >= 2 and written.startswith(arguments) and len(arguments) < len(written)
    with pytest.raises(ValueError):
        json.loads(arguments)
    [done] = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert done.arguments == arguments
    assert kinds == [*TEXT_EVENTS[:3], *["response.function_call_arguments.delta"] * len(sent), *TEXT_EVENTS[2:],
                     "response.output_text.delta", "response.function_call_arguments.done",
                     "response.output_item.done", *TEXT_END, "response.incomplete"]  # the cut call's text at the end
    final = events[-1].response  # type: ignore[union-attr]
    assert events[-1].type == "response.incomplete" and final.status == "incomplete"
    call, message = final.output
    assert call.type == "function_call" and call.status == "incomplete" and call.arguments == arguments
    assert message.type == "message" and message.status == "incomplete"
    assert final.output_text == whole.output_text  # the cut call's text, as the whole answer gives it
    assert client.responses.retrieve(final.id).output[0].status == "incomplete"
    after_stream, after_whole = (client.responses.create(model="hermes", previous_response_id=r.id, input="more",
                                                         max_output_tokens=1) for r in (final, whole))
    assert after_stream.usage is not None and after_whole.usage is not None
    assert after_stream.usage.input_tokens == after_whole.usage.input_tokens  # the same conversation, rendered


def test_a_tool_round_trip_by_items_and_by_previous_response_id(client: openai.OpenAI) -> None:
    ask = [{"role": "user", "content": "What is the weather in Paris?"}]
    first = client.responses.create(model="hermes", input=ask, tools=TOOLS, tool_choice=FORCED, temperature=0,
                                    max_output_tokens=120)
    call = _call(first)
    result = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}
    by_items = client.responses.create(model="hermes", input=[*ask, *first.output, result], tools=TOOLS,
                                       tool_choice="none", temperature=0, max_output_tokens=10)
    chained = client.responses.create(model="hermes", previous_response_id=first.id, input=[result], tools=TOOLS,
                                      tool_choice="none", temperature=0, max_output_tokens=10)
    assert by_items.output[0].type == "message" and not [i for i in by_items.output if i.type == "function_call"]
    assert by_items.output_text == chained.output_text  # the same conversation, rendered the same
    assert by_items.usage is not None and chained.usage is not None and first.usage is not None
    assert by_items.usage.input_tokens == chained.usage.input_tokens > first.usage.input_tokens  # the call rendered
    with pytest.raises(openai.BadRequestError) as exc:
        client.responses.create(model="hermes", previous_response_id=first.id, tools=TOOLS,
                                input=[{**result, "call_id": "call_unknown"}])
    assert exc.value.body["param"] == "input.0.call_id"  # type: ignore[index]


# --- text.format --------------------------------------------------------------------------------------------------
class Weather(BaseModel):
    city: str = Field(max_length=8)
    days: int = Field(ge=1, le=7)


def test_text_format_json_schema_and_json_object(client: openai.OpenAI) -> None:
    fmt = {"format": {"type": "json_schema", "name": "weather", "schema": WEATHER, "strict": True}}
    r = client.responses.create(model="hermes", input="Weather?", text=fmt,  # type: ignore[arg-type]
                                max_output_tokens=300, temperature=0)
    assert r.status == "completed", r.output_text
    jsonschema.validate(json.loads(r.output_text), WEATHER)
    assert r.text.format.type == "json_schema" and r.text.format.name == "weather"  # type: ignore[union-attr]
    parsed = client.responses.parse(model="hermes", input="Weather?", text_format=Weather, max_output_tokens=300,
                                    temperature=1, top_p=0.9)
    assert isinstance(parsed.output_parsed, Weather), parsed.output_text
    r = client.responses.create(model="hermes", input="JSON please", text={"format": {"type": "json_object"}},
                                max_output_tokens=300, temperature=0)
    if r.status == "completed":  # a random model may write an object longer than the budget
        assert isinstance(json.loads(r.output_text), dict)
    else:
        assert r.output_text.lstrip().startswith("{")


# --- refusals -----------------------------------------------------------------------------------------------------
REFUSED: list[tuple[dict[str, Any], str, str]] = [
    ({"reasoning": {"effort": "low"}}, "reasoning", "reasoning"),
    ({"include": ["message.output_text.logprobs"]}, "include", "include"),
    ({"background": True}, "background", "background"),
    ({"truncation": "auto"}, "truncation", "truncation"),
    ({"tools": [{"type": "web_search"}]}, "tools.0.type", "web_search"),
    ({"tools": [{"type": "file_search", "vector_store_ids": ["vs"]}]}, "tools.0.type", "file_search"),
    ({"tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": []}}, "tool_choice.type", "allowed_tools"),
    ({"tool_choice": "required"}, "tool_choice", "tools"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice.name", "nope"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}]},
     "input.0.content", "input_image"),
    ({"input": [{"type": "reasoning", "id": "rs_1", "summary": []}]}, "input.0.type", "reasoning"),
    ({"input": [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{no"}]}, "input.0.arguments",
     "JSON"),
    ({"extra_body": {"bogus": 1}}, "bogus", "Unrecognized"),
    ({"temperature": 3}, "temperature", "temperature"),
    ({"max_output_tokens": 0}, "max_output_tokens", "max_output_tokens"),
    ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "16"),
    ({"text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "string", "format": "nope"}}}},
     "text.format", "nope"),
    ({"tools": TOOLS, "model": "primary"}, "tools", "tool_call_parser"),
]


@pytest.mark.parametrize(("kwargs", "param", "word"), REFUSED, ids=[p for _, p, _ in REFUSED])
def test_what_is_not_supported_is_a_400_naming_it(client: openai.OpenAI, kwargs: dict[str, Any], param: str,
                                                  word: str) -> None:
    kwargs = {"model": "hermes", "input": "hi", **kwargs}
    with pytest.raises(openai.BadRequestError) as exc:
        client.responses.create(**kwargs)
    assert exc.value.body["param"] == param and word in exc.value.message, exc.value.body  # type: ignore[index]


def test_other_errors_speak_the_envelope(client: openai.OpenAI, server: Server) -> None:
    with pytest.raises(openai.UnprocessableEntityError) as exc:  # a forced call and a schema cannot both hold
        client.responses.create(model="hermes", input="hi", tools=TOOLS, tool_choice=FORCED,
                                text={"format": {"type": "json_object"}})
    assert "text.format" in exc.value.message
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.create(model="no-such-group", input="hi")
    assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
    r = httpx.post(f"{_openai_url(server)}/responses", content=b"[1]", timeout=10)
    assert r.status_code == 400 and "error" in r.json()
    doc = httpx.get(server.port_url("openai_port") + "/openapi.json", timeout=10).json()
    body = doc["paths"]["/v1/responses"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ResponsesRequest"}
    assert {"get", "delete"} <= set(doc["paths"]["/v1/responses/{response_id}"])
    assert "post" in doc["paths"]["/v1/responses/{response_id}/cancel"]


# --- failures mid-stream (last: it stops the slow reader for a while) ---------------------------------------------
def test_a_reader_silent_mid_stream_ends_the_stream_with_response_failed(client: openai.OpenAI,
                                                                         server: Server) -> None:
    wait_for(lambda: "slow-0" in server.status()["status"]["live_readers"], 30, "the slow reader live", server)
    pid = server.reader_pid("slow-0")
    stream = client.responses.create(model="slow", input=" ".join(f"w{i}" for i in range(40)), stream=True)
    events = iter(stream)
    seen = [next(e for e in events if e.type == "response.output_text.delta")]
    os.kill(pid, signal.SIGSTOP)  # no more tokens and no more beats: the gateway gives up after the silence limit
    stopped = time.monotonic()
    try:
        seen += list(events)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert time.monotonic() - stopped < 30
    kinds = [e.type for e in seen]
    assert kinds[-2:] == ["error", "response.failed"], kinds
    error, failed = seen[-2], seen[-1].response  # type: ignore[union-attr]
    assert "reader_message_timeout_ms" in error.message  # type: ignore[union-attr]
    assert failed.status == "failed" and failed.error is not None and failed.error.code == "server_error"
    assert client.responses.retrieve(failed.id).status == "failed"
