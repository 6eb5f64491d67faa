#!/usr/bin/env python
"""Streaming chat through the OpenAI port against the same stream on the Takeoff port, in one run.

    .venv/bin/python -m bench.openai_port [--duration S] [--delay-ms 10] [--words 32] [--conc 1,8,32] [--rounds 2]
                                     [--client raw|httpx] [--quick]

1. Starts `liftoff serve` from a temporary config.toml (six free loopback ports, one gateway worker) with one echo
   reader (`consumer_group = "primary"`, `max_batch_size = 256`, `echo_token_delay_ms = --delay-ms`: one decode
   step per token at a model's pace) and waits for `GET /healthz` = 200 on the management port.
2. For each concurrency, runs `--rounds` windows of each condition, alternating which goes first (each window a
   warm-up whose requests are not counted, then `--duration` seconds), with a keep-alive connection per client:
   * **openai**: `POST /v1/chat/completions {"model": "primary", "messages": [one user message of --words words],
     "stream": true, "stream_options": {"include_usage": true}}` on the OpenAI port: the reader that takes it
     renders the chat template, then streams the rendered text back token by token;
   * **takeoff**: `POST /generate_stream {"text": <that rendered text>}` on the inference port: the same tokens,
     without the template and the chunk envelope.
3. Prints per condition: responses/s, streamed tokens/s, time to first token (p50, p95: the first content-bearing
   event) and total latency (p50), then the ratios openai / takeoff. Figures are reported, never asserted.
   The client scans bytes rather than decoding events (`RawConnection`: it shares the machine's cores with the
   server); `--client httpx` decodes every event as JSON, as an OpenAI client would.
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
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.common import PORT_NAMES, Server, StreamTally, free_ports, http_status, launch_liftoff, post_request


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


@dataclass
class Result(StreamTally):
    total_s: list[float] = field(default_factory=list)
    window_s: float = 0.0

    def merged(self, other: Result) -> Result:
        return Result(ttft_s=self.ttft_s + other.ttft_s, tokens=self.tokens + other.tokens,
                      errors=self.errors + other.errors, total_s=self.total_s + other.total_s,
                      window_s=self.window_s + other.window_s)


async def one_stream(client: httpx.AsyncClient, url: str, body: dict[str, object],
                     openai: bool) -> tuple[float, float, int]:
    """One stream through httpx, each event parsed as an OpenAI client would (`--client httpx`)."""
    started = time.perf_counter()
    first = None
    tokens = 0
    async with client.stream("POST", url, json=body) as response:
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"{response.status_code}: {response.text[:200]}")
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if openai:
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    raise RuntimeError(str(chunk["error"]))
                has_text = any(c.get("delta", {}).get("content") for c in chunk["choices"])
            else:
                has_text = True
            if has_text:
                tokens += 1
                if first is None:
                    first = time.perf_counter()
    ended = time.perf_counter()
    return (first or ended) - started, ended - started, tokens


_CHUNKED_END = b"\r\n0\r\n\r\n"
_OPENAI_TEXT = re.compile(rb'"content":"[^"]')  # a delta that carries text (the role chunk's content is "")


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

    async def stream(self, request: bytes, openai: bool) -> tuple[float, float, int]:
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
            if first is None and _has_text(buf, openai):
                first = time.perf_counter()
        ended = time.perf_counter()
        head, _, events = buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200") or b'"error"' in events or b"event: error" in events:
            raise RuntimeError(buf[:300].decode(errors="replace"))
        tokens = len(_OPENAI_TEXT.findall(events)) if openai else events.count(b"data:")
        return (first or ended) - started, ended - started, tokens

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


def _has_text(buf: bytes, openai: bool) -> bool:
    _, sep, events = buf.partition(b"\r\n\r\n")
    return bool(sep) and (_OPENAI_TEXT.search(events) is not None if openai else b"data:" in events)


def raw_request(url: str, body: dict[str, object]) -> bytes:
    port, path = url.split(":")[2].split("/", 1)
    return post_request(int(port), "/" + path, json.dumps(body).encode())


async def measure(url: str, body: dict[str, object], openai: bool, conc: int, warmup_s: float,
                  duration_s: float, client_kind: str = "raw") -> Result:
    result = Result()
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    request = raw_request(url, body)
    port = int(url.split(":")[2].split("/")[0])
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        loop = asyncio.get_running_loop()
        start = loop.time()
        measure_from, end = start + warmup_s, start + warmup_s + duration_s

        async def worker() -> None:
            conn = RawConnection(port)
            try:
                while loop.time() < end:
                    began = loop.time()
                    try:
                        if client_kind == "raw":
                            ttft, total, tokens = await conn.stream(request, openai)
                        else:
                            ttft, total, tokens = await one_stream(client, url, body, openai)
                    except (RuntimeError, OSError, httpx.HTTPError):
                        result.errors += 1
                        continue
                    if began >= measure_from and loop.time() <= end:
                        result.ttft_s.append(ttft)
                        result.total_s.append(total)
                        result.tokens += tokens
            finally:
                conn.close()

        await asyncio.gather(*(worker() for _ in range(conc)))
    result.window_s = duration_s
    return result


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds per condition")
    parser.add_argument("--warmup", type=float, default=1.5)
    parser.add_argument("--delay-ms", type=int, default=10, help="echo reader pause per decode step")
    parser.add_argument("--words", type=int, default=32, help="words in the user message")
    parser.add_argument("--conc", default="1,8,32", help="comma-separated concurrencies")
    parser.add_argument("--rounds", type=int, default=2,
                        help="windows per condition, alternating which port goes first (drift hits both alike)")
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw",
                        help="raw: byte-scanning HTTP/1.1 client (default); httpx: parse every event as JSON")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 s windows, c=1,8")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.conc, args.rounds = 2.0, 0.5, "1,8", 1
    concs = [int(c) for c in args.conc.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="liftoff-bench-openai-"))
    server, ports = start_server(tmp, args.delay_ms)
    try:
        message = " ".join(f"word{i}" for i in range(args.words))
        rendered = f"user: {message}\nassistant: "  # the echo reader's chat template
        openai_url = f"http://127.0.0.1:{ports['openai_port']}/v1/chat/completions"
        takeoff_url = f"http://127.0.0.1:{ports['port']}/generate_stream"
        openai_body = {"model": "primary", "messages": [{"role": "user", "content": message}], "stream": True,
                       "stream_options": {"include_usage": True}}
        takeoff_body = {"text": rendered}
        print(f"liftoff OpenAI-port streaming bench: echo reader, {args.delay_ms} ms per token, "
              f"{args.words}-word message ({len(rendered.split()) + 1} streamed tokens), {args.duration:g} s windows, "
              f"x {args.rounds} rounds, {args.client} client, 1 gateway worker, {os.cpu_count()} CPUs")
        print(f"{'condition':<16}{'resp/s':>9}{'tok/s':>10}{'ttft p50':>11}{'ttft p95':>11}{'total p50':>11}"
              f"{'err':>5}")
        rows: dict[tuple[str, int], Result] = {}
        conditions = [("openai", openai_url, openai_body, True), ("takeoff", takeoff_url, takeoff_body, False)]
        for conc in concs:
            for round_ in range(args.rounds):
                for name, url, body, is_openai in conditions[:: 1 if round_ % 2 == 0 else -1]:
                    res = asyncio.run(measure(url, body, is_openai, conc, args.warmup, args.duration, args.client))
                    rows[(name, conc)] = rows[(name, conc)].merged(res) if (name, conc) in rows else res
            for name, *_ in conditions:
                res = rows[(name, conc)]
                print(f"{name + f' c={conc}':<16}{len(res.total_s) / res.window_s:>9.1f}"
                      f"{res.tokens / res.window_s:>10.0f}{pct(res.ttft_s, 0.5) * 1000:>9.1f}ms"
                      f"{pct(res.ttft_s, 0.95) * 1000:>9.1f}ms{pct(res.total_s, 0.5) * 1000:>9.1f}ms{res.errors:>5}")
        print("\nratios openai / takeoff (throughput: higher is better for openai; ttft: lower is better)")
        for conc in concs:
            o, t = rows[("openai", conc)], rows[("takeoff", conc)]
            thr = (len(o.total_s) / len(t.total_s)) if t.total_s else float("nan")
            ttft = statistics.median(o.ttft_s) / statistics.median(t.ttft_s) if o.ttft_s and t.ttft_s else float("nan")
            print(f"  c={conc:<4} responses/s {thr:5.2f}x   ttft p50 {ttft:5.2f}x")
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
