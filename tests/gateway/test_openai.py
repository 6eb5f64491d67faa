"""The OpenAI-compatible port end to end, through the official `openai` client (sync and async).

One server for the module: an echo reader in `primary` (its chat template renders `role: content` lines and it
generates the prompt back), a tiny random Llama in `llama` (a real tokenizer and chat template) and the bundled
MiniLM in `embed`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import Iterator

import httpx
import openai
import pytest

from support.clients import collect_stream, echo_tokens, stream_logprobs
from support.models import build_llama
from support.servers import Server, ServerFactory

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
ECHO_CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hello to the world"}]
ECHO_RENDERED = "system: be brief\nuser: say hello to the world\nassistant: "


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Server]:
    from support.servers import server_factory

    repo = tmp_path_factory.mktemp("artefacts")
    build_llama(repo / "tiny-llama")
    servers: list[Server] = []
    make: ServerFactory = server_factory(tmp_path_factory.mktemp("openai"), redis_url, servers)
    readers = [
        {"model_name": "echo", "consumer_group": "primary", "reader_id": "echo-0", "max_batch_size": 64},
        {"model_name": "tiny-llama", "consumer_group": "llama", "reader_id": "llama", "max_batch_size": 8,
         "max_sequence_length": 256},
        {"model_name": MINILM, "consumer_group": "embed", "reader_id": "minilm", "max_batch_size": 32},
    ]
    srv = make(readers=readers, repository_path=str(repo), reserved_consumers="", request_timeout_s=60.0)
    yield srv
    srv.stop()



@pytest.fixture
def aclient(server: Server) -> openai.AsyncOpenAI:
    """One per test: an async client belongs to the event loop it first ran on (each test runs its own)."""
    return openai.AsyncOpenAI(base_url=server.port_url("openai_port") + "/v1", api_key="unused", max_retries=0,
                              timeout=60)


# --- chat completions ---------------------------------------------------------------------------------------------
def test_chat_renders_the_template_and_counts_usage(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="primary", messages=ECHO_CHAT)  # type: ignore[arg-type]
    assert r.object == "chat.completion" and r.model == "primary" and r.id.startswith("chatcmpl-")
    assert len(r.choices) == 1
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == ECHO_RENDERED
    assert choice.finish_reason == "stop"
    words = len(echo_tokens(ECHO_RENDERED))
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (words, words, 2 * words)


def test_chat_max_tokens_n_and_stop(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="primary", messages=ECHO_CHAT, max_tokens=3, n=3)  # type: ignore[arg-type]
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert {c.message.content for c in r.choices} == {"system: be brief"}
    assert {c.finish_reason for c in r.choices} == {"length"}
    assert r.usage is not None and r.usage.completion_tokens == 9  # 3 choices of 3 tokens; the prompt counted once
    r = client.chat.completions.create(model="primary", messages=ECHO_CHAT,  # type: ignore[arg-type]
                                       max_completion_tokens=50, stop=["hello", "brief"])
    assert r.choices[0].message.content == "system: be "
    assert r.choices[0].finish_reason == "stop"


def test_chat_stream_joins_to_the_plain_answer(client: openai.OpenAI) -> None:
    plain = client.chat.completions.create(model="primary", messages=ECHO_CHAT)  # type: ignore[arg-type]
    stream = client.chat.completions.create(model="primary", messages=ECHO_CHAT, stream=True)  # type: ignore[arg-type]
    texts, reasons, chunks = collect_stream(stream)
    assert texts == {0: plain.choices[0].message.content}
    assert reasons == {0: "stop"}
    assert all(c.object == "chat.completion.chunk" and c.usage is None for c in chunks)  # type: ignore[attr-defined]
    assert len(chunks) > 5  # token by token


def test_chat_stream_include_usage_ends_with_a_usage_chunk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="primary", messages=ECHO_CHAT, stream=True, n=2,  # type: ignore[arg-type]
                                            stream_options={"include_usage": True})
    texts, reasons, chunks = collect_stream(stream)
    assert texts == {0: ECHO_RENDERED, 1: ECHO_RENDERED} and reasons == {0: "stop", 1: "stop"}
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None  # type: ignore[attr-defined]
    words = len(echo_tokens(ECHO_RENDERED))
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (words, 2 * words)  # type: ignore[attr-defined]
    assert all(c.usage is None for c in chunks[:-1])  # type: ignore[attr-defined]


def test_chat_stream_stops_forwarding_at_a_stop_string(client: openai.OpenAI) -> None:
    for stop in (["hello"], ["lo to"], ["xyz", "user:"]):
        plain = client.chat.completions.create(model="primary", messages=ECHO_CHAT, stop=stop)  # type: ignore[arg-type]
        texts, reasons, _ = collect_stream(client.chat.completions.create(
            model="primary", messages=ECHO_CHAT, stop=stop, stream=True))  # type: ignore[arg-type]
        assert texts == {0: plain.choices[0].message.content}, stop
        assert reasons == {0: "stop"}
        assert not any(s in texts[0] for s in stop)


def test_chat_logprobs_follow_the_text_plain_streamed_and_cut(client: openai.OpenAI) -> None:
    """The echo reader is certain of every token: log probability 0, itself the most likely."""
    for stop in (None, ["lo to"]):
        plain = client.chat.completions.create(model="primary", messages=ECHO_CHAT, logprobs=True,  # type: ignore[arg-type]
                                               top_logprobs=1, stop=stop)
        choice = plain.choices[0]
        assert choice.logprobs is not None and choice.logprobs.content
        entries, content = choice.logprobs.content, choice.message.content or ""
        joined = "".join(e.token for e in entries)
        # Cut by a stop string, the answer keeps every token that begins before the cut (the last one whole).
        assert joined == content if stop is None else joined.startswith(content) and \
            len(joined) - len(entries[-1].token) < len(content)
        assert all(e.logprob == 0.0 and [t.token for t in e.top_logprobs] == [e.token] for e in entries)
        assert all(bytes(e.bytes or []) == e.token.encode() for e in entries)
        streamed = stream_logprobs(client.chat.completions.create(
            model="primary", messages=ECHO_CHAT, logprobs=True, top_logprobs=1, stop=stop, stream=True))  # type: ignore[arg-type]
        assert [e.token for e in streamed] == [e.token for e in entries]  # type: ignore[attr-defined]
    without = client.chat.completions.create(model="primary", messages=ECHO_CHAT)  # type: ignore[arg-type]
    assert without.choices[0].logprobs is None


def test_completion_logprobs_in_the_legacy_columns(client: openai.OpenAI) -> None:
    answer = client.completions.create(model="primary", prompt="one two three", logprobs=2, max_tokens=8)
    lp = answer.choices[0].logprobs
    assert lp is not None and "".join(lp.tokens or []) == answer.choices[0].text == "one two three"
    assert lp.token_logprobs == [0.0, 0.0, 0.0] and lp.text_offset == [0, 3, 7]
    assert lp.top_logprobs == [{" two" if i == 1 else t: 0.0} for i, t in enumerate(["one", " two", " three"])]


def test_llama_logprobs_are_the_models(client: openai.OpenAI) -> None:
    """Greedy: each chosen token is the model's most likely one; the alternatives come in falling order."""
    messages = [{"role": "user", "content": "hello there"}]
    plain = client.chat.completions.create(model="llama", messages=messages, temperature=0, max_tokens=10,  # type: ignore[arg-type]
                                           logprobs=True, top_logprobs=3)
    entries = plain.choices[0].logprobs.content  # type: ignore[union-attr]
    assert entries and len(entries) <= 10
    for e in entries:
        tops = [t.logprob for t in e.top_logprobs]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True) and all(t <= 0 for t in tops)
        assert e.top_logprobs[0].token == e.token and e.logprob == pytest.approx(tops[0])
    streamed = stream_logprobs(client.chat.completions.create(
        model="llama", messages=messages, temperature=0, max_tokens=10, logprobs=True, top_logprobs=3,  # type: ignore[arg-type]
        stream=True))
    assert [(e.token, round(e.logprob, 4)) for e in streamed] == [(e.token, round(e.logprob, 4)) for e in entries]  # type: ignore[attr-defined]


def test_llama_logprobs_are_placed_in_the_text_and_cut_with_it(client: openai.OpenAI) -> None:
    """Offsets come from the reader's text (the tokens decoded together), so a stop string cuts the entries exactly
    where it cuts the text, multi-byte characters and all."""
    ask = {"model": "llama", "prompt": "Le café 日本語", "temperature": 0, "max_tokens": 24, "logprobs": 1}
    whole = client.completions.create(**ask)  # type: ignore[call-overload]
    text, lp = whole.choices[0].text, whole.choices[0].logprobs
    assert lp is not None and lp.text_offset and len(lp.tokens or []) == whole.usage.completion_tokens  # type: ignore[union-attr]
    assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0 and lp.text_offset[-1] < len(text)
    stop = text[len(text) // 2:][:2]
    if not stop.strip():
        pytest.skip("the random model's greedy text has no usable stop string here")
    cut = client.completions.create(**ask, stop=[stop])  # type: ignore[call-overload]
    kept = cut.choices[0].text
    assert kept == text[: text.find(stop)]
    assert cut.choices[0].logprobs.text_offset == [o for o in lp.text_offset if o < len(kept)]  # type: ignore[union-attr]


def test_logprob_budget_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="primary", messages=ECHO_CHAT, logprobs=True, top_logprobs=20,  # type: ignore[arg-type]
                                       n=100, max_tokens=1000)
    assert exc.value.body["param"] == "top_logprobs"  # type: ignore[index]


def test_async_client_chat_and_stream(aclient: openai.AsyncOpenAI) -> None:
    async def run() -> None:
        answers = await asyncio.gather(*(aclient.chat.completions.create(
            model="primary", messages=[{"role": "user", "content": f"number {i}"}]) for i in range(8)))
        assert [a.choices[0].message.content for a in answers] == [f"user: number {i}\nassistant: "
                                                                   for i in range(8)]
        stream = await aclient.chat.completions.create(model="primary", messages=ECHO_CHAT, stream=True,  # type: ignore[arg-type]
                                                       stream_options={"include_usage": True})
        text = ""
        async for chunk in stream:
            text += "".join(c.delta.content or "" for c in chunk.choices)
        assert text == ECHO_RENDERED

    asyncio.run(run())


# --- a real model: chat template, greedy determinism, constrained output ------------------------------------------
def test_llama_chat_template_greedy_and_stream(client: openai.OpenAI, server: Server) -> None:
    messages = [{"role": "user", "content": "hello there"}]
    first = client.chat.completions.create(model="llama", messages=messages, temperature=0, max_tokens=12)  # type: ignore[arg-type]
    again = client.chat.completions.create(model="llama", messages=messages, temperature=0, max_tokens=12)  # type: ignore[arg-type]
    assert first.choices[0].message.content == again.choices[0].message.content
    texts, reasons, _ = collect_stream(client.chat.completions.create(
        model="llama", messages=messages, temperature=0, max_tokens=12, stream=True))  # type: ignore[arg-type]
    assert texts == {0: first.choices[0].message.content}
    assert reasons == {0: first.choices[0].finish_reason}
    # The same prompt as the reader's own chat template gives: one BOS, not the template's and the tokenizer's.
    tokens = httpx.post(server.url + "/tokenize/llama", json={"text": "hello there", "use_chat_template": True},
                        timeout=30).json()
    assert first.usage is not None and first.usage.prompt_tokens == tokens["tokens_count"]
    assert first.usage.completion_tokens <= 12


def test_llama_seed_makes_sampling_repeatable(client: openai.OpenAI) -> None:
    """temperature 1 over a random model's vocabulary: without a seed two answers differ; with one they repeat,
    whatever else shares the batch, and the n choices of one request differ from each other."""
    messages = [{"role": "user", "content": "tell me something"}]

    def ask(seed: int | None, n: int = 1) -> list[str]:
        answer = client.chat.completions.create(model="llama", messages=messages, temperature=1.0,  # type: ignore[arg-type]
                                                max_tokens=16, seed=seed, n=n, extra_body={"min_tokens": 16})
        return [c.message.content or "" for c in answer.choices]

    assert ask(None) != ask(None)
    first = ask(7)
    assert ask(7) == first and ask(8) != first
    pair = ask(7, n=2)
    assert pair[0] == first[0] and pair[1] != pair[0]


def test_llama_response_format(client: openai.OpenAI) -> None:
    # no other keys: JSON Schema allows them unless told, and a random model given the choice goes on adding them
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
              "additionalProperties": False}
    r = client.chat.completions.create(
        model="llama", messages=[{"role": "user", "content": "give json"}], max_tokens=60, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}})
    assert r.choices[0].finish_reason == "stop", r.choices[0].message.content
    assert set(json.loads(r.choices[0].message.content or "")) == {"n"}
    r = client.chat.completions.create(model="llama", messages=[{"role": "user", "content": "json please"}],
                                       max_tokens=30, temperature=0, response_format={"type": "json_object"})
    assert (r.choices[0].message.content or "").lstrip().startswith("{")


# --- completions --------------------------------------------------------------------------------------------------
def test_completions_prompt_list_echo_and_n(client: openai.OpenAI) -> None:
    r = client.completions.create(model="primary", prompt=["one two three", "four five"], max_tokens=2, n=2)
    assert r.object == "text_completion"
    assert [c.text for c in r.choices] == ["one two", "one two", "four five", "four five"]
    assert [c.finish_reason for c in r.choices] == ["length", "length", "stop", "stop"]
    assert r.usage is not None and (r.usage.prompt_tokens, r.usage.completion_tokens) == (5, 8)
    r = client.completions.create(model="primary", prompt="alpha beta", echo=True)
    assert r.choices[0].text == "alpha betaalpha beta"
    stream = client.completions.create(model="primary", prompt="alpha beta gamma", echo=True, stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices) == "alpha beta gammaalpha beta gamma"


def test_completions_token_ids_use_the_readers_tokenizer(client: openai.OpenAI, server: Server) -> None:
    from transformers import AutoTokenizer

    tok_path = server.settings["repository_path"] + "/tiny-llama"
    token_ids = AutoTokenizer.from_pretrained(tok_path)("hello there")["input_ids"]
    by_ids = client.completions.create(model="llama", prompt=token_ids, max_tokens=5, temperature=0)
    by_text = client.completions.create(model="llama", prompt="hello there", max_tokens=5, temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model="primary", prompt=[1, 2, 3])  # the echo tokenizer has no ids
    assert exc.value.body["param"] == "prompt"  # type: ignore[index]


# --- embeddings ---------------------------------------------------------------------------------------------------
def test_embeddings_float_and_base64_equal_embed(client: openai.OpenAI, server: Server) -> None:
    texts = ["A man is playing a guitar.", "The stock market fell sharply today."]
    direct = httpx.post(server.url + "/embed", json={"text": texts, "consumer_group": "embed"}, timeout=60).json()
    floats = client.embeddings.create(model="embed", input=texts, encoding_format="float")
    assert [d.embedding for d in floats.data] == direct["result"]
    assert [d.index for d in floats.data] == [0, 1]
    assert floats.usage.prompt_tokens == floats.usage.total_tokens > 10
    # The same batch each time: a text embedded alone may differ from itself in a batch in the last bits.
    raw = httpx.post(server.port_url("openai_port") + "/v1/embeddings",
                     json={"input": texts, "model": "embed", "encoding_format": "base64"}, timeout=60).json()
    for item, vector in zip(raw["data"], direct["result"], strict=True):
        blob = base64.b64decode(item["embedding"])
        assert list(struct.unpack(f"<{len(blob) // 4}f", blob)) == vector
    default = client.embeddings.create(model="embed", input=texts)  # the client asks for base64 and decodes it
    assert [d.embedding for d in default.data] == direct["result"]


def test_embeddings_of_token_ids_and_the_takeoff_client_body(client: openai.OpenAI, server: Server) -> None:
    from transformers import AutoTokenizer

    from liftoff.readers.engines.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model(MINILM, server.settings["repository_path"], None)))
    ids = tokenizer("a guitar player")["input_ids"]
    by_ids = client.embeddings.create(model="embed", input=[ids], encoding_format="float")
    by_text = client.embeddings.create(model="embed", input=["a guitar player"], encoding_format="float")
    assert by_ids.usage.prompt_tokens == len(ids) == by_text.usage.prompt_tokens
    assert max(abs(a - b) for a, b in zip(by_ids.data[0].embedding, by_text.data[0].embedding, strict=True)) < 1e-5
    takeoff = httpx.post(server.port_url("openai_port") + "/v1/embeddings",
                         json={"input": "a guitar player", "model": "embed"}, timeout=60)
    assert takeoff.status_code == 200 and len(takeoff.json()["data"][0]["embedding"]) == 384


def test_async_embeddings(aclient: openai.AsyncOpenAI) -> None:
    async def run() -> list[int]:
        out = await asyncio.gather(*(aclient.embeddings.create(model="embed", input=f"text {i}") for i in range(4)))
        return [len(o.data[0].embedding) for o in out]

    assert asyncio.run(run()) == [384] * 4


# --- models -------------------------------------------------------------------------------------------------------
def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {"primary", "llama", "embed"}
    assert models["llama"].model_extra["model_names"] == ["tiny-llama"]  # type: ignore[index]
    assert models["embed"].model_extra["model_names"] == [MINILM]  # type: ignore[index]
    assert client.models.retrieve("primary").id == "primary"
    with pytest.raises(openai.NotFoundError) as exc:
        client.models.retrieve("nobody")
    assert exc.value.body["code"] == "model_not_found"  # type: ignore[index]


# --- errors -------------------------------------------------------------------------------------------------------
def test_unknown_model_is_404_model_not_found(client: openai.OpenAI) -> None:
    for call in (
        lambda: client.chat.completions.create(model="nobody", messages=ECHO_CHAT),  # type: ignore[arg-type]
        lambda: client.chat.completions.create(model="nobody", messages=ECHO_CHAT, stream=True),  # type: ignore[arg-type]
        lambda: client.completions.create(model="nobody", prompt="x"),
        lambda: client.embeddings.create(model="nobody", input="x"),
    ):
        with pytest.raises(openai.NotFoundError) as exc:
            call()
        assert exc.value.body["code"] == "model_not_found" and exc.value.body["param"] == "model"  # type: ignore[index]


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"temperature": 5}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"n": 0}, "n"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"frequency_penalty": 1}, "frequency_penalty"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"logit_bias": {"1": 5}}, "logit_bias"),
    ({"stop": ["ok", ""]}, "stop"),
    ({"extra_body": {"no_such_thing": 1}}, "no_such_thing"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"seed": 2**64}, "seed"),
])
def test_bad_parameters_are_400_naming_them(client: openai.OpenAI, kwargs: dict[str, object], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="primary", messages=ECHO_CHAT, **kwargs)  # type: ignore[arg-type]
    body = exc.value.body
    assert body["type"] == "invalid_request_error" and body["param"] == param, body  # type: ignore[index]
    assert param.split(".")[0] in body["message"]  # type: ignore[index]


def test_completion_and_embedding_refusals(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model="primary", prompt="x", suffix="tail")
    assert exc.value.body["param"] == "suffix"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as exc:
        client.embeddings.create(model="embed", input="x", dimensions=8)
    assert exc.value.body["param"] == "dimensions"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError):  # an echo reader does not embed: the reader's refusal, as a 400
        client.embeddings.create(model="primary", input="x")


def test_chat_on_a_model_that_does_not_generate_is_the_readers_400(client: openai.OpenAI) -> None:
    """Chats are rendered by the reader that takes them: an embedding reader refuses the work, in one hop."""
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="embed", messages=[{"role": "user", "content": "hi"}])
    assert "does not serve generate" in exc.value.body["message"]  # type: ignore[index]


def test_envelope_for_malformed_bodies_and_unknown_routes(server: Server) -> None:
    base = server.port_url("openai_port")
    r = httpx.post(base + "/v1/chat/completions", content=b"{not json", timeout=10,
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = httpx.post(base + "/v1/nothing", json={}, timeout=10)
    assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = httpx.get(base + "/v1/chat/completions", timeout=10)
    assert r.status_code == 405 and "error" in r.json() and isinstance(r.json()["error"], dict)
    limit = 2_097_152
    r = httpx.post(base + "/v1/completions", content=b"x" * (limit + 1), timeout=10)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert httpx.get(base + "/healthz", timeout=10).status_code == 200
