#!/usr/bin/env python
"""Embedding throughput through the whole server against the same model in-process, in one run.

    .venv/bin/python -m bench.embeddings [--duration S] [--threads N] [--quick]

1. In the bench process, before the server starts: loads the bundled sentence-transformers/all-MiniLM-L6-v2 the
   way the reader does (`EmbeddingEngine`), then measures sentences/s for one static `encode` of `--static-batch`
   (64) sentences, for `encode` of one sentence at a time, and (for reference) for the reader's engine with 64
   concurrent single-sentence jobs, each for `--inproc-seconds`. The same pass runs again after the server has
   stopped (unless `--no-after`).
2. Starts `liftoff serve` from a temporary config.toml on six free loopback ports with one reader
   (`model_name = "sentence-transformers/all-MiniLM-L6-v2"`, `consumer_group = "embed"`, `max_batch_size = 64`,
   `batch_duration_millis = 5`), waits for `GET /healthz` = 200 on the management port, checks one answer, then
   drives `POST /embed {"text": <one sentence>, "consumer_group": "embed"}` at concurrency 1, 8, 32 and 64, each
   with its own warm-up and a fixed measured window, with the keep-alive asyncio client of bench/common.py.
3. Prints both tables, CPU time per request by process, and the ratios: gateway at c=64 / in-process static batch
   (target >= 0.8) and gateway at c=64 / in-process one at a time (target >= 5), each against the better of the
   two in-process passes. The server is stopped with SIGTERM before the second in-process pass.

torch uses `--threads` intra-op threads in the bench process and, through LIFTOFF_TORCH_THREADS, in the reader:
by default torch's own choice, one per core, which is how a reader runs unless `cpu_threads` says otherwise (for
MiniLM here, batches run 1.4-1.7x faster on two threads than on one, single sentences about as fast; see
bench/README.md). Timings are reported, never asserted: the exit status is non-zero
only if the server fails to start (130 on Ctrl-C).

The server harness (`GatewayHarness`, `BodiesRun`, `InProcess`, the report helpers) is bench/common.py's, shared
with bench/generation.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

from bench import common

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers is first imported (in functions below)
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
GROUP = "embed"

# Single sentences of the length of a search query or a line of a support ticket: 16 x 16 = 256 distinct ones,
# 14-22 words (18-26 tokens with the special tokens) each.
SUBJECTS = [
    "The city council", "Our customer support team", "A small bakery in the old town", "The new graphics card",
    "My neighbour's elderly dog", "The quarterly sales report", "A group of exchange students",
    "The hiking trail along the river", "This cordless vacuum cleaner", "The regional airline",
    "The university research team", "The hotel next to the central station", "The updated privacy policy",
    "A local amateur football club", "The museum's new exhibition", "The parcel delivery service",
]
PREDICATES = [
    "announced on Monday that it will extend its opening hours during the summer holidays",
    "was praised by many customers for its quick and friendly answers to billing questions",
    "has been struggling with delays since the heavy snowfall at the beginning of the month",
    "received mixed reviews because the battery barely lasts through a single afternoon",
    "plans to reduce its energy use by a third before the end of next year",
    "asked residents to share their opinions about the proposed changes to the bus routes",
    "published a detailed guide explaining how to reset a forgotten password on the website",
    "was closed for two weeks while the roof was repaired after the storm",
    "is looking for volunteers who can help with the charity run in September",
    "reported a sharp increase in online orders compared with the same period last year",
    "surprised everyone by winning the regional championship without losing a single match",
    "needs a firmware update before it can connect to the new wireless network at home",
    "offers a discount to families who book their tickets at least a month in advance",
    "found that people sleep better when they avoid screens for an hour before bed",
    "apologised after several customers were charged twice for the same subscription",
    "moved to a larger building so that it can welcome more visitors on weekends",
]


def sentences(count: int) -> list[str]:
    every = [f"{subject} {predicate}." for predicate in PREDICATES for subject in SUBJECTS]
    return (every * (count // len(every) + 1))[:count]


# --- embeddings ---------------------------------------------------------------------------------------------------
def inprocess(args: argparse.Namespace, texts: list[str], tmp: Path) -> list[common.Timed]:
    import torch

    from bench.embeddings_inprocess import bench_engine
    from liftoff.core.reader_config import ReaderConfig
    from liftoff.readers.engines.embedding import EmbeddingEngine

    engine = EmbeddingEngine(ReaderConfig(model_name=MODEL, max_batch_size=args.static_batch,
                                          batch_duration_millis=args.batch_ms), repository_path=tmp / "models")
    asyncio.run(engine.load())  # applies LIFTOFF_TORCH_THREADS, as in the reader
    model, n = engine.model, args.static_batch

    def static(i: int) -> float:
        batch = [texts[(i * n + j) % len(texts)] for j in range(n)]
        with torch.inference_mode():
            model.encode(batch, batch_size=n, show_progress_bar=False)
        return n

    def single(i: int) -> float:
        with torch.inference_mode():
            model.encode([texts[i % len(texts)]], show_progress_bar=False)
        return 1

    def engine_jobs(i: int) -> float:
        bench_engine(engine, [texts[(i * n + j) % len(texts)] for j in range(n)])
        return n

    for warm in (static, single, engine_jobs):
        warm(0)
    rows = [
        common.timed(f"static batch: encode({n} sentences)", static, args.inproc_seconds, 2),
        common.timed("one at a time: encode(1 sentence)", single, args.inproc_seconds, 5),
        common.timed(f"reader engine, {n} concurrent jobs", engine_jobs, args.inproc_seconds, 2),
    ]
    if args.threads > 1:
        # A single sentence gains nothing from more threads (it may lose a little), so the one-at-a-time baseline
        # also runs on one thread, and the ratio takes the faster of the two.
        torch.set_num_threads(1)
        try:
            single(0)
            rows.append(common.timed("one at a time, 1 thread", single, args.inproc_seconds, 5))
        finally:
            torch.set_num_threads(args.threads)
    return rows  # the model is freed with this frame (see the gc.collect() after the call)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    common.common_flags(p, threads=0)
    p.add_argument("--static-batch", type=int, default=64, help="in-process static batch size (64)")
    p.add_argument("--max-batch-size", type=int, default=64, help="reader max_batch_size (64)")
    p.add_argument("--batch-ms", type=int, default=5, help="reader batch_duration_millis (5)")
    args = p.parse_args(argv)
    common.apply_quick(args)
    common.use_threads(args)
    tmp = Path(tempfile.mkdtemp(prefix="liftoff-bench-embed-"))
    reader = {"model_name": MODEL, "consumer_group": GROUP, "max_batch_size": args.max_batch_size,
              "batch_duration_millis": args.batch_ms}
    harness = common.GatewayHarness(tmp, reader, args.threads, args.workers)
    return harness.guarded(lambda: bench(args, sys.argv[1:] if argv is None else argv, harness), args.keep)


def bench(args: argparse.Namespace, argv: list[str], harness: common.GatewayHarness) -> int:
    """In-process, through the gateway, in-process again; then the report."""
    import torch

    concs = common.concurrencies(args.concurrency)
    texts = sentences(256)
    bodies = [json.dumps({"text": t, "consumer_group": GROUP}).encode() for t in texts]
    inproc = common.InProcess()
    if not args.skip_inprocess:
        print(f"in-process: {MODEL}, torch threads {torch.get_num_threads()} ...", flush=True)
        inproc.measure("before", lambda: inprocess(args, texts, harness.tmp), "sentences")
    if not harness.serve(args.start_timeout):
        return 1
    status, body = common.post_json(harness.port, "/embed", {"text": texts[0], "consumer_group": GROUP})
    dim = len(body["result"]) if status == 200 and isinstance(body, dict) else None
    print(f"check: POST /embed -> {status}, vector of {dim} floats", flush=True)
    results = common.measure_served(harness, args, "/embed", bodies, concs, "sentences", 1, inproc,
                                    lambda: inprocess(args, texts, harness.tmp))

    words = [len(t.split()) for t in texts]
    tokens = [len(ids) for ids in _tokenize(texts)]
    extra = [
        f"model: {MODEL}  {common.threads_note(args.threads)}",
        f"texts: {len(texts)} distinct single sentences, {min(words)}-{max(words)} words, "
        f"{min(tokens)}-{max(tokens)} tokens (mean {sum(tokens) / len(tokens):.1f}, special tokens included)",
        common.gateway_line(f"POST /embed {{\"text\": <one sentence>, \"consumer_group\": \"{GROUP}\"}}", args,
                            f"max_batch_size {args.max_batch_size}, batch_duration_millis {args.batch_ms}"),
    ]
    static, single = inproc.best("static"), inproc.best("one at a time")
    out = common.print_served("bench.embeddings", argv, extra, inproc, args.threads, "sentences", 1, results,
                              [("static", static), ("one-at-a-time", single)])
    top = max(concs)
    if inproc and top in results:
        r_static = results[top].rps / static if static else float("nan")
        r_single = results[top].rps / single if single else float("nan")
        same = inproc.best("one at a time:")
        r_same = results[top].rps / same if same else float("nan")
        print(f"gateway c={top} / in-process static batch:   {r_static:.2f}   "
              f"(target >= 0.8: {common.verdict(r_static, 0.8)})")
        print(f"gateway c={top} / in-process one at a time:  {r_single:.2f}x  "
              f"(target >= 5x: {common.verdict(r_single, 5.0)}; against the faster of {args.threads} threads and 1)")
        if args.threads > 1:
            print(f"  (against one at a time on {args.threads} threads, the reader's setting: {r_same:.2f}x)")
        out["ratios"] = {f"gateway_c{top}_over_static": round(r_static, 3),
                         f"gateway_c{top}_over_one_at_a_time": round(r_single, 3),
                         f"gateway_c{top}_over_one_at_a_time_same_threads": round(r_same, 3)}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


def _tokenize(texts: list[str]) -> list[list[int]]:
    from transformers import AutoTokenizer

    from liftoff.readers.engines.models import bundled_model_path

    path = bundled_model_path(MODEL)
    if path is None:
        return [[0] for _ in texts]
    return AutoTokenizer.from_pretrained(str(path))(texts)["input_ids"]


if __name__ == "__main__":
    sys.exit(main())
