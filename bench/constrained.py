#!/usr/bin/env python
"""Structured-output cost in-process: tokens/s under a JSON schema against unconstrained, same engine, one run.

    .venv/bin/python -m bench.constrained [--jobs 8] [--new-tokens 48] [--rounds 3] [--schemas 20]

Builds the tiny random-weight Llama of the reader tests (byte-level BPE tokenizer) in a temporary directory and, in
interleaved rounds, measures generated tokens per second of `--jobs` concurrent single-prompt jobs through
`GenerationEngine.run` (continuous batching, `max_new_tokens` each, half greedy and half sampled):

* plain: unconstrained (EOS held off with min_new_tokens, so every row runs its full length);
* schema: the same jobs with a three-field JSON schema (llguidance masks every step; a row ends when its JSON is
  complete, so tokens/s is over the tokens it really made).

Then the p50 (and max) time to compile `--schemas` distinct schemas against the tokenizer (what a schema costs the
first time; later requests take it from the engine's cache). Prints the ratio schema/plain (target >= 0.8).
Never asserts.
"""

from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from bench.common import generated_tokens_per_s, inprocess_parser, interleave, print_best, tiny_generation_engine
from liftoff.core.grammar_check import grammar_for
from liftoff.readers.engines.generation import GenerationEngine
from tests.support.models import make_job

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "tags": {"type": "array",
                                                                                   "items": {"type": "string"}}},
    "required": ["name", "age", "tags"],
}
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "readers", "answer"]
TYPES = [{"type": "string"}, {"type": "integer", "minimum": 0}, {"type": "boolean"}, {"type": "number"},
         {"type": "array", "items": {"type": "integer"}}, {"enum": ["red", "green", "blue"]}]


def prompts(count: int) -> list[str]:
    return [" ".join(WORDS[(i + j) % len(WORDS)] for j in range(6 + i % 5)) for i in range(count)]


def distinct_schemas(count: int) -> list[dict]:
    """`count` schemas that differ in field names, types and nesting (none shares a cache entry)."""
    out = []
    for i in range(count):
        props = {f"{WORDS[(i + k) % len(WORDS)]}_{i}_{k}": TYPES[(i * 3 + k) % len(TYPES)] for k in range(3 + i % 4)}
        if i % 3 == 0:
            props["inner"] = {"type": "object", "properties": {"x": TYPES[i % len(TYPES)]}, "required": ["x"]}
        out.append({"type": "object", "properties": props, "required": sorted(props)})
    return out


def run_jobs(engine: GenerationEngine, texts: list[str], new_tokens: int, **params: object) -> float:
    jobs = [make_job(f"r{i}", t, max_new_tokens=new_tokens, return_metadata=True, seed=i, sampling_topk=0,
                     sampling_temperature=0.0 if i % 2 else 1.0, **params) for i, t in enumerate(texts)]
    return generated_tokens_per_s(engine, jobs)


def compile_times(engine: GenerationEngine, count: int) -> list[float]:
    assert engine.grammars is not None
    engine.grammars.view()  # the tokenizer's view is built once per engine, not per schema
    times = []
    for i, schema in enumerate(distinct_schemas(count)):
        key, grammar = grammar_for(schema, None)
        start = time.perf_counter()
        engine.grammars.compiled(f"bench-{i}:{key}", grammar, "json_schema")
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = inprocess_parser(__doc__, jobs=8, new_tokens=48, rounds=3)
    parser.add_argument("--schemas", type=int, default=20)
    args = parser.parse_args()
    with tiny_generation_engine(args.jobs) as engine:
        texts = prompts(args.jobs)
        started = time.perf_counter()
        assert engine.grammars is not None
        engine.grammars.view()
        view_s = time.perf_counter() - started
        run_jobs(engine, texts, 8, min_new_tokens=8)  # warm-up, and the schema's compile, outside the rounds
        run_jobs(engine, texts, 8, json_schema=SCHEMA)
        results = interleave(args.rounds, {
            "plain": lambda: run_jobs(engine, texts, args.new_tokens, min_new_tokens=args.new_tokens),
            "schema": lambda: run_jobs(engine, texts, args.new_tokens, json_schema=SCHEMA),
        })
        times = compile_times(engine, args.schemas)
    print_best(f"tiny Llama, {args.jobs} concurrent jobs x {args.new_tokens} new tokens, torch threads "
               f"{torch.get_num_threads()}, best of {args.rounds}", results, "tokens", (7, 8, 20),
               [("ratio schema/plain", "schema", "plain", "   (target >= 0.8)")])
    print(f"  schema compile over {len(times)} distinct schemas: p50 {statistics.median(times) * 1e3:.2f} ms, "
          f"max {max(times) * 1e3:.2f} ms (tokenizer view, once per engine: {view_s * 1e3:.0f} ms)")


if __name__ == "__main__":
    main()
