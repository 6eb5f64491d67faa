#!/usr/bin/env python
"""Generation engine throughput in-process, against static-batch and sequential `model.generate()`, in one run.

    .venv/bin/python -m bench.generation_inprocess [--jobs 32] [--new-tokens 64] [--rounds 2]
                                                              [--hidden 64] [--layers 2]

Builds the tiny random-weight Llama of the reader tests (byte-level BPE tokenizer) in a temporary directory, then,
in interleaved rounds, measures generated tokens per second for:

* engine: `--jobs` concurrent single-prompt jobs through `GenerationEngine.run` (continuous batching, greedy,
  `max_new_tokens` each, EOS ignored by using min_new_tokens), driven by a collecting sink;
* static: one `model.generate()` of all prompts, left-padded, greedy, `min_new_tokens` = `max_new_tokens`;
* sequential: `model.generate()` one prompt at a time (a subset, scaled).

Prints tokens/s per condition and the ratios engine/static (target >= 0.7) and static/sequential. Never asserts.
"""

from __future__ import annotations

import asyncio
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from bench.common import inprocess_parser, interleave, print_best, tiny_generation_engine
from liftoff.readers.engines.generation import GenerationEngine
from tests.support.models import CollectingSink, make_job

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "readers", "answer",
         "requests", "from", "streams"]


def prompts(count: int) -> list[str]:
    return [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(6 + i % 5)) for i in range(count)]


def bench_engine(engine: GenerationEngine, texts: list[str], new_tokens: int) -> float:
    async def go() -> CollectingSink:
        sink = CollectingSink()
        jobs = [make_job(f"r{i}", t, max_new_tokens=new_tokens, min_new_tokens=new_tokens, return_metadata=True)
                for i, t in enumerate(texts)]
        await asyncio.gather(*(engine.run([job], sink) for job in jobs))
        return sink

    start = time.perf_counter()
    sink = asyncio.run(go())
    elapsed = time.perf_counter() - start
    tokens = sum(f[2][0]["generated_tokens"] for f in sink.finals.values() if f[0] == "done")
    return tokens / elapsed


def bench_static(engine: GenerationEngine, texts: list[str], new_tokens: int) -> float:
    tok = engine.tokenizer
    tok.padding_side = "left"
    batch = tok(texts, return_tensors="pt", padding=True)
    start = time.perf_counter()
    with torch.inference_mode():
        out = engine.model.generate(**batch, do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                    pad_token_id=tok.pad_token_id)
    elapsed = time.perf_counter() - start
    return (out.shape[1] - batch.input_ids.shape[1]) * len(texts) / elapsed


def bench_sequential(engine: GenerationEngine, texts: list[str], new_tokens: int) -> float:
    tok = engine.tokenizer
    start = time.perf_counter()
    tokens = 0
    with torch.inference_mode():
        for text in texts:
            ids = tok(text, return_tensors="pt")
            out = engine.model.generate(**ids, do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                        pad_token_id=tok.pad_token_id)
            tokens += out.shape[1] - ids.input_ids.shape[1]
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = inprocess_parser(__doc__, jobs=32, new_tokens=64, rounds=2)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    args = parser.parse_args()
    with tiny_generation_engine(args.jobs, hidden=args.hidden, layers=args.layers) as engine:
        texts = prompts(args.jobs)
        bench_engine(engine, texts[:4], 8)  # warm-up
        bench_static(engine, texts[:4], 8)
        results = interleave(args.rounds, {
            "engine": lambda: bench_engine(engine, texts, args.new_tokens),
            "static": lambda: bench_static(engine, texts, args.new_tokens),
            "sequential": lambda: bench_sequential(engine, texts[:8], args.new_tokens),
        })
    print_best(f"tiny Llama (hidden {args.hidden}, {args.layers} layers), {args.jobs} prompts x {args.new_tokens} "
               f"new tokens, torch threads {torch.get_num_threads()}, best of {args.rounds}", results, "tokens",
               (11, 10, 24), [("ratio engine/static", "engine", "static", "   (target >= 0.7)"),
                              ("ratio static/sequential", "static", "sequential", "")])


if __name__ == "__main__":
    main()
