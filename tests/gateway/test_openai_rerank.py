"""Rerank (`/v1/rerank`, `/v2/rerank`) and score (`/v1/score`) on the OpenAI port, over plain HTTP.

One server for the module: tiny random-weight BERT cross-encoders with one label (`rr`), two labels (`pair`) and
three (`nli`, refused), the bundled MiniLM (`embed`, cosine similarity) and an echo reader (`primary`, a generation
model, refused). Every score is checked against what the same model answers on `/classify` or `/v1/embeddings`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.models import build_bert_classifier
from support.servers import Server, ServerFactory

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
LIMIT = 8  # max_user_batch_size
QUERY = "the quick brown fox"
DOCS = ["the lazy dog", "a reader holds a model", "hello world how are you", "the quick brown fox jumps",
        "numbers and symbols", "continuous batching"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Server]:
    from support.servers import server_factory

    repo = tmp_path_factory.mktemp("artefacts")
    build_bert_classifier(repo / "ce-one", labels=("relevance",))
    build_bert_classifier(repo / "ce-two", seed=1)
    build_bert_classifier(repo / "ce-three", labels=("contradiction", "entailment", "neutral"))
    servers: list[Server] = []
    make: ServerFactory = server_factory(tmp_path_factory.mktemp("rerank"), redis_url, servers)
    readers = [
        {"model_name": "echo", "consumer_group": "primary", "reader_id": "echo-0"},
        {"model_name": "ce-one", "consumer_group": "rr", "reader_id": "rr-0"},
        {"model_name": "ce-two", "consumer_group": "pair", "reader_id": "pair-0"},
        {"model_name": "ce-three", "consumer_group": "nli", "reader_id": "nli-0"},
        {"model_name": MINILM, "consumer_group": "embed", "reader_id": "minilm", "max_batch_size": 32},
    ]
    srv = make(readers=readers, repository_path=str(repo), reserved_consumers="", request_timeout_s=60.0,
               max_user_batch_size=LIMIT)
    yield srv
    srv.stop()


def openai(server: Server, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(server.port_url("openai_port") + path, json=body, timeout=60)


def ok(server: Server, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = openai(server, path, body)
    assert r.status_code == 200, r.text
    return r.json()


def refused(server: Server, path: str, body: dict[str, Any], status: int = 400) -> dict[str, Any]:
    r = openai(server, path, body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    return error


def classify(server: Server, group: str, pairs: list[list[str]]) -> list[dict[str, Any]]:
    r = httpx.post(server.url + "/classify", json={"text": pairs, "consumer_group": group}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["result"]


def embeddings(server: Server, texts: list[str]) -> list[list[float]]:
    data = ok(server, "/v1/embeddings", {"model": "embed", "input": texts})["data"]
    return [d["embedding"] for d in data]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (math.hypot(*a) * math.hypot(*b))


def tokens(server: Server, reader_id: str, texts: list[str]) -> int:
    """Each text's token count by the reader's own tokenizer (`/tokenize/{reader_id}` on the inference port)."""
    return sum(httpx.post(f"{server.url}/tokenize/{reader_id}", json={"text": t}, timeout=30).json()["tokens_count"]
               for t in texts)


# --- rerank -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank"])
def test_rerank_orders_by_the_cross_encoders_score(server: Server, path: str) -> None:
    answer = ok(server, path, {"model": "rr", "query": QUERY, "documents": DOCS})
    assert answer["id"].startswith("rerank-") and answer["model"] == "rr"
    results = answer["results"]
    assert sorted(r["index"] for r in results) == list(range(len(DOCS)))
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(DOCS)  # random weights: all differ
    expected = [c["score"] for c in classify(server, "rr", [[QUERY, d] for d in DOCS])]  # the sigmoid of the logit
    for r in results:
        assert r["relevance_score"] == pytest.approx(expected[r["index"]], rel=1e-5)
        assert r["document"] == {"text": DOCS[r["index"]]}  # returned by default, and `index` points back
    assert answer["usage"] == {"total_tokens": len(DOCS) * tokens(server, "rr-0", [QUERY]) +
                               tokens(server, "rr-0", DOCS)}


def test_rerank_two_label_model_scores_the_second_label(server: Server) -> None:
    results = ok(server, "/v1/rerank", {"model": "pair", "query": QUERY, "documents": DOCS})["results"]
    expected = [c["scores"]["positive"] for c in classify(server, "pair", [[QUERY, d] for d in DOCS])]
    assert [r["index"] for r in results] == sorted(range(len(DOCS)), key=lambda i: expected[i], reverse=True)
    for r in results:
        assert r["relevance_score"] == pytest.approx(expected[r["index"]], rel=1e-5)


def test_rerank_top_n_return_documents_and_object_documents(server: Server) -> None:
    full = ok(server, "/v1/rerank", {"model": "rr", "query": QUERY, "documents": DOCS})["results"]
    objects = [{"text": d} for d in DOCS[:3]] + DOCS[3:]
    top = ok(server, "/v1/rerank", {"model": "rr", "query": QUERY, "documents": objects, "top_n": 2,
                                    "return_documents": False})["results"]
    assert [r["index"] for r in top] == [r["index"] for r in full[:2]]
    assert all(set(r) == {"index", "relevance_score"} for r in top)
    assert len(ok(server, "/v1/rerank", {"model": "rr", "query": QUERY, "documents": DOCS,
                                         "top_n": 50})["results"]) == len(DOCS)
    assert len(ok(server, "/v1/rerank", {"model": "rr", "query": QUERY, "documents": DOCS,
                                         "top_n": 0})["results"]) == len(DOCS)  # vLLM's default: every document


def test_rerank_over_an_embedding_model_is_cosine_similarity(server: Server) -> None:
    docs = ["a fox that is quick and brown", "the stock market fell today", "a fast brown fox", "the quick brown fox"]
    answer = ok(server, "/v1/rerank", {"model": "embed", "query": QUERY, "documents": docs})
    q, *vectors = embeddings(server, [QUERY, *docs])
    expected = [cosine(q, v) for v in vectors]
    assert [r["index"] for r in answer["results"]] == sorted(range(len(docs)), key=lambda i: -expected[i])
    for r in answer["results"]:
        assert r["relevance_score"] == pytest.approx(expected[r["index"]], abs=1e-5)
    assert answer["results"][0]["index"] == 3 and answer["results"][0]["relevance_score"] == pytest.approx(1, abs=1e-5)
    assert answer["results"][-1]["index"] == 1  # a real model: the unrelated sentence last
    assert answer["usage"]["total_tokens"] == tokens(server, "minilm", docs)  # the query is docs[3]: embedded once


# --- score ------------------------------------------------------------------------------------------------------
def test_score_one_to_one_one_to_n_and_n_to_n(server: Server) -> None:
    one = ok(server, "/v1/score", {"model": "rr", "text_1": QUERY, "text_2": DOCS[0]})
    assert one["id"].startswith("score-") and one["object"] == "list" and one["model"] == "rr"
    assert isinstance(one["created"], int)
    expected = classify(server, "rr", [[QUERY, DOCS[0]]])[0]["score"]
    assert one["data"] == [{"index": 0, "object": "score", "score": pytest.approx(expected, rel=1e-5)}]
    used = tokens(server, "rr-0", [QUERY, DOCS[0]])
    assert one["usage"] == {"prompt_tokens": used, "total_tokens": used}

    fan = ok(server, "/v1/score", {"model": "rr", "text_1": [QUERY], "text_2": DOCS[:4]})["data"]
    expected_fan = [c["score"] for c in classify(server, "rr", [[QUERY, d] for d in DOCS[:4]])]
    assert [d["index"] for d in fan] == [0, 1, 2, 3]  # in input order, not sorted
    assert [d["score"] for d in fan] == pytest.approx(expected_fan, rel=1e-5)

    firsts = ["hello world", "a model", "the lazy dog"]
    paired = ok(server, "/v1/score", {"model": "rr", "text_1": firsts, "text_2": DOCS[:3]})["data"]
    pairs = [[a, b] for a, b in zip(firsts, DOCS[:3], strict=True)]
    expected_pairs = [c["score"] for c in classify(server, "rr", pairs)]
    assert [d["score"] for d in paired] == pytest.approx(expected_pairs, rel=1e-5)


def test_score_over_an_embedding_model(server: Server) -> None:
    firsts, seconds = ["a quick brown fox", "markets fell"], ["the quick brown fox", "a lazy dog"]
    data = ok(server, "/v1/score", {"model": "embed", "text_1": firsts, "text_2": seconds})["data"]
    vectors = embeddings(server, firsts + seconds)
    assert [d["score"] for d in data] == pytest.approx([cosine(vectors[0], vectors[2]), cosine(vectors[1], vectors[3])],
                                                       abs=1e-5)


# --- refusals ---------------------------------------------------------------------------------------------------
def test_refusals_name_what_was_wrong(server: Server) -> None:
    base = {"model": "rr", "query": QUERY, "documents": DOCS}
    error = refused(server, "/v1/rerank", {**base, "rank_fields": ["title"]})
    assert error["param"] == "rank_fields" and "Unrecognized request argument" in error["message"]
    assert refused(server, "/v1/rerank", {**base, "user": "me"})["param"] == "user"  # nothing accepted and ignored
    assert refused(server, "/v1/score", {"model": "rr", "text_1": "a", "text_2": "b", "truncate_prompt_tokens": 5})[
        "param"] == "truncate_prompt_tokens"
    assert refused(server, "/v1/rerank", {**base, "documents": []})["param"] == "documents"
    assert refused(server, "/v1/rerank", {**base, "documents": [{"text": "a", "title": "b"}]})["param"].startswith(
        "documents.0")
    assert refused(server, "/v1/rerank", {**base, "top_n": -1})["param"] == "top_n"
    assert refused(server, "/v1/rerank", {**base, "return_documents": "yes"})["param"] == "return_documents"
    assert refused(server, "/v1/rerank", {"model": "rr", "documents": DOCS})["param"] == "query"
    assert refused(server, "/v1/score", {"model": "rr", "text_1": [], "text_2": "b"})["param"] == "text_1"

    mismatch = refused(server, "/v1/score", {"model": "rr", "text_1": ["a", "b"], "text_2": ["c", "d", "e"]})
    assert mismatch["param"] == "text_2" and "text_1 holds 2 texts and text_2 3" in mismatch["message"]
    assert "text_1 holds 3 texts and text_2 1" in refused(
        server, "/v1/score", {"model": "rr", "text_1": ["a", "b", "c"], "text_2": "d"})["message"]

    generation = refused(server, "/v1/rerank", {**base, "model": "primary"})
    assert generation["param"] == "model" and "serves generation models" in generation["message"]
    nli = refused(server, "/v1/score", {"model": "nli", "text_1": "a", "text_2": "b"})
    assert nli["param"] == "model" and "3 labels" in nli["message"] and "neutral" in nli["message"]
    unknown = refused(server, "/v1/rerank", {**base, "model": "nobody"}, 404)
    assert unknown["code"] == "model_not_found"


def test_too_many_documents(server: Server) -> None:
    many = [f"document {i}" for i in range(LIMIT + 1)]
    error = refused(server, "/v1/rerank", {"model": "rr", "query": QUERY, "documents": many})
    assert error["param"] == "documents" and f"limit (max_user_batch_size) is {LIMIT}" in error["message"]
    assert refused(server, "/v1/score", {"model": "rr", "text_1": QUERY, "text_2": many})["param"] == "text_2"
    assert len(ok(server, "/v1/rerank", {"model": "rr", "query": QUERY, "documents": many[:LIMIT]})["results"]) == LIMIT
    # An embedding model reads the query too: LIMIT documents and the query are LIMIT + 1 texts.
    error = refused(server, "/v1/rerank", {"model": "embed", "query": QUERY, "documents": many[:LIMIT]})
    assert f"{LIMIT + 1} distinct texts to embed" in error["message"]
    assert len(ok(server, "/v1/rerank", {"model": "embed", "query": QUERY,
                                         "documents": many[:LIMIT - 1]})["results"]) == LIMIT - 1


# --- the port's document and metrics ----------------------------------------------------------------------------
def test_openapi_documents_the_routes(server: Server) -> None:
    doc = httpx.get(server.port_url("openai_port") + "/openapi.json", timeout=10).json()
    for path, model in [("/v1/rerank", "RerankRequest"), ("/v2/rerank", "RerankRequest"),
                        ("/v1/score", "ScoreRequest")]:
        body = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{model}"}
    assert {"query", "documents", "top_n", "return_documents"} <= set(doc["components"]["schemas"]["RerankRequest"][
        "properties"])


def test_metrics_count_the_routes(server: Server) -> None:
    def count(path: str, status: str) -> float:
        text = httpx.get(server.mgmt + "/metrics", timeout=10).text
        return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
                   if s.name == "http_requests_total" and s.labels == {"path": path, "status": status})

    before = {(p, s): count(p, s) for p in ("/v1/rerank", "/v2/rerank", "/v1/score") for s in ("200", "400")}
    ok(server, "/v1/rerank", {"model": "rr", "query": QUERY, "documents": DOCS[:2]})
    ok(server, "/v2/rerank", {"model": "rr", "query": QUERY, "documents": DOCS[:2]})
    ok(server, "/v1/score", {"model": "rr", "text_1": QUERY, "text_2": DOCS[0]})
    refused(server, "/v1/score", {"model": "rr", "text_1": QUERY})
    after = {k: count(*k) - v for k, v in before.items()}
    assert after == {("/v1/rerank", "200"): 1, ("/v2/rerank", "200"): 1, ("/v1/score", "200"): 1,
                     ("/v1/rerank", "400"): 0, ("/v2/rerank", "400"): 0, ("/v1/score", "400"): 1}
