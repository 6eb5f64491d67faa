"""Embeddings of the bundled MiniLM and classification with a tiny BERT, both dynamically batched."""

from __future__ import annotations

import asyncio
import math
import os

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from liftoff.core.reader_config import ReaderConfig
from liftoff.readers.engines.classification import ClassificationEngine
from liftoff.readers.engines.embedding import EmbeddingEngine

from support.models import CollectingSink, build_bert_classifier, make_job

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> EmbeddingEngine:
    engine = EmbeddingEngine(ReaderConfig(model_name=MINILM, max_batch_size=16, batch_duration_millis=50),
                             repository_path=tmp_path_factory.mktemp("repo"))
    asyncio.run(engine.load())
    return engine


def run(engine, jobs) -> CollectingSink:
    sink = CollectingSink()
    asyncio.run(engine.run(jobs, sink))
    return sink


def test_paraphrases_are_closer_than_unrelated_sentences(embedder: EmbeddingEngine) -> None:
    texts = ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply today."]
    sink = run(embedder, [make_job("e", texts, kind="embed")])
    kind, texts_out, _, vectors = sink.finals["e"]
    assert kind == "done" and texts_out is None and len(vectors) == 3 and len(vectors[0]) == 384
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.3


def test_concurrent_jobs_share_batches(embedder: EmbeddingEngine) -> None:
    jobs = [make_job(f"e{i}", f"sentence number {i}", kind="embed") for i in range(20)]
    before = embedder._batcher.batches if embedder._batcher._loop else 0

    async def scenario(sink: CollectingSink) -> None:
        await asyncio.gather(*(embedder.run([job], sink) for job in jobs))

    sink = CollectingSink()
    asyncio.run(scenario(sink))
    assert all(sink.finals[f"e{i}"][0] == "done" for i in range(20))
    assert embedder._batcher.batches - before <= 3  # 20 texts, 16 per batch
    alone = run(embedder, [make_job("x", "sentence number 7", kind="embed")]).finals["x"][3][0]
    assert cosine(alone, sink.finals["e7"][3][0]) > 0.9999


def test_embedding_tokenizer_helpers(embedder: EmbeddingEngine) -> None:
    assert embedder.tokenize("Hello world") == ["[CLS]", "hello", "world", "[SEP]"]
    assert embedder.detokenize(embedder.tokenize_ids("Hello world"), skip_special_tokens=True) == "hello world"


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> ClassificationEngine:
    path = build_bert_classifier(tmp_path_factory.mktemp("models") / "tiny-bert")
    engine = ClassificationEngine(ReaderConfig(model_name=str(path), max_batch_size=8, batch_duration_millis=20))
    asyncio.run(engine.load())
    return engine


def test_classification_of_texts_and_pairs(classifier: ClassificationEngine) -> None:
    sink = run(classifier, [
        make_job("t", ["the quick brown fox", "hello world"], kind="classify"),
        make_job("p", [], kind="classify", pairs=[["a reader holds a model", "the lazy dog"], ["hello", "world"]]),
    ])
    for request_id in ("t", "p"):
        kind, _, _, results = sink.finals[request_id]
        assert kind == "done" and len(results) == 2
        for result in results:
            assert set(result["scores"]) == {"negative", "positive"}
            assert abs(sum(result["scores"].values()) - 1.0) < 1e-5
            assert result["score"] == max(result["scores"].values())
            assert result["scores"][result["label"]] == result["score"]
    assert sink.finals["p"][3] != sink.finals["t"][3]


def test_pairs_order_matters_for_a_cross_encoder(classifier: ClassificationEngine) -> None:
    sink = run(classifier, [make_job("p", [], kind="classify", pairs=[["hello world", "the lazy dog"],
                                                                        ["the lazy dog", "hello world"]])])
    first, second = sink.finals["p"][3]
    assert first["scores"] != second["scores"]
    bad = run(classifier, [make_job("b", [], kind="classify", pairs=[["only one"]])])
    assert bad.finals["b"][:2] == ("error", 422)
