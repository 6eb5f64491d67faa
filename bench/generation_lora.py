"""The mixed-adapter run of bench.generation (`--lora`): the reader's engine with three LoRA adapters loaded, its
throughput with the rows of a batch spread over the three adapters, over its throughput with the same rows on the
base model alone; same engine, same prompts, same load, in alternating rounds of one run (target >= 0.7).

    .venv/bin/python -m bench.generation --lora [--hidden 64] [--layers 2] [--jobs 32] [--rounds 3] [--rank 16]

The model is the tiny random-weight Llama of the reader tests; each adapter is a random peft LoRA of rank `--rank`
on every projection (q, k, v, o, gate, up, down), the heaviest kind. A round runs `--jobs` concurrent jobs of
`--new-tokens` tokens each (min = max) with no adapter, then the same jobs with adapter i % 3 for job i. Reported,
never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from pathlib import Path
from typing import Any

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ADAPTERS = ("one", "two", "three")


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import torch

    from bench.common import generated_tokens_per_s
    from bench.generation_inprocess import prompts
    from liftoff.core.reader_config import ReaderConfig
    from liftoff.readers.engines.generation import GenerationEngine
    from tests.support.models import build_llama, build_lora, make_job

    base = build_llama(tmp / "models" / "tiny-llama", hidden=args.hidden, layers=args.layers)
    loras = [f"{name}={build_lora(base, tmp / 'models' / name, seed=i + 1, rank=args.rank, targets=TARGETS)}"
             for i, name in enumerate(ADAPTERS)]
    engine = GenerationEngine(ReaderConfig(model_name=str(base), max_batch_size=max(args.jobs, 1), loras=loras))
    asyncio.run(engine.load())
    texts = prompts(args.jobs)
    new = args.new_tokens

    def tokens_per_s(adapters: list[str | None]) -> float:
        return generated_tokens_per_s(engine, [make_job(f"r{i}", t, max_new_tokens=new, min_new_tokens=new,
                                                        return_metadata=True, lora_id=adapters[i % len(adapters)])
                                               for i, t in enumerate(texts)])

    print(f"mixed adapters: tiny Llama hidden {args.hidden}, {args.layers} layers, 3 adapters of rank {args.rank} on "
          f"{', '.join(TARGETS)}; {args.jobs} jobs x {new} tokens per pass; torch threads {torch.get_num_threads()}",
          flush=True)
    tokens_per_s([None])  # warm-up
    rows: list[tuple[float, float]] = []
    for i in range(args.rounds):
        plain = tokens_per_s([None])
        mixed = tokens_per_s(list(ADAPTERS))
        rows.append((plain, mixed))
        print(f"  round {i + 1}: base only {plain:8.1f} tok/s   three adapters {mixed:8.1f} tok/s   "
              f"ratio {mixed / plain:.2f}", flush=True)
    engine.close()
    ratio = statistics.median(m / p for p, m in rows)
    print(f"three adapters / base model only (median of {args.rounds} rounds): {ratio:.2f}   (target >= 0.7: "
          f"{'met' if ratio >= 0.7 else 'NOT met'})")
    return {"rounds": [{"base_tokens_per_s": round(p, 1), "mixed_tokens_per_s": round(m, 1)} for p, m in rows],
            "mixed_over_base": round(ratio, 3), "hidden": args.hidden, "layers": args.layers, "rank": args.rank,
            "jobs": args.jobs, "new_tokens": new}
