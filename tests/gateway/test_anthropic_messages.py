"""The Anthropic Messages API on the OpenAI port, end to end through the official `anthropic` client: a real
`liftoff serve` with an inference API key, a tiny random Llama whose chat template supports tools (Hermes style) in
`hermes`, and an echo reader pacing its tokens in `paced` (to stop it mid-stream)."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import jsonschema
import openai
import pytest

from support.servers import Server
from support.tools import ADD, HERMES_READER, WEATHER, hermes_server

KEY = "sk-anthropic-test-key"
TOOLS: list[Any] = [{"name": "get_weather", "description": "weather", "input_schema": WEATHER},
                    {"name": "add", "description": "add two numbers", "input_schema": ADD}]
SCHEMAS = {"get_weather": WEATHER, "add": ADD}
ASK: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
SYSTEM = "Answer briefly."
GREEDY = {"temperature": 0}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Server]:
    paced = {"model_name": "echo", "consumer_group": "paced", "reader_id": "paced", "echo_token_delay_ms": 1500}
    yield from hermes_server(tmp_path_factory, redis_url, "anthropic", [HERMES_READER, paced], inference_api_key=KEY)


@pytest.fixture(scope="module")
def base(server: Server) -> str:
    return server.port_url("openai_port")


@pytest.fixture(scope="module")
def claude(base: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=base, api_key=KEY, max_retries=0, timeout=120)


def _create(client: anthropic.Anthropic, **kwargs: Any) -> Any:
    kwargs.setdefault("model", "hermes")
    kwargs.setdefault("messages", ASK)
    kwargs.setdefault("max_tokens", 40)
    kwargs.setdefault("extra_body", GREEDY)
    return client.messages.create(**kwargs)


def _text(message: Any) -> str:
    return "".join(b.text for b in message.content if b.type == "text")


def _prompt_tokens(usage: Any) -> int:
    """Anthropic's total: the uncached input tokens and those read from (or written to) the cache."""
    return usage.input_tokens + (usage.cache_read_input_tokens or 0) + (usage.cache_creation_input_tokens or 0)


def _tool_uses(message: Any) -> list[tuple[str, dict[str, Any]]]:
    uses = []
    for block in message.content:
        if block.type == "tool_use":
            assert re.fullmatch(r"toolu_[0-9a-f]{24}", block.id), block.id
            jsonschema.validate(block.input, SCHEMAS[block.name])
            uses.append((block.name, block.input))
    return uses


# --- messages -----------------------------------------------------------------------------------------------------
def test_a_message_is_the_chat_completion_of_the_same_conversation(claude: anthropic.Anthropic, base: str) -> None:
    system = [{"type": "text", "text": "Answer"},
              {"type": "text", "text": "briefly.", "cache_control": {"type": "ephemeral"}}]
    m = _create(claude, system=system, metadata={"user_id": "u-1"})
    assert re.fullmatch(r"msg_[0-9a-f]{24}", m.id) and m.type == "message" and m.role == "assistant"
    assert m.model == "hermes" and m.stop_reason in ("end_turn", "max_tokens") and m.stop_sequence is None
    assert [b.type for b in m.content] == ["text"] and m.content[0].text
    assert 0 < m.usage.output_tokens <= 40 and m.usage.cache_creation_input_tokens == 0
    chat = openai.OpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0, timeout=120).chat.completions.create(
        model="hermes", messages=[{"role": "system", "content": "Answer\n\nbriefly."}, *ASK], max_tokens=40,
        temperature=0)
    assert chat.choices[0].message.content == _text(m)
    assert chat.usage is not None and chat.usage.prompt_tokens == _prompt_tokens(m.usage)
    assert chat.usage.completion_tokens == m.usage.output_tokens
    assert {"length": "max_tokens", "stop": "end_turn"}[chat.choices[0].finish_reason] == m.stop_reason


def test_max_tokens_ends_with_max_tokens(claude: anthropic.Anthropic) -> None:
    m = _create(claude, max_tokens=3)
    assert m.stop_reason == "max_tokens" and m.usage.output_tokens == 3 and m.stop_sequence is None


def test_stop_sequences_cut_the_text_and_are_named(claude: anthropic.Anthropic) -> None:
    whole = _text(_create(claude))
    assert len(whole) > 6, whole
    stop = whole[len(whole) // 2:len(whole) // 2 + 2]
    expected = whole[:whole.find(stop)]
    m = _create(claude, stop_sequences=["\x00never", stop])
    assert m.stop_reason == "stop_sequence" and m.stop_sequence == stop
    assert _text(m) == expected
    with claude.messages.stream(model="hermes", messages=ASK, max_tokens=40, stop_sequences=[stop],
                                extra_body=GREEDY) as stream:
        streamed = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed == expected == _text(final)
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == stop


def test_a_raw_stream_has_anthropics_events_and_joins_to_the_whole_message(claude: anthropic.Anthropic) -> None:
    whole = _create(claude)
    events = list(_create(claude, stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds[1] == "content_block_start" and kinds[-3] == "content_block_stop"
    assert set(kinds[2:-3]) == {"content_block_delta"} and len(kinds) > 6  # piece by piece
    start = events[0].message
    assert start.id.startswith("msg_") and start.content == [] and start.stop_reason is None
    assert "".join(e.delta.text for e in events if e.type == "content_block_delta") == _text(whole)
    delta = events[-2]
    assert delta.delta.stop_reason == whole.stop_reason and delta.usage.output_tokens == whole.usage.output_tokens
    assert _prompt_tokens(delta.usage) == _prompt_tokens(whole.usage)


def test_the_stream_helper_gives_the_whole_message(claude: anthropic.Anthropic) -> None:
    whole = _create(claude, system=SYSTEM)
    with claude.messages.stream(model="hermes", system=SYSTEM, messages=ASK, max_tokens=40,
                                extra_body=GREEDY) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(texts) > 1 and "".join(texts) == _text(whole) == _text(final)
    assert final.stop_reason == whole.stop_reason and final.usage.output_tokens == whole.usage.output_tokens
    assert _prompt_tokens(final.usage) == _prompt_tokens(whole.usage) > 0


# --- tools --------------------------------------------------------------------------------------------------------
def test_a_forced_tool_is_called_with_an_input_that_follows_its_schema(claude: anthropic.Anthropic) -> None:
    choice = {"type": "tool", "name": "get_weather"}
    m = _create(claude, tools=TOOLS, tool_choice=choice, max_tokens=120)
    assert m.stop_reason == "tool_use" and [name for name, _ in _tool_uses(m)] == ["get_weather"]
    assert [b.type for b in m.content] == ["tool_use"]
    with claude.messages.stream(model="hermes", messages=ASK, max_tokens=120, tools=TOOLS, tool_choice=choice,
                                extra_body=GREEDY) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use" and _tool_uses(final) == _tool_uses(m)
    for _ in range(2):  # sampled: whatever the model picks, the grammar lets it make one call
        one = _create(claude, tools=TOOLS, max_tokens=120,
                      tool_choice={"type": "any", "disable_parallel_tool_use": True},
                      extra_body={"temperature": 1, "top_k": 50, "top_p": 0.95})
        assert one.stop_reason == "tool_use" and len(_tool_uses(one)) == 1, one.content


def test_a_conversation_with_tool_use_and_tool_result(claude: anthropic.Anthropic) -> None:
    first = _create(claude, tools=TOOLS, tool_choice={"type": "tool", "name": "get_weather"}, max_tokens=120)
    call = first.content[0]
    history = [*ASK, {"role": "assistant", "content": first.content},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21 C"}]}]
    m = _create(claude, messages=history, tools=TOOLS, tool_choice={"type": "none"}, max_tokens=20)
    assert m.stop_reason in ("end_turn", "max_tokens") and not _tool_uses(m)
    assert _prompt_tokens(m.usage) > _prompt_tokens(first.usage)  # the call and its result were rendered
    counted = claude.messages.count_tokens(model="hermes", messages=history, tools=TOOLS, tool_choice={"type": "none"})
    assert counted.input_tokens == _prompt_tokens(m.usage)
    failed = [*history[:2], {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": call.id, "content": [{"type": "text", "text": "sunny, 21 C"}],
         "is_error": True}]}]
    assert claude.messages.count_tokens(model="hermes", messages=failed, tools=TOOLS,
                                        tool_choice={"type": "none"}).input_tokens > counted.input_tokens
    with pytest.raises(anthropic.BadRequestError) as exc:  # a result for a call nobody made
        _create(claude, messages=[*history[:2], {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_nope", "content": "x"}]}], tools=TOOLS)
    assert "toolu_nope" in exc.value.message and "messages.2.content.0.tool_use_id" in exc.value.message


def test_count_tokens_counts_what_the_generation_sees(claude: anthropic.Anthropic) -> None:
    m = _create(claude, system=SYSTEM, max_tokens=5)
    counted = claude.messages.count_tokens(model="hermes", system=SYSTEM, messages=ASK)
    assert counted.input_tokens == _prompt_tokens(m.usage) > 0
    with_tools = claude.messages.count_tokens(model="hermes", system=SYSTEM, messages=ASK, tools=TOOLS)
    assert with_tools.input_tokens > counted.input_tokens  # the template renders the tools
    m = _create(claude, system=SYSTEM, tools=TOOLS, max_tokens=5)
    assert _prompt_tokens(m.usage) == with_tools.input_tokens
    with pytest.raises(anthropic.BadRequestError) as exc:
        claude.messages.count_tokens(model="hermes", messages=ASK, extra_body={"max_tokens": 5})
    assert "max_tokens" in exc.value.message


# --- refusals and errors ------------------------------------------------------------------------------------------
def _refused(exc: pytest.ExceptionInfo[anthropic.APIStatusError], status: int, kind: str, *words: str) -> None:
    body = exc.value.body
    assert exc.value.status_code == status and isinstance(body, dict), body
    assert body["type"] == "error" and body["error"]["type"] == kind, body
    assert all(w in body["error"]["message"] for w in words), body


def test_unsupported_and_malformed_requests_are_400s_naming_the_field(claude: anthropic.Anthropic) -> None:
    cases: list[tuple[dict[str, Any], tuple[str, ...]]] = [
        ({"extra_body": {"frobnicate": 1}}, ("frobnicate",)),
        ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, ("thinking",)),
        ({"extra_body": {"mcp_servers": [{"type": "url", "url": "http://x", "name": "x"}]}}, ("mcp_servers",)),
        ({"service_tier": "standard_only"}, ("service_tier",)),
        ({"max_tokens": anthropic.omit}, ("max_tokens", "required")),
        ({"messages": [{"role": "robot", "content": "hi"}]}, ("messages.0.role", "robot")),
        ({"messages": [{"role": "user", "content": [{"type": "image", "source": {
            "type": "base64", "media_type": "image/png", "data": "AAAA"}}]}]}, ("messages.0.content", "image")),
        ({"messages": [*ASK, {"role": "assistant", "content": "The answer is"}]}, ("prefill",)),
        ({"extra_body": {"temperature": 1.5}}, ("temperature",)),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, ("tools.0", "server tools")),
        ({"tools": TOOLS, "tool_choice": {"type": "tool", "name": "nope"}}, ("tool_choice.name", "nope")),
    ]
    for kwargs, words in cases:
        with pytest.raises(anthropic.BadRequestError) as exc:
            _create(claude, **kwargs)
        _refused(exc, 400, "invalid_request_error", *words)


def test_an_unknown_model_is_not_found(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as exc:
        _create(claude, model="no-such-group")
    _refused(exc, 404, "not_found_error", "no-such-group")
    with pytest.raises(anthropic.BadRequestError) as bad:  # the echo model's template shows no tool-call format
        _create(claude, model="paced", tools=TOOLS)
    _refused(bad, 400, "invalid_request_error", "tools")


def test_a_wrong_or_missing_key_is_an_authentication_error(base: str) -> None:
    wrong = anthropic.Anthropic(base_url=base, api_key="sk-wrong", max_retries=0, timeout=30)
    with pytest.raises(anthropic.AuthenticationError) as exc:
        _create(wrong)
    _refused(exc, 401, "authentication_error")
    with pytest.raises(anthropic.AuthenticationError) as exc:
        wrong.messages.count_tokens(model="hermes", messages=ASK)
    _refused(exc, 401, "authentication_error")
    r = httpx.post(base + "/v1/messages", json={"model": "hermes", "max_tokens": 5, "messages": ASK}, timeout=30)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    r = httpx.post(base + "/v1/chat/completions", json={"model": "hermes", "messages": ASK}, timeout=30)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"  # OpenAI's paths keep theirs


def test_the_ports_own_answers_speak_anthropics_envelope(base: str, server: Server) -> None:
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
    cases = [
        (httpx.get(base + "/v1/messages", headers=headers, timeout=30), 405, "invalid_request_error"),
        (httpx.post(base + "/v1/messages/nope", headers=headers, json={}, timeout=30), 404, "not_found_error"),
        (httpx.post(base + "/v1/messages", headers=headers, content=b"{not json", timeout=30), 400,
         "invalid_request_error"),
        (httpx.post(base + "/v1/messages", headers={**headers, "content-type": "application/json"},
                    content=b" " * 2_200_000, timeout=30), 413, "request_too_large"),
    ]
    for r, status, kind in cases:
        assert r.status_code == status, r.text
        body = r.json()
        assert body["type"] == "error" and body["error"]["type"] == kind and body["error"]["message"], body
    doc = httpx.get(base + "/openapi.json", headers=headers, timeout=30).json()
    op = doc["paths"]["/v1/messages"]["post"]
    body = op["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/MessagesRequest"}
    assert set(op["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    assert op["responses"]["400"]["content"]["application/json"]["schema"]["properties"]["type"] == {"const": "error"}
    assert "/v1/messages/count_tokens" in doc["paths"]


def test_a_failure_mid_stream_is_an_error_event(claude: anthropic.Anthropic, server: Server) -> None:
    pid = server.reader_pid("paced")
    stream = _create(claude, model="paced", messages=[{"role": "user", "content": "one two three four"}],
                     max_tokens=10, stream=True)
    events = iter(stream)
    seen = [next(events).type]
    while seen[-1] != "content_block_delta":
        seen.append(next(events).type)
    os.kill(pid, signal.SIGSTOP)  # stopped, not busy: no more tokens and no more beats
    try:
        with pytest.raises(anthropic.APIStatusError) as exc:
            for e in events:
                seen.append(e.type)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert seen[:3] == ["message_start", "content_block_start", "content_block_delta"]
    body = exc.value.body
    assert isinstance(body, dict) and body["type"] == "error", body
    assert body["error"]["type"] == "timeout_error" and "reader_message_timeout_ms" in body["error"]["message"]
    assert json.dumps(body)  # a plain JSON body, as Anthropic sends it


def test_metrics_count_the_routes(claude: anthropic.Anthropic, server: Server) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    def counts() -> dict[tuple[str, str], float]:
        text = httpx.get(server.mgmt + "/metrics", timeout=10, headers={"Authorization": f"Bearer {KEY}"}).text
        return {(s.labels["path"], s.labels["status"]): s.value for family in text_string_to_metric_families(text)
                for s in family.samples if s.name == "http_requests_total" and "messages" in s.labels.get("path", "")}

    before = counts()
    claude.messages.create(model="hermes", max_tokens=3, messages=ASK, extra_body=GREEDY)
    claude.messages.count_tokens(model="hermes", messages=ASK)
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(model="hermes", max_tokens=3, messages=ASK, extra_body={"thinking": {}})
    after = counts()
    delta = {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}
    assert delta == {("/v1/messages", "200"): 1, ("/v1/messages/count_tokens", "200"): 1,
                     ("/v1/messages", "400"): 1}, delta
