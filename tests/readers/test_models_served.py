"""Real model readers behind the real gateway: a tiny Llama, the bundled MiniLM and a tiny classifier."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.models import build_bert_classifier, build_llama
from support.servers import Server, ServerFactory, parse_sse

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Server]:
    from support.servers import server_factory

    repo = tmp_path_factory.mktemp("artefacts")
    build_llama(repo / "tiny-llama")
    build_bert_classifier(repo / "tiny-classifier")
    servers: list[Server] = []
    make: ServerFactory = server_factory(tmp_path_factory.mktemp("models"), redis_url, servers)
    readers = [
        {"model_name": "tiny-llama", "consumer_group": "primary", "reader_id": "llama", "max_batch_size": 8,
         "max_sequence_length": 256},
        {"model_name": MINILM, "consumer_group": "embed", "reader_id": "minilm", "max_batch_size": 32},
        {"model_name": "tiny-classifier", "consumer_group": "classify", "reader_id": "clf"},
    ]
    server = make(readers=readers, repository_path=str(repo), reserved_consumers="", request_timeout_s=60.0)
    yield server
    server.stop()


def post(server: Server, path: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=60)


def test_status_shows_model_types(model_server: Server) -> None:
    live = model_server.status()["status"]["live_readers"]
    assert {k: v["model_type"] for k, v in live.items()} == {
        "llama": "generation", "minilm": "embedding", "clf": "classification"}


def test_greedy_generation_is_deterministic_and_streams_the_same_text(model_server: Server) -> None:
    body = {"text": "hello there", "max_new_tokens": 12, "sampling_topk": 1}
    first = post(model_server, "/generate", body)
    assert first.status_code == 200, first.text
    assert first.json() == post(model_server, "/generate", body).json()
    streamed = post(model_server, "/generate_stream", body)
    assert "".join(d for _, d in parse_sse(streamed.text)) == first.json()["text"]


def test_generation_metadata_and_limits(model_server: Server) -> None:
    r = post(model_server, "/generate", {"text": ["a b", "c d"], "max_new_tokens": 5, "min_new_tokens": 5,
                                         "return_metadata": True})
    assert r.status_code == 200, r.text
    assert [m["generated_tokens"] for m in r.json()["metadata"]] == [5, 5]
    too_long = post(model_server, "/generate", {"text": "word " * 400})
    assert too_long.status_code == 422 and "max_sequence_length" in too_long.json()["error"]


def test_constrained_output_through_the_gateway(model_server: Server) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    r = post(model_server, "/generate", {"text": "give json", "json_schema": schema, "max_new_tokens": 60})
    assert r.status_code == 200, r.text
    assert set(json.loads(r.json()["text"])) == {"n"}
    r = post(model_server, "/generate", {"text": "digits", "regex_string": "[0-9]{3}", "max_new_tokens": 10})
    assert re.fullmatch(r"[0-9]{3}", r.json()["text"]), r.text


def test_tokenizer_endpoints_on_a_real_tokenizer(model_server: Server) -> None:
    tokens = post(model_server, "/tokenize/llama", {"text": "hello there"}).json()
    assert tokens["tokens_count"] == len(tokens["tokens"]) > 0
    text = post(model_server, "/detokenize/llama", {"tokens": tokens["tokens"], "skip_special_tokens": True})
    assert text.json()["text"].strip() == "hello there"
    chat = post(model_server, "/chat_template/llama", {"inputs": [[{"role": "user", "content": "hi"}]]})
    assert "hi" in chat.json()["messages"][0]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_embeddings_of_the_bundled_minilm(model_server: Server) -> None:
    texts = ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply today."]
    r = post(model_server, "/embed", {"text": texts, "consumer_group": "embed"})
    assert r.status_code == 200, r.text
    vectors = r.json()["result"]
    assert len(vectors) == 3 and len(vectors[0]) == 384
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])
    single = post(model_server, "/embed", {"text": texts[0], "consumer_group": "embed"}).json()["result"]
    assert cosine(single, vectors[0]) > 0.999


def test_classification_of_texts_and_pairs(model_server: Server) -> None:
    r = post(model_server, "/classify", {"text": [["query", "passage one"], ["query", "passage two"]],
                                         "consumer_group": "classify"})
    assert r.status_code == 200, r.text
    results = r.json()["result"]
    assert len(results) == 2 and all(x["label"] in ("negative", "positive") for x in results)
    single = post(model_server, "/classify", {"text": "just one", "consumer_group": "classify"}).json()["result"]
    assert set(single["scores"]) == {"negative", "positive"}


def test_offline_missing_model_fails_cleanly(make_server: ServerFactory, tmp_path: Path) -> None:
    server = make_server(readers=[{"model_name": "someone/not-here", "reader_id": "missing"}], wait_healthy=False,
                         repository_path=str(tmp_path))
    from support.servers import wait_for

    wait_for(lambda: "missing" in server.status()["status"]["dead_readers"], 60, "failed reader", server)
    reason = server.status()["status"]["dead_readers"]["missing"]["error"]
    assert "someone/not-here" in reason
    wait_for(lambda: "not restarting" in server.log(), 30, "the supervisor giving up on it", server)


def test_a_reader_with_a_fallback_serves_it_and_says_why(make_server: ServerFactory, tmp_path: Path) -> None:
    """The shipped `primary` on an offline machine: the hub model can't be had, the echo fallback serves."""
    server = make_server(readers=[{"model_name": "someone/not-here", "fallback_model_name": "echo",
                                   "reader_id": "fb", "consumer_group": "primary"}],
                         repository_path=str(tmp_path))
    entry = server.status()["status"]["live_readers"]["fb"]
    assert entry["model_name"] == "echo"
    assert "someone/not-here" in entry["error"] and "liftoff serve --model" in entry["error"]
    r = post(server, "/generate", {"text": "hello world"})
    assert r.status_code == 200 and r.json()["text"] == "hello world"
    assert "serving the fallback model 'echo'" in server.log()


def test_a_loaded_reader_calibrates_the_fit_engine(model_server: Server) -> None:
    r = httpx.get(model_server.mgmt + "/api/v1/models/tiny-llama", timeout=30)
    assert r.status_code == 200, r.text
    row = next(m for m in r.json()["models"] if m["name"].endswith("tiny-llama"))
    assert row["basis"]["memory"] == "measured"
