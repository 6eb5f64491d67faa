#!/usr/bin/env python
"""Generation throughput through the whole server against the same model in-process, in one run.

    .venv/bin/python -m bench.generation [--hidden 64] [--layers 2] [--duration S] [--threads N] [--quick]
    .venv/bin/python -m bench.generation --load --threads 0    # the engine under load (bench/generation_load.py)
    .venv/bin/python -m bench.generation --lora                # three LoRA adapters mixed in one batch ÷ the base model
                                                               # (bench/generation_lora.py)

1. Builds the tiny random-weight Llama of the reader tests (tests/support/models.py, byte-level BPE tokenizer;
   hidden 64 and 2 layers by default, as bench/generation_inprocess.py) in `<tmp>/models/tiny-llama`.
2. In the bench process, before the server starts: loads it the way the reader does (`GenerationEngine`) and
   measures generated tokens/s, greedy, `min_new_tokens` = `max_new_tokens` = `--new-tokens` (64), for one static
   left-padded `model.generate` of `--jobs` (32) prompts, for `model.generate` of one prompt at a time, and (for
   reference) for the reader's engine with 32 concurrent jobs, each for `--inproc-seconds`. The same pass runs
   again after the server has stopped (unless `--no-after`).
3. Starts `liftoff serve` from a temporary config.toml (six free loopback ports, `repository_path = <tmp>/models`)
   with one reader (`model_name = "tiny-llama"`, `consumer_group = "primary"`, `max_batch_size = 64`), waits for
   `GET /healthz` = 200 on the management port, checks that a request gets its 64 tokens, then drives
   `POST /generate {"text", "max_new_tokens": 64, "min_new_tokens": 64, "consumer_group": "primary"}` at
   concurrency 1, 8, 32 and 64 (each with a warm-up and a fixed measured window) and stops it with SIGTERM.
4. Prints both tables, CPU time per request by process, and the ratios at c=32: gateway / in-process static batch
   of 32 (target >= 0.7) and gateway / in-process sequential (target >= 5), each against the better of the two
   in-process passes.

Every successful response carries exactly `--new-tokens` tokens (min = max; checked with `return_metadata` before
measuring), so tokens/s through the gateway = responses/s x new tokens. torch uses `--threads` intra-op threads
(default 1) in the bench process and, through LIFTOFF_TORCH_THREADS, in the reader. Timings are
reported, never asserted: the exit status is non-zero only if the server fails to start (130 on Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import common

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is first imported (in functions below)
GROUP = "primary"
MODEL_DIR = "tiny-llama"


def inprocess(args: argparse.Namespace, path: Path, texts: list[str]) -> list[common.Timed]:
    import torch

    from bench.generation_inprocess import bench_engine
    from liftoff.core.reader_config import ReaderConfig
    from liftoff.readers.engines.generation import GenerationEngine

    engine = GenerationEngine(ReaderConfig(model_name=str(path), max_batch_size=args.jobs))
    asyncio.run(engine.load())  # applies LIFTOFF_TORCH_THREADS, loads fp32 with SDPA attention, as the reader
    model, tok, new = engine.model, engine.tokenizer, args.new_tokens
    batch_texts = texts[: args.jobs]
    tok.padding_side = "left"
    batch = tok(batch_texts, return_tensors="pt", padding=True)
    singles = [tok(t, return_tensors="pt") for t in batch_texts]

    def generate(inputs: Any) -> int:
        with torch.inference_mode():
            out = model.generate(**inputs, do_sample=False, max_new_tokens=new, min_new_tokens=new,
                                 pad_token_id=tok.pad_token_id)
        return (out.shape[1] - inputs.input_ids.shape[1]) * out.shape[0]

    def static(_i: int) -> float:
        return generate(batch)

    def sequential(i: int) -> float:
        return generate(singles[i % len(singles)])

    def engine_jobs(_i: int) -> float:
        bench_engine(engine, batch_texts, new)  # min = max new tokens: every job generates `new`
        return len(batch_texts) * new

    try:
        for warm in (static, sequential, engine_jobs):
            warm(0)
        return [
            common.timed(f"static batch: generate({len(batch_texts)} prompts)", static, args.inproc_seconds, 2),
            common.timed("sequential: generate(1 prompt)", sequential, args.inproc_seconds, 4),
            common.timed(f"reader engine, {len(batch_texts)} concurrent jobs", engine_jobs, args.inproc_seconds, 2),
        ]
    finally:
        engine.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    common.common_flags(p)
    p.add_argument("--hidden", type=int, default=64, help="tiny Llama hidden size (64)")
    p.add_argument("--layers", type=int, default=2, help="tiny Llama layers (2)")
    p.add_argument("--new-tokens", type=int, default=64, help="new tokens per request, min = max (64)")
    p.add_argument("--jobs", type=int, default=32, help="in-process static batch size; the headline concurrency (32)")
    p.add_argument("--max-batch-size", type=int, default=64, help="reader max_batch_size (64)")
    p.add_argument("--load", action="store_true",
                   help="instead: the engine under load on a ~100M-parameter Llama (bench/generation_load.py): "
                        "interference with chunking on and off, the shipped defaults, prefix reuse")
    p.add_argument("--streams", type=int, default=8, help="--load: concurrent streams of short prompts (8)")
    p.add_argument("--long-every", type=float, default=8.0, help="--load: seconds between long prompts (8)")
    p.add_argument("--load-duration", type=float, default=60.0, help="--load: seconds per interference run (60)")
    p.add_argument("--prefixes", type=int, default=3, help="--load: distinct shared prefixes (3)")
    p.add_argument("--parts", default="abc", help="--load: which of (a), (b), (c) to run (abc)")
    p.add_argument("--rounds", type=int, default=3,
                   help="--load (b): paired rounds of static pass + gateway window, --duration split over them (3); "
                        "--lora: paired rounds of base-only and mixed-adapter passes")
    p.add_argument("--lora", action="store_true",
                   help="instead: the engine's throughput with rows spread over three LoRA adapters / with the base "
                        "model only, same load, same run (bench/generation_lora.py; target >= 0.7)")
    p.add_argument("--rank", type=int, default=16, help="--lora: the adapters' rank (16)")
    args = p.parse_args(argv)
    common.apply_quick(args)
    common.use_threads(args)
    argv = sys.argv[1:] if argv is None else argv
    tmp = Path(tempfile.mkdtemp(prefix="liftoff-bench-generate-"))
    if args.load:
        return _load(args, argv, tmp)
    if args.lora:
        return _lora(args, argv, tmp)
    reader = {"model_name": MODEL_DIR, "consumer_group": GROUP, "max_batch_size": args.max_batch_size}
    harness = common.GatewayHarness(tmp, reader, args.threads, args.workers, repository_path=tmp / "models")
    return harness.guarded(lambda: bench(args, argv, harness), args.keep)


def bench(args: argparse.Namespace, argv: list[str], harness: common.GatewayHarness) -> int:
    """In-process, through the gateway, in-process again; then the report."""
    import torch

    from bench.generation_inprocess import prompts
    from tests.support.models import build_llama

    concs = common.concurrencies(args.concurrency)
    texts = prompts(max(64, args.jobs))
    new = args.new_tokens
    bodies = [json.dumps({"text": t, "max_new_tokens": new, "min_new_tokens": new, "consumer_group": GROUP}).encode()
              for t in texts]
    path = build_llama(harness.repository_path / MODEL_DIR, hidden=args.hidden, layers=args.layers)
    params = sum(t.numel() for t in _weights(path))
    inproc = common.InProcess()
    if not args.skip_inprocess:
        print(f"in-process: tiny Llama hidden {args.hidden}, {args.layers} layers, torch threads "
              f"{torch.get_num_threads()} ...", flush=True)
        inproc.measure("before", lambda: inprocess(args, path, texts), "tokens")
    if not harness.serve(args.start_timeout):
        return 1
    check(harness.port, texts[0], new)
    results = common.measure_served(harness, args, "/generate", bodies, concs, "tokens", new, inproc,
                                    lambda: inprocess(args, path, texts))

    lengths = [len(ids) for ids in _tokenize(path, texts)]
    extra = [
        f"model: tiny random-weight Llama, hidden {args.hidden}, {args.layers} layers, {params / 1e6:.2f} M "
        f"parameters, fp32, SDPA; {common.threads_note(args.threads)}",
        f"prompts: {len(texts)} distinct, {min(lengths)}-{max(lengths)} tokens; greedy, min_new_tokens = "
        f"max_new_tokens = {new}",
        common.gateway_line(f"POST /generate {{\"text\": <prompt>, \"max_new_tokens\": {new}, \"min_new_tokens\": "
                            f"{new}, \"consumer_group\": \"{GROUP}\"}}", args, f"max_batch_size {args.max_batch_size}"),
    ]
    static, sequential = inproc.best("static"), inproc.best("sequential")
    out = common.print_served("bench.generation", argv, extra, inproc, args.threads, "tokens", new, results,
                              [("static", static), ("sequential", sequential)],
                              note=f"tokens/s = responses/s x {new}; ")
    head = args.jobs if args.jobs in results else max(concs)
    if inproc and head in results:
        rate = results[head].rps * new
        r_static = rate / static if static else float("nan")
        r_seq = rate / sequential if sequential else float("nan")
        print(f"gateway c={head} / in-process static batch of {args.jobs}:  {r_static:.2f}   "
              f"(target >= 0.7: {common.verdict(r_static, 0.7)})")
        print(f"gateway c={head} / in-process sequential:          {r_seq:.2f}x  "
              f"(target >= 5x: {common.verdict(r_seq, 5.0)})")
        out["ratios"] = {f"gateway_c{head}_over_static": round(r_static, 3),
                         f"gateway_c{head}_over_sequential": round(r_seq, 3)}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


def check(port: int, text: str, new: int) -> None:
    """One request with its metadata: does it generate `new` tokens, as the tokens/s figures assume?"""
    status, body = common.post_json(port, "/generate", {"text": text, "max_new_tokens": new, "min_new_tokens": new,
                                                 "consumer_group": GROUP, "return_metadata": True})
    meta = body.get("metadata") if status == 200 and isinstance(body, dict) else body
    print(f"check: POST /generate -> {status}, metadata {meta}", flush=True)
    if not (isinstance(meta, dict) and meta.get("generated_tokens") == new):
        print(f"WARNING: the check request did not generate {new} tokens; tokens/s below assume it does",
              flush=True)


def _load(args: argparse.Namespace, argv: list[str], tmp: Path) -> int:
    from bench.generation_load import run

    extra = [f"torch threads {args.threads} (bench process and readers), {args.workers} gateway worker(s); "
             f"(b) {args.warmup:g}s warm-up + {args.duration:g}s measured over {args.rounds} rounds"]
    for line in common.header_lines("bench.generation", argv, extra):
        print(line)
    print()

    def work() -> int:
        try:
            results = run(args, tmp)
        except RuntimeError as exc:
            print(f"FAILED: {exc}", file=sys.stderr)
            return 1
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        return 0

    return common.guarded(work, lambda: common.remove_tmp(tmp, args.keep))


def _lora(args: argparse.Namespace, argv: list[str], tmp: Path) -> int:
    from bench.generation_lora import run

    for line in common.header_lines("bench.generation", argv, [f"torch threads {args.threads} (bench process)"]):
        print(line)
    print()

    def work() -> int:
        results = run(args, tmp)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        return 0

    return common.guarded(work, lambda: common.remove_tmp(tmp, args.keep))


def _weights(path: Path) -> list[Any]:
    from safetensors.torch import load_file

    return [t for f in sorted(path.glob("*.safetensors")) for t in load_file(str(f)).values()]


def _tokenize(path: Path, texts: list[str]) -> list[list[int]]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))(texts)["input_ids"]


if __name__ == "__main__":
    sys.exit(main())
