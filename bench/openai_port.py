#!/usr/bin/env python
"""Streaming through the OpenAI port, chat completions against the Responses and Messages streams and against the
same stream on the Takeoff port, in one run.

    .venv/bin/python -m bench.openai_port [--duration S] [--delay-ms 10] [--words 32] [--max-tokens 128]
                                     [--conc 1,8,32] [--rounds 2] [--conditions chat,responses,messages,takeoff]
                                     [--no-store] [--client raw|httpx] [--quick]

1. Starts `liftoff serve` from a temporary config.toml (six free loopback ports, one gateway worker) with one echo
   reader (`consumer_group = "primary"`, `max_batch_size = 256`, `echo_token_delay_ms = --delay-ms`: one decode
   step per token at a model's pace) and waits for `GET /healthz` = 200 on the management port.
2. For each concurrency, runs `--rounds` rounds; a round is a window of each condition, in turn, the order
   reversed every other round (each window a warm-up whose requests are not counted, then `--duration` seconds),
   with a keep-alive connection per client. Every condition streams the same generation: one user message of
   `--words` words, which the reader renders with its chat template and streams back token by token, at most
   `--max-tokens` tokens:
   * **chat**: `POST /v1/chat/completions {"model": "primary", "messages": [...], "max_tokens", "stream": true,
     "stream_options": {"include_usage": true}}` on the OpenAI port (a token: a chunk whose delta has content);
   * **responses**: `POST /v1/responses {"model": "primary", "input": <the message>, "max_output_tokens", "stream":
     true}` (stored, as by default; `--no-store`: `"store": false`); a token: a `response.output_text.delta` event;
   * **messages**: `POST /v1/messages {"model": "primary", "messages": [...], "max_tokens", "stream": true}`; a
     token: a `content_block_delta` event with a `text_delta`;
   * **takeoff**: `POST /generate_stream {"text": <the rendered text>, "max_new_tokens"}` on the inference port: the
     same tokens, without the template and the event envelopes.
3. Prints per condition: responses/s, streamed tokens/s, time to first token (p50, p95: the first event with text),
   total latency (p50), and the gateway worker's CPU over the measured windows (CPUs busy, milliseconds per
   response); then the ratios chat / takeoff, responses / chat and messages / chat of responses/s (target >= 0.9
   for the last two), of time to first token and of gateway CPU per response. Figures are reported, never
   asserted.
   The client scans bytes rather than decoding events (`RawConnection`: it shares the machine's cores with the
   server); `--client httpx` decodes every event as JSON, as an OpenAI or Anthropic client would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    CLK_TCK,
    PORT_NAMES,
    Server,
    StreamTally,
    cpu_snapshot,
    free_ports,
    http_status,
    launch_liftoff,
    post_request,
    verdict,
)

TARGET = 0.9  # responses / chat and messages / chat, responses/s
GATEWAY = "gateway workers"  # the role of bench.common's CPU snapshots


def start_server(tmp: Path, delay_ms: int) -> tuple[Server, dict[str, int]]:
    ports = free_ports(6)
    server = launch_liftoff(tmp, ports, [
        'host = "127.0.0.1"', f'state_dir = "{tmp / "state"}"', 'log_level = "WARNING"', 'reserved_consumers = ""',
        "workers = 1", "", "[[readers]]", 'model_name = "echo"', 'consumer_group = "primary"', "max_batch_size = 256",
        f"echo_token_delay_ms = {delay_ms}"])
    named = dict(zip(PORT_NAMES, ports, strict=True))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and server.proc.poll() is None:
        if http_status(named["management_port"], "GET", "/healthz") == 200:
            return server, named
        time.sleep(0.2)
    server.stop(30)
    sys.exit(f"the server did not become healthy:\n{server.log_tail(60)}")


@dataclass(frozen=True)
class Condition:
    """One stream to measure: where it goes, and how its tokens and failures show, in bytes and as decoded events."""

    name: str
    port: int
    path: str
    body: dict[str, object]
    text: re.Pattern[bytes]  # an event that carries text, in the stream's bytes
    failure: re.Pattern[bytes]  # what only a failed stream holds
    is_text: Callable[[dict[str, Any]], bool] | None = None  # httpx: a decoded event with text (None: every event)
    is_failure: Callable[[dict[str, Any]], bool] = lambda _: False
    done: str | None = None  # httpx: the data that ends the stream

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"


def conditions(ports: dict[str, int], message: str, rendered: str, max_tokens: int,
               store: bool) -> list[Condition]:
    openai, messages = ports["openai_port"], [{"role": "user", "content": message}]
    responses: dict[str, object] = {"model": "primary", "input": message, "max_output_tokens": max_tokens,
                                    "stream": True, **({} if store else {"store": False})}
    return [
        Condition("chat", openai, "/v1/chat/completions",
                  {"model": "primary", "messages": messages, "max_tokens": max_tokens, "stream": True,
                   "stream_options": {"include_usage": True}},
                  re.compile(rb'"content":"[^"]'),  # a delta with text (the role chunk's content is "")
                  re.compile(rb'"error"'),
                  lambda e: any(c.get("delta", {}).get("content") for c in e.get("choices", [])),
                  lambda e: "error" in e, "[DONE]"),
        Condition("responses", openai, "/v1/responses", responses,
                  re.compile(rb"event: response\.output_text\.delta\n"),
                  re.compile(rb"event: (?:error|response\.failed)\n"),
                  lambda e: e.get("type") == "response.output_text.delta",
                  lambda e: e.get("type") in ("error", "response.failed")),
        Condition("messages", openai, "/v1/messages",
                  {"model": "primary", "messages": messages, "max_tokens": max_tokens, "stream": True},
                  re.compile(rb'"type":"text_delta"'),
                  re.compile(rb"event: error\n"),
                  lambda e: e.get("type") == "content_block_delta" and e["delta"].get("type") == "text_delta",
                  lambda e: e.get("type") == "error"),
        Condition("takeoff", ports["port"], "/generate_stream", {"text": rendered, "max_new_tokens": max_tokens},
                  re.compile(rb"data:"), re.compile(rb'"error"|event: error\n')),
    ]


@dataclass
class Result(StreamTally):
    total_s: list[float] = field(default_factory=list)
    window_s: float = 0.0
    gateway_ticks: int = 0  # CPU the gateway workers spent in the measured windows

    def merged(self, other: Result) -> Result:
        return Result(ttft_s=self.ttft_s + other.ttft_s, tokens=self.tokens + other.tokens,
                      errors=self.errors + other.errors, total_s=self.total_s + other.total_s,
                      window_s=self.window_s + other.window_s, gateway_ticks=self.gateway_ticks + other.gateway_ticks)

    def gateway_ms(self) -> float:
        """The gateway workers' CPU milliseconds per response counted."""
        return self.gateway_ticks / CLK_TCK * 1000 / len(self.total_s) if self.total_s else float("nan")

    def row(self, label: str) -> str:
        gw_s = self.gateway_ticks / CLK_TCK
        return (f"{label:<18}{len(self.total_s) / self.window_s:>9.1f}{self.tokens / self.window_s:>10.0f}"
                f"{pct(self.ttft_s, 0.5) * 1000:>9.1f}ms{pct(self.ttft_s, 0.95) * 1000:>9.1f}ms"
                f"{pct(self.total_s, 0.5) * 1000:>9.1f}ms{self.errors:>5}{gw_s / self.window_s:>8.2f}"
                f"{self.gateway_ms():>11.2f}")


HEADER = (f"{'condition':<18}{'resp/s':>9}{'tok/s':>10}{'ttft p50':>11}{'ttft p95':>11}{'total p50':>11}{'err':>5}"
          f"{'gw cpu':>8}{'gw ms/resp':>11}")


async def one_stream(client: httpx.AsyncClient, cond: Condition) -> tuple[float, float, int]:
    """One stream through httpx, each event parsed as a protocol's client would (`--client httpx`)."""
    started = time.perf_counter()
    first = None
    tokens = 0
    async with client.stream("POST", cond.url, json=cond.body) as response:
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"{response.status_code}: {response.text[:200]}")
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == cond.done:
                break
            if cond.is_text is not None:
                decoded = json.loads(data)
                if cond.is_failure(decoded):
                    raise RuntimeError(data[:200])
                has_text = cond.is_text(decoded)
            else:
                has_text = True
            if has_text:
                tokens += 1
                if first is None:
                    first = time.perf_counter()
    ended = time.perf_counter()
    return (first or ended) - started, ended - started, tokens


_CHUNKED_END = b"\r\n0\r\n\r\n"


class RawConnection:
    """A keep-alive HTTP/1.1 connection that writes one prepared request and reads the chunked answer as bytes.

    The default client (`--client raw`): on a two-core machine the client shares the CPUs with the server, and with
    httpx about half of the client's CPU went to decoding lines and events, which came back as extra milliseconds of
    time to first token, more for the OpenAI port's larger chunks. Scanning bytes measures the server instead.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def stream(self, request: bytes, cond: Condition) -> tuple[float, float, int]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        started = time.perf_counter()
        self.writer.write(request)
        buf, first = b"", None
        while not _complete(buf):
            data = await self.reader.read(65536)
            if not data:
                self.writer = None
                raise RuntimeError("the server closed the connection")
            buf += data
            if first is None and _has_text(buf, cond.text):
                first = time.perf_counter()
        ended = time.perf_counter()
        head, _, events = buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200") or cond.failure.search(events):
            raise RuntimeError(buf[:300].decode(errors="replace"))
        return (first or ended) - started, ended - started, len(cond.text.findall(events))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _complete(buf: bytes) -> bool:
    """A whole answer: a chunked stream's last chunk, or (an error answer) as many bytes as content-length says."""
    if buf.endswith(_CHUNKED_END):
        return True
    head, sep, body = buf.partition(b"\r\n\r\n")
    if not sep:
        return False
    match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    return match is not None and len(body) >= int(match.group(1))


def _has_text(buf: bytes, text: re.Pattern[bytes]) -> bool:
    _, sep, events = buf.partition(b"\r\n\r\n")
    return bool(sep) and text.search(events) is not None


async def measure(cond: Condition, conc: int, warmup_s: float, duration_s: float, groups: dict[str, list[int]],
                  client_kind: str = "raw") -> Result:
    """`conc` clients streaming `cond` in a closed loop for a warm-up, then a measured window of `duration_s`; the
    gateway workers' CPU (of `groups`, by role) over that window."""
    result = Result()
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    request = post_request(cond.port, cond.path, json.dumps(cond.body).encode())
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        loop = asyncio.get_running_loop()
        start = loop.time()
        measure_from, end = start + warmup_s, start + warmup_s + duration_s

        async def worker() -> None:
            conn = RawConnection(cond.port)
            try:
                while loop.time() < end:
                    began = loop.time()
                    try:
                        if client_kind == "raw":
                            ttft, total, tokens = await conn.stream(request, cond)
                        else:
                            ttft, total, tokens = await one_stream(client, cond)
                    except (RuntimeError, OSError, httpx.HTTPError):
                        result.errors += 1
                        continue
                    if began >= measure_from and loop.time() <= end:
                        result.ttft_s.append(ttft)
                        result.total_s.append(total)
                        result.tokens += tokens
            finally:
                conn.close()

        async def window() -> None:
            await asyncio.sleep(measure_from - loop.time())
            before = cpu_snapshot(groups)
            await asyncio.sleep(end - loop.time())
            result.gateway_ticks = cpu_snapshot(groups).get(GATEWAY, 0) - before.get(GATEWAY, 0)

        await asyncio.gather(window(), *(worker() for _ in range(conc)))
    result.window_s = duration_s
    return result


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


RATIOS = [("chat", "takeoff", None), ("responses", "chat", TARGET), ("messages", "chat", TARGET)]


def print_ratios(rows: dict[tuple[str, int], Result], concs: list[int]) -> None:
    names = {name for name, _ in rows}
    print("\nratios (responses/s: higher is better for the first; ttft p50 and gateway CPU per response: lower is "
          "better)")
    for conc in concs:
        for top, bottom, target in RATIOS:
            if top not in names or bottom not in names:
                continue
            a, b = rows[(top, conc)], rows[(bottom, conc)]
            thr = len(a.total_s) / len(b.total_s) if b.total_s else float("nan")
            ttft = statistics.median(a.ttft_s) / statistics.median(b.ttft_s) if a.ttft_s and b.ttft_s else float("nan")
            cpu = a.gateway_ms() / b.gateway_ms() if b.gateway_ticks else float("nan")
            goal = f"(target >= {target:g}: {verdict(thr, target)})" if target is not None else ""
            print(f"  c={conc:<4} {top + ' / ' + bottom:<20} responses/s {thr:5.2f}x {goal:<24} ttft p50 {ttft:5.2f}x"
                  f"   gw ms/resp {cpu:5.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds per condition")
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--delay-ms", type=int, default=10, help="echo reader pause per decode step")
    parser.add_argument("--words", type=int, default=32, help="words in the user message")
    parser.add_argument("--max-tokens", type=int, default=128, help="token budget of every condition's request")
    parser.add_argument("--conc", default="1,8,32", help="comma-separated concurrencies")
    parser.add_argument("--rounds", type=int, default=2,
                        help="windows per condition, the order of the conditions reversed every other round")
    parser.add_argument("--conditions", default="chat,responses,messages,takeoff",
                        help="comma-separated conditions to run (ratios need both of their conditions)")
    parser.add_argument("--no-store", action="store_true", help="responses: send store: false (default: stored)")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw",
                        help="raw: byte-scanning HTTP/1.1 client (default); httpx: parse every event as JSON")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s windows, c=1,8")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.conc, args.rounds = 2.0, 0.5, "1,8", 1
    concs = [int(c) for c in args.conc.split(",")]
    wanted = [c.strip() for c in args.conditions.split(",") if c.strip()]
    tmp = Path(tempfile.mkdtemp(prefix="liftoff-bench-openai-"))
    server, ports = start_server(tmp, args.delay_ms)
    try:
        message = " ".join(f"word{i}" for i in range(args.words))
        rendered = f"user: {message}\nassistant: "  # the echo reader's chat template
        known = conditions(ports, message, rendered, args.max_tokens, not args.no_store)
        unknown = set(wanted) - {c.name for c in known}
        if unknown:
            sys.exit(f"unknown conditions: {', '.join(sorted(unknown))} (known: {', '.join(c.name for c in known)})")
        chosen = [c for c in known if c.name in wanted]
        streamed = min(len(rendered.split()) + 1, args.max_tokens)
        print(f"liftoff OpenAI-port streaming bench: echo reader, {args.delay_ms} ms per token, "
              f"{args.words}-word message ({streamed} streamed tokens), {args.duration:g} s windows, "
              f"x {args.rounds} rounds, {args.client} client, responses {'not ' if args.no_store else ''}stored, "
              f"1 gateway worker, {os.cpu_count()} CPUs")
        print(HEADER)
        server.refresh_groups()
        rows: dict[tuple[str, int], Result] = {}
        for conc in concs:
            for round_ in range(args.rounds):
                for cond in chosen[:: 1 if round_ % 2 == 0 else -1]:
                    res = asyncio.run(measure(cond, conc, args.warmup, args.duration, server.groups, args.client))
                    key = (cond.name, conc)
                    rows[key] = rows[key].merged(res) if key in rows else res
            for cond in chosen:
                print(rows[(cond.name, conc)].row(f"{cond.name} c={conc}"), flush=True)
        print_ratios(rows, concs)
    finally:
        server.refresh_groups()  # so that stop() can reap anything of the tree that outlives its supervisor
        server.stop(30)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
