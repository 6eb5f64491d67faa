"""The generation engine under real load, through the whole server (`python -m bench.generation --load`).

Three measurements in one run, on a random-weight Llama of a real small shape (12 layers, hidden 768, ~100M
parameters; tests/support/models.py `build_small_llama`), whose 2,000-token prefill takes seconds on a CPU:

(a) interference: `--streams` (8) clients loop over `/generate_stream` of short prompts (64 new tokens each) while
    one client sends a distinct ~2,000-token prompt to `/generate` every `--long-every` seconds; once with the
    reader's default `prefill_chunk_size` and once with 0 (whole prompts). Reports stream tokens/s, time to first
    token p50/p99, the median and the longest gap between two tokens of a running stream, and streams that ended
    with an `error` event. Target: longest gap <= 4 x the median gap (a running stream's decode step), none ended.
(b) defaults: the reader exactly as `liftoff serve --model <model>` makes it (no setting but the model), 32
    concurrent `POST /generate` (64 new tokens, min = max), over one static left-padded `model.generate` of the same
    32 prompts in the bench process, in `--rounds` (3) paired rounds on the running server (a static pass, then a
    gateway window); the headline is the median of the paired ratios. Target >= 1.0.
(c) prefix reuse: on the same server, time to first token (the reader's `time_to_first_token_ms` and the client's
    latency of a 1-token answer) for a ~1,500-token prefix plus a short question: the first question on a prefix
    (cold) against later questions on it (warm), over `--prefixes` (3) distinct prefixes. Target >= 3 x faster warm.

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import GatewayHarness, StreamTally

NEW = 64


@dataclass
class StreamStats(StreamTally):
    gaps_s: list[float] = field(default_factory=list)
    streams: int = 0
    error_samples: list[str] = field(default_factory=list)
    long_s: list[float] = field(default_factory=list)
    long_failed: int = 0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def _stream_client(client: httpx.AsyncClient, url: str, prompt: str, stop_at: float, stats: StreamStats) -> None:
    body = {"text": prompt, "max_new_tokens": NEW, "min_new_tokens": NEW}
    while time.monotonic() < stop_at:
        started = time.monotonic()
        last = None
        event = "message"
        async with client.stream("POST", url + "/generate_stream", json=body) as response:
            if response.status_code != 200:
                stats.errors += 1
                stats.error_samples.append(f"HTTP {response.status_code}")
                await asyncio.sleep(0.2)
                continue
            async for line in response.aiter_lines():
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    if event == "error":
                        stats.errors += 1
                        stats.error_samples.append(line[5:].strip()[:200])
                        continue
                    now = time.monotonic()
                    if last is None:
                        stats.ttft_s.append(now - started)
                    else:
                        stats.gaps_s.append(now - last)
                    last = now
                    stats.tokens += 1
                elif line == "":
                    event = "message"
        stats.streams += 1


async def _long_client(client: httpx.AsyncClient, url: str, prompts: list[str], every_s: float, stop_at: float,
                       stats: StreamStats) -> None:
    for prompt in prompts:
        if time.monotonic() >= stop_at:
            return
        started = time.monotonic()
        response = await client.post(url + "/generate", json={"text": prompt, "max_new_tokens": 8})
        if response.status_code == 200:
            stats.long_s.append(time.monotonic() - started)
        else:
            stats.long_failed += 1
        await asyncio.sleep(max(0.0, every_s - (time.monotonic() - started)))


async def interference(url: str, short: list[str], long: list[str], streams: int, every_s: float,
                       duration_s: float) -> tuple[StreamStats, float]:
    stats = StreamStats()
    limits = httpx.Limits(max_connections=streams + 4, max_keepalive_connections=streams + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        started = time.monotonic()
        stop_at = started + duration_s
        await asyncio.gather(*(_stream_client(client, url, short[i % len(short)], stop_at, stats)
                               for i in range(streams)),
                             _long_client(client, url, long, every_s, stop_at, stats))
        return stats, time.monotonic() - started


def print_interference(label: str, stats: StreamStats, elapsed: float) -> dict[str, Any]:
    median_gap = statistics.median(stats.gaps_s) if stats.gaps_s else float("nan")
    longest = max(stats.gaps_s) if stats.gaps_s else float("nan")
    row = {
        "condition": label, "stream_tokens_per_s": round(stats.tokens / elapsed, 1), "streams": stats.streams,
        "streams_ended_with_error": stats.errors, "ttft_p50_ms": round(pct(stats.ttft_s, 0.5) * 1000),
        "ttft_p99_ms": round(pct(stats.ttft_s, 0.99) * 1000), "median_gap_ms": round(median_gap * 1000, 1),
        "p99_gap_ms": round(pct(stats.gaps_s, 0.99) * 1000), "longest_gap_ms": round(longest * 1000),
        "longest_over_median": round(longest / median_gap, 2) if median_gap else None,
        "long_prompts_done": len(stats.long_s), "long_prompt_mean_s": round(statistics.mean(stats.long_s), 2)
        if stats.long_s else None, "long_prompts_failed": stats.long_failed,
    }
    print(f"  {label:<22} {row['stream_tokens_per_s']:>8} {row['ttft_p50_ms']:>8} {row['ttft_p99_ms']:>8} "
          f"{row['median_gap_ms']:>8} {row['p99_gap_ms']:>8} {row['longest_gap_ms']:>8} "
          f"{row['longest_over_median']:>7}x {stats.errors:>6} {len(stats.long_s):>5} "
          f"{row['long_prompt_mean_s'] or float('nan'):>7}")
    for sample in stats.error_samples[:3]:
        print(f"      error: {sample}")
    return row


INTERFERENCE_HEADER = (f"  {'condition':<22} {'tok/s':>8} {'ttft50':>8} {'ttft99':>8} {'gap50':>8} {'gap99':>8} "
                       f"{'gapmax':>8} {'max/50':>8} {'errors':>6} {'longs':>5} {'long s':>7}   (times in ms)")


def prefix_reuse(url: str, prefixes: list[str], questions: list[str]) -> dict[str, Any]:
    cold, warm, cold_ttft, warm_ttft, cached = [], [], [], [], []
    with httpx.Client(timeout=600) as client:
        for prefix in prefixes:
            for i, question in enumerate(questions):
                started = time.monotonic()
                body = client.post(url + "/generate", json={"text": prefix + question, "max_new_tokens": 1,
                                                             "return_metadata": True}).json()
                took = time.monotonic() - started
                meta = body["metadata"]
                (cold if i == 0 else warm).append(took)
                (cold_ttft if i == 0 else warm_ttft).append(meta["time_to_first_token_ms"] / 1000)
                if i:
                    cached.append(meta.get("cached_prompt_tokens", 0))
    out = {"cold_latency_ms": round(statistics.median(cold) * 1000), "warm_latency_ms":
           round(statistics.median(warm) * 1000), "cold_ttft_ms": round(statistics.median(cold_ttft) * 1000),
           "warm_ttft_ms": round(statistics.median(warm_ttft) * 1000),
           "warm_cached_prompt_tokens_min": min(cached)}
    out["latency_ratio"] = round(out["cold_latency_ms"] / max(1, out["warm_latency_ms"]), 2)
    out["ttft_ratio"] = round(out["cold_ttft_ms"] / max(1, out["warm_ttft_ms"]), 2)
    return out


def static_generate(path: Path, texts: list[str], seconds: float) -> tuple[float, float]:
    """Tokens/s of a static left-padded `model.generate` of `texts` (greedy, min = max = NEW), called for `seconds`
    after one warm-up call (at least two timed calls): all tokens over all the time (the statistic the gateway's
    figure is), and the best call."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa").eval()
    batch = tok(texts, return_tensors="pt", padding=True)
    best, calls, tokens, spent = 0.0, -1, 0, 0.0  # call -1: the warm-up, not timed
    until = time.monotonic() + seconds
    while calls < 2 or time.monotonic() < until:
        started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**batch, do_sample=False, max_new_tokens=NEW, min_new_tokens=NEW,
                                 pad_token_id=tok.pad_token_id)
        took = time.perf_counter() - started
        made = (out.shape[1] - batch.input_ids.shape[1]) * out.shape[0]
        if calls >= 0:
            tokens, spent, best = tokens + made, spent + took, max(best, made / took)
        calls += 1
    del model
    return tokens / spent, best


def interference_runs(args: argparse.Namespace, tmp: Path, models: Path, tok: Any,
                      base: str) -> list[dict[str, Any]]:
    """(a): the interference load once with the shipped chunking and once with whole prompts."""
    longs = [f"{i} {base}" for i in range(200)]
    shorts = [f"Stream {i}: the quick brown fox jumps over" for i in range(args.streams)]
    out: list[dict[str, Any]] = []
    print(f"(a) interference: {args.streams} streams of {NEW} tokens + a ~{len(tok(base).input_ids)}-token prompt "
          f"every {args.long_every:g}s, {args.load_duration:g}s per condition")
    print(INTERFERENCE_HEADER)
    for label, chunk in (("chunked (default)", None), ("whole prompts (0)", 0)):
        reader: dict[str, Any] = {"model_name": "small-llama", "consumer_group": "primary"}
        if chunk is not None:
            reader["prefill_chunk_size"] = chunk
        harness, url = _serve(tmp / f"a-{chunk}", reader, args, models)
        try:
            httpx.post(url + "/generate", json={"text": longs[-1], "max_new_tokens": 2}, timeout=600)  # warm-up
            stats, elapsed = asyncio.run(interference(url, shorts, longs, args.streams, args.long_every,
                                                      args.load_duration))
            out.append(print_interference(label, stats, elapsed))
        finally:
            harness.stop()

    return out


async def served_batches(url: str, bodies: list[bytes], conc: int, requests: int) -> tuple[float, int]:
    """Tokens/s of `requests` POST /generate at concurrency `conc` (closed loop), from the first send to the last
    answer, and the number of failed requests. Timed like the static pass (whole batches start to finish): a window
    counting answers would see them come in waves of `conc` every ~10 s here, too coarse for a ratio."""
    pending = iter(range(requests))
    failed = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal failed
        for i in pending:
            r = await client.post(url + "/generate", content=bodies[i % len(bodies)],
                                  headers={"content-type": "application/json"})
            failed += r.status_code != 200

    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=conc)) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(conc)))
        elapsed = time.perf_counter() - started
    return (requests - failed) * NEW / elapsed, failed


def defaults(args: argparse.Namespace, path: Path, texts: list[str], bodies: list[bytes], url: str) -> dict[str, Any]:
    """(b): paired rounds on the running server, each an in-process static pass right before the same work served
    through the gateway, so that both halves of a ratio see the same state of a noisy machine; the headline is the
    median paired ratio."""
    batches = max(1, round(args.duration / args.rounds / 10))  # ~10 s a batch of 32 here
    asyncio.run(served_batches(url, bodies, args.jobs, args.jobs))  # warm-up
    served: list[float] = []
    static: list[float] = []
    best: list[float] = []
    errors = 0
    for i in range(args.rounds):
        mean, top = static_generate(path, texts, args.inproc_seconds)
        static.append(mean)
        best.append(top)
        rate, failed = asyncio.run(served_batches(url, bodies, args.jobs, batches * args.jobs))
        served.append(rate)
        errors += failed
        print(f"  round {i + 1}: in-process static {static[-1]:.1f} tok/s (best call {best[-1]:.1f}), gateway "
              f"{served[-1]:.1f} tok/s ({batches * args.jobs} requests) -> {served[-1] / static[-1]:.2f} "
              f"({served[-1] / best[-1]:.2f} of the best call)", flush=True)
    ratios = [g / s for g, s in zip(served, static, strict=True)]
    ratio = statistics.median(ratios)
    to_best = statistics.median(g / b for g, b in zip(served, best, strict=True))
    print(f"  median paired ratio {ratio:.2f} (rounds {', '.join(f'{r:.2f}' for r in ratios)}; pooled "
          f"{sum(served) / sum(static):.2f}; {to_best:.2f} of the best static calls) (target >= 1.0), errors {errors}")
    return {"gateway_tokens_per_s": [round(x, 1) for x in served], "static_tokens_per_s": [round(x, 1) for x in static],
            "static_best_call_tokens_per_s": [round(x, 1) for x in best], "ratios": [round(r, 3) for r in ratios],
            "ratio": round(ratio, 3), "ratio_to_best_call": round(to_best, 3), "errors": errors}


def _serve(workdir: Path, reader: dict[str, Any], args: argparse.Namespace,
           models: Path) -> tuple[GatewayHarness, str]:
    """`liftoff serve` with one reader, healthy, and its inference URL (RuntimeError with its log otherwise)."""
    workdir.mkdir()
    harness = GatewayHarness(workdir, reader, args.threads, args.workers, repository_path=models)
    harness.start()
    failure = harness.wait_healthy(args.start_timeout)
    if failure:
        harness.stop()
        raise RuntimeError(failure)
    return harness, f"http://127.0.0.1:{harness.port}"


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from tests.support.models import build_small_llama, long_text

    models = tmp / "models"
    path = build_small_llama(models / "small-llama")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    base = long_text(2000, tok)
    results: dict[str, Any] = {"interference": [], "defaults": {}, "prefix": {}}

    if "a" in args.parts:
        results["interference"] = interference_runs(args, tmp, models, tok, base)

    print(f"\n(b) defaults: liftoff serve --model small-llama as shipped, c={args.jobs} POST /generate "
          f"({NEW} new tokens) / in-process static generate of {args.jobs}, {args.rounds} paired rounds")
    texts = [f"Request {i}: a reader holds a model and answers" for i in range(max(64, args.jobs))]
    bodies = [json.dumps({"text": t, "max_new_tokens": NEW, "min_new_tokens": NEW}).encode() for t in texts]
    harness, url = _serve(tmp / "b", {"model_name": "small-llama", "consumer_group": "primary"}, args,
                          models)
    try:
        if "b" in args.parts:
            results["defaults"] = defaults(args, path, texts[: args.jobs], bodies, url)
        if "c" in args.parts:
            print("\n(c) prefix reuse: ~1,500-token prefix + a short question, cold (first question) vs warm")
            prefix_text = long_text(1500, tok)
            prefixes = [f"Document {i}. {prefix_text}" for i in range(args.prefixes)]
            questions = [" What is it about?", " Who wrote it?", " Summarise it.", " Is it long?"]
            results["prefix"] = prefix_reuse(url, prefixes, questions)
            p = results["prefix"]
            print(f"  reader time to first token: cold {p['cold_ttft_ms']} ms, warm {p['warm_ttft_ms']} ms -> "
                  f"{p['ttft_ratio']}x;  client latency: cold {p['cold_latency_ms']} ms, "
                  f"warm {p['warm_latency_ms']} ms -> {p['latency_ratio']}x (target >= 3x); "
                  f"warm cached prompt tokens >= "
                  f"{p['warm_cached_prompt_tokens_min']}")
    finally:
        harness.stop()
    return results
