#!/usr/bin/env python
"""Soak test: a steady mixed load on `liftoff serve` for a bounded time, watching for lost requests and growth.

    .venv/bin/python -m bench.soak [--models echo|real] [--minutes M] [--concurrency N] [--workers N] [--quick]

Starts ``liftoff serve`` on free loopback ports (embedded Redis, ``--workers`` gunicorn workers, two echo readers
in group ``primary``), warms up, then holds ``--concurrency`` keep-alive connections busy for ``--minutes`` with a
mix of ``POST /generate`` (one prompt, or a user batch of 4) and ``POST /generate_stream`` (read to the last
event). Every response is checked against what was sent (echo returns the prompt). Then it stops sending, waits
for the requests in flight (the drain), and prints what follows.

``--models real`` serves real models instead of the echo readers: a generation reader (``gen``, group ``primary``)
on the random-weight ~100M Llama of tests/support/models.py ``build_small_llama``, built into
``<tmp>/models/small-llama`` (``repository_path``), and an embedding reader (``embed``, group ``embed``) on the
bundled sentence-transformers/all-MiniLM-L6-v2, each with one torch thread (``--threads``). The mix: ``/generate``
of a short prompt (max_new_tokens 16-32, min_new_tokens 8), ``/generate_stream`` read to its ``event: metadata``,
streams abandoned after 3 events by closing the connection (counted as cancelled, not lost), and ``/embed`` of one
text or a user batch of 2 or 4 (one 384-float vector each); 8 connections by default.

* outcomes per request kind: sent, answered by status, wrong bodies, transport errors, and LOST requests (sent but
  never answered with a complete response);
* latency p50/p99 per kind;
* RSS and open fds of every process of the server tree (supervisor, gunicorn arbiter and workers, readers,
  redis-server) after warm-up, at the end of the load and after the drain;
* Redis: request stream length, pending entries, consumers (per consumer group), reply stream lengths,
  used_memory, DLQ length, the namespace's keys;
* a time series of those figures, sampled every ``--interval`` seconds, so that slow growth shows;
* one verdict line per target: no lost requests, right answers, memory flat, no restarts, streams flat, keys flat.

Nothing is asserted: the exit status is non-zero only if the server fails to start (130 on Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import psutil
import redis

from bench.common import (
    CLK_TCK,
    THREADS_ENV,
    Server,
    child_env,
    client_loop,
    free_ports,
    git_revision,
    guarded,
    host_line,
    http_status,
    launch_liftoff,
    machine_busy_ticks,
    nearest_rank_ms,
    post_json,
    post_request,
    remove_tmp,
    response_head,
    run_line,
    run_loop,
    set_nodelay,
    start_failed,
    wait_ready,
)
from liftoff.core.keys import Keys
from tests.support.models import CORPUS

NAMESPACE = "liftoff"
GROUP = "primary"
EMBED_GROUP = "embed"
READER_IDS = ("echo-a", "echo-b")
REQUEST_TIMEOUT_S = 30
KINDS = ("single", "batch4", "stream")
WEIGHTS = (0.6, 0.25, 0.15)
BATCH = 4
# --models real: a generation reader on a random-weight ~100M Llama and an embedding reader on MiniLM.
GEN_READER, EMBED_READER = "gen", "embed"
LLAMA_DIR = "small-llama"  # <tmp>/models/small-llama, built by tests/support/models.py build_small_llama
EMBED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
EMBED_DIM = 384
REAL_TIMEOUT_S = 60
REAL_KINDS = ("generate", "stream", "abandon", "embed")
REAL_WEIGHTS = (0.35, 0.25, 0.15, 0.25)
NEW_TOKENS = (16, 32)  # max_new_tokens drawn in this range; min_new_tokens MIN_NEW so that no answer is empty
MIN_NEW = 8
ABANDON_AFTER = 3  # an abandoned stream's connection is closed after this many events
MB = 1024 * 1024
# Prompts: a unique tag (connection and sequence number) then 3-12 words, a few of them not ASCII. The echo engine
# returns at most max_new_tokens (128) tokens; these stay far below.
_VOCAB = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa quebec "
    "romeo sierra tango uniform victor whiskey xray yankee zulu the quick brown fox jumps over a lazy dog "
    "café naïve über Zürich façade 東京 ☃ 42 3.14 -7 (x) [y] {z} a/b x=y"
)
VOCAB = _VOCAB.split()


# --- the load --------------------------------------------------------------------------------------------------------
class Load:
    """`conc` keep-alive connections, each sending the next request of the mix as soon as the previous one ends."""

    def __init__(self, port: int, conc: int, seed: int, real: bool = False) -> None:
        self.port = port
        self.conc = conc
        self.real = real
        self.kinds, self.weights = (REAL_KINDS, REAL_WEIGHTS) if real else (KINDS, WEIGHTS)
        self.rng = random.Random(seed)
        self.sending = False  # new requests are started while this is true
        self.closing = False
        self.record_from_ns = 1 << 62  # latencies of responses completing from here on are recorded
        self.sent: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()  # complete responses, any status
        self.status: dict[str, Counter[int]] = {k: Counter() for k in self.kinds}
        self.lat: dict[str, list[int]] = {k: [] for k in self.kinds}  # ns, 200 responses after warm-up
        self.ttfb: list[int] = []  # ns, first byte of 200 streams after warm-up
        self.mismatched: Counter[str] = Counter()
        self.stream_error_events: Counter[str] = Counter()  # `event: error` inside a 200 stream
        self.cut: Counter[str] = Counter()  # connection closed with the request unanswered
        self.cancelled: Counter[str] = Counter()  # streams this client abandoned on purpose (closed its connection)
        self.abandon_ms: list[int] = []  # ns from sending to abandoning, after warm-up
        self.gen_tokens: list[int] = []  # generated_tokens of the completed streams (their metadata; real models)
        self.transport_errors: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}  # what went wrong -> a few examples
        self.conns: list[Conn] = []

    def note(self, what: str, example: str) -> None:
        lst = self.examples.setdefault(what, [])
        if len(lst) < 3:
            lst.append(example[:400])

    @property
    def inflight(self) -> int:
        return sum(1 for c in self.conns if c.busy)

    @property
    def answered_total(self) -> int:
        return sum(self.answered.values())

    @property
    def non2xx(self) -> int:
        return sum(n for c in self.status.values() for s, n in c.items() if not 200 <= s < 300)

    def next_request(self, conn_id: int, seq: int) -> tuple[str, Any, bytes]:
        if self.real:
            return self.next_real(conn_id, seq)
        kind = self.rng.choices(KINDS, WEIGHTS)[0]
        tag = f"c{conn_id}n{seq}"

        def prompt(sub: str = "") -> str:
            return " ".join([tag + sub, *self.rng.choices(VOCAB, k=self.rng.randint(3, 12))])

        expected: Any = [prompt(f"b{i}") for i in range(BATCH)] if kind == "batch4" else prompt()
        body = json.dumps({"text": expected}, ensure_ascii=False).encode()
        path = "/generate_stream" if kind == "stream" else "/generate"
        return kind, expected, post_request(self.port, path, body)

    def next_real(self, conn_id: int, seq: int) -> tuple[str, Any, bytes]:
        """A request of the real-model mix; `expected` is what `verify_real` checks the answer against: for
        generation the request body, for /embed the number of vectors (None: one text, one vector)."""
        kind = self.rng.choices(REAL_KINDS, REAL_WEIGHTS)[0]
        words = " ".join(CORPUS).split()

        def text() -> str:
            i = self.rng.randrange(len(words))
            return " ".join(words[i:i + self.rng.randint(3, 12)]) or words[0]

        if kind == "embed":
            n = self.rng.choice((None, None, 2, 4))  # one text, or a user batch
            payload: dict[str, Any] = {"text": text() if n is None else [text() for _ in range(n)],
                                       "consumer_group": EMBED_GROUP}
            return kind, n, post_request(self.port, "/embed", json.dumps(payload, ensure_ascii=False).encode())
        payload = {"text": text(), "max_new_tokens": self.rng.randint(*NEW_TOKENS), "min_new_tokens": MIN_NEW,
                   "consumer_group": GROUP}
        if kind != "generate":
            payload["return_metadata"] = True  # the stream's last event: `event: metadata`, its done event
        path = "/generate" if kind == "generate" else "/generate_stream"
        return kind, payload, post_request(self.port, path, json.dumps(payload, ensure_ascii=False).encode())

    async def start(self) -> None:
        self.sending = True
        self.conns = [Conn(self, i) for i in range(self.conc)]
        await asyncio.gather(*(self.connect(c) for c in self.conns))

    async def connect(self, conn: Conn, delay: float = 0.0) -> None:
        if delay:
            await asyncio.sleep(delay)
        if not self.sending or self.closing:
            return
        try:
            await asyncio.get_running_loop().create_connection(lambda: conn, "127.0.0.1", self.port)
        except OSError as exc:
            self.transport_errors[f"connect failed: {type(exc).__name__}"] += 1
            self.note("connect failed", str(exc))
            asyncio.get_running_loop().create_task(self.connect(conn, 0.1))

    async def drain(self, timeout_s: float) -> float:
        """Stop starting requests; wait for those in flight. Returns the seconds waited."""
        self.sending = False
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if not self.inflight:
                break
            await asyncio.sleep(0.05)
        return time.monotonic() - t0

    def close(self) -> None:
        self.closing = True
        for conn in self.conns:
            if conn.transport is not None:
                conn.transport.close()


class Conn(asyncio.Protocol):
    def __init__(self, load: Load, conn_id: int) -> None:
        self.load = load
        self.id = conn_id
        self.seq = 0
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.kind = ""
        self.expected: Any = None
        self.t0 = 0
        self.t_first = 0
        self._reset()

    def _reset(self) -> None:
        self.buf = bytearray()
        self.head: bytes | None = None  # lower-cased response head once complete
        self.status = 0
        self.clen = -1
        self.chunked = False
        self.parts: list[bytes] = []

    # transport callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        set_nodelay(transport)
        if self.load.sending and not self.busy:
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        load = self.load
        if self.busy:
            self.busy = False
            load.cut[self.kind] += 1
            load.transport_errors["connection closed mid-request"] += 1
            load.note("connection closed mid-request",
                      f"{self.kind} after {(perf_counter_ns() - self.t0) / 1e6:.0f} ms, {len(self.buf)} bytes "
                      f"unparsed, status {self.status or '-'}: {exc}")
        if load.sending and not load.closing:
            asyncio.get_running_loop().create_task(load.connect(self, 0.05))

    def send(self) -> None:
        self.seq += 1
        self.kind, self.expected, raw = self.load.next_request(self.id, self.seq)
        self._reset()
        self.busy = True
        self.load.sent[self.kind] += 1
        self.t_first = 0
        self.t0 = perf_counter_ns()
        self.transport.write(raw)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        if not self.busy:
            self.load.transport_errors["bytes with no request in flight"] += 1
            self.load.note("bytes with no request in flight", repr(data[:200]))
            return
        if not self.t_first:
            self.t_first = perf_counter_ns()
        self.buf += data
        if self.head is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            del self.buf[: end + 4]
            self.head = head
            self.status, self.clen, self.chunked = response_head(head)
            if self.clen < 0 and not self.chunked:
                self.load.transport_errors["response without length"] += 1
                self.load.note("response without length", repr(head[:300]))
                self.transport.close()  # type: ignore[union-attr]  # the request counts as cut
                return
        if self.clen >= 0:
            if len(self.buf) < self.clen:
                return
            body = bytes(self.buf[: self.clen])
        else:
            while True:  # chunked: take every complete chunk out of the buffer
                i = self.buf.find(b"\r\n")
                if i < 0:
                    return
                size = int(bytes(self.buf[:i]).split(b";")[0], 16)
                if size == 0:
                    if self.buf.find(b"\r\n\r\n", i) < 0:  # the terminating empty line (after any trailers)
                        return
                    break
                if len(self.buf) < i + 2 + size + 2:
                    return
                self.parts.append(bytes(self.buf[i + 2 : i + 2 + size]))
                del self.buf[: i + 2 + size + 2]
                if self.kind == "abandon" and self.status == 200 and self.abandon():
                    return
            body = b"".join(self.parts)
        self.complete(body)

    def abandon(self) -> bool:
        """An `abandon` stream: once ABANDON_AFTER events are in, close the connection (the client goes away
        mid-stream); it reconnects in connection_lost and the request counts as cancelled, not lost."""
        if b"".join(self.parts).count(b"\n\n") < ABANDON_AFTER:
            return False
        load = self.load
        t1 = perf_counter_ns()
        self.busy = False
        load.cancelled[self.kind] += 1
        if t1 >= load.record_from_ns:
            load.abandon_ms.append(t1 - self.t0)
        self.transport.close()  # type: ignore[union-attr]
        return True

    # one response
    def complete(self, body: bytes) -> None:
        t1 = perf_counter_ns()
        load, kind = self.load, self.kind
        head = self.head or b""
        self.busy = False
        load.answered[kind] += 1
        load.status[kind][self.status] += 1
        if self.status == 200:
            if self.verify(head, body) and t1 >= load.record_from_ns:
                load.lat[kind].append(t1 - self.t0)
                if kind == "stream":
                    load.ttfb.append(self.t_first - self.t0)
        else:
            load.note(f"HTTP {self.status} ({kind})", body.decode(errors="replace"))
        if b"\r\nconnection: close" in head:
            self.transport.close()  # type: ignore[union-attr]  # reconnects in connection_lost
            return
        if load.sending:
            self.send()

    def verify(self, head: bytes, body: bytes) -> bool:
        if self.load.real:
            return self.verify_real(head, body)
        load, kind = self.load, self.kind
        try:
            if kind == "stream":
                if b"\r\ncontent-type: text/event-stream" not in head:
                    raise ValueError(f"content-type is not text/event-stream: {head!r}")
                got, errors = parse_sse(body)
                if errors:
                    load.stream_error_events[kind] += 1
                    raise ValueError(f"error event(s): {errors}")
            else:
                got = json.loads(body)["text"]
        except (ValueError, KeyError, TypeError) as exc:
            load.mismatched[kind] += 1
            load.note(f"wrong body ({kind})", f"sent {self.expected!r}: {exc}; body {body[:300]!r}")
            return False
        if got != self.expected:
            load.mismatched[kind] += 1
            load.note(f"wrong body ({kind})", f"sent {self.expected!r}, got {got!r}")
            return False
        return True


    def verify_real(self, head: bytes, body: bytes) -> bool:
        """A real model's answer: /generate a non-empty text; a stream (an abandoned one that ended before it was
        abandoned included) non-empty text events, no error event, and `event: metadata` last; /embed one vector
        of EMBED_DIM floats per text."""
        load, kind = self.load, self.kind
        try:
            if kind == "embed":
                result = json.loads(body)["result"]
                vectors = [result] if self.expected is None else result
                if not isinstance(vectors, list) or len(vectors) != (self.expected or 1):
                    raise ValueError(f"{len(vectors) if isinstance(vectors, list) else vectors!r} vectors, "
                                     f"want {self.expected or 1}")
                for v in vectors:
                    if (not isinstance(v, list) or len(v) != EMBED_DIM
                            or not all(isinstance(x, float) and x == x for x in v)):
                        raise ValueError(f"not a vector of {EMBED_DIM} floats: {str(v)[:80]}")
                return True
            if kind == "generate":
                text = json.loads(body)["text"]
                if not isinstance(text, str) or not text:
                    raise ValueError(f"empty or not a string: {text!r}")
                return True
            if b"\r\ncontent-type: text/event-stream" not in head:
                raise ValueError(f"content-type is not text/event-stream: {head!r}")
            events = sse_events(body)
            errors = [data for name, data in events if name == "error"]
            if errors:
                load.stream_error_events[kind] += 1
                raise ValueError(f"error event(s): {errors}")
            if not events or events[-1][0] != "metadata":
                raise ValueError(f"the last event is not `event: metadata` but {events[-1:]!r}")
            text = "".join(data for name, data in events if name is None)
            if not text:
                raise ValueError("no text in the stream")
            meta = json.loads(events[-1][1])["metadata"]
            if isinstance(meta, dict) and isinstance(meta.get("generated_tokens"), int):
                load.gen_tokens.append(meta["generated_tokens"])
            return True
        except (ValueError, KeyError, TypeError) as exc:
            load.mismatched[kind] += 1
            load.note(f"wrong body ({kind})", f"sent {str(self.expected)[:160]}: {exc}; body {body[:300]!r}")
            return False


def sse_events(body: bytes) -> list[tuple[str | None, str]]:
    """The events of an SSE body, in order: (name or None, data lines joined with "\n")."""
    out: list[tuple[str | None, str]] = []
    for block in body.decode().split("\n\n"):
        if not block:
            continue
        name = None
        data: list[str] = []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(" ") else value)
        out.append((name, "\n".join(data)))
    return out


def parse_sse(body: bytes) -> tuple[str, list[str]]:
    """The text of a /generate_stream body (unnamed events' data joined) and the data of its `error` events."""
    events = sse_events(body)
    return "".join(data for name, data in events if name is None), [data for name, data in events if name == "error"]


# --- the server --------------------------------------------------------------------------------------------------
def start_liftoff(tmp: Path, ports: list[int], workers: int) -> Server:
    lines = [
        'host = "127.0.0.1"',
        f'state_dir = "{tmp / "state"}"',
        f'redis_namespace = "{NAMESPACE}"',
        f"workers = {workers}",
        'log_level = "WARNING"',
        'reserved_consumers = ""',
        f"request_timeout_s = {REQUEST_TIMEOUT_S}",
    ]
    for reader_id in READER_IDS:
        lines += [
            "",
            "[[readers]]",
            f'reader_id = "{reader_id}"',
            'model_name = "echo"',
            f'consumer_group = "{GROUP}"',
            "echo_token_delay_ms = 2",
            "max_batch_size = 16",
        ]
    return launch_liftoff(tmp, ports, lines)


def start_real(tmp: Path, ports: list[int], workers: int, threads: int, page_cache_size: str | None = None) -> Server:
    """`liftoff serve` with a generation reader on the random-weight ~100M Llama (built here into <tmp>/models) in
    group `primary` and an embedding reader on the bundled MiniLM in group `embed`, each with its defaults."""
    import os

    from tests.support.models import build_small_llama

    models = tmp / "models"
    t = time.monotonic()
    build_small_llama(models / LLAMA_DIR)
    print(f"built the random-weight ~100M Llama in {models / LLAMA_DIR} in {time.monotonic() - t:.0f}s", flush=True)
    lines = [
        'host = "127.0.0.1"',
        f"state_dir = {json.dumps(str(tmp / 'state'))}",
        f"repository_path = {json.dumps(str(models))}",
        f'redis_namespace = "{NAMESPACE}"',
        f"workers = {workers}",
        'log_level = "WARNING"',
        'reserved_consumers = ""',
        f"request_timeout_s = {REAL_TIMEOUT_S}",
        "",
        "[[readers]]",
        f'reader_id = "{GEN_READER}"',
        f'model_name = "{LLAMA_DIR}"',
        f'consumer_group = "{GROUP}"',
        *([f"page_cache_size = {json.dumps(page_cache_size)}"] if page_cache_size else []),
        "",
        "[[readers]]",
        f'reader_id = "{EMBED_READER}"',
        f'model_name = "{EMBED_MODEL}"',
        f'consumer_group = "{EMBED_GROUP}"',
    ]
    env = child_env()
    env.setdefault("HF_HUB_OFFLINE", "1")
    if threads:
        env[THREADS_ENV] = str(threads)
    elif os.environ.get(THREADS_ENV):
        env[THREADS_ENV] = os.environ[THREADS_ENV]
    return launch_liftoff(tmp, ports, lines, env, name="liftoff")


def wait_real_ready(server: Server, mgmt_port: int, timeout_s: float) -> list[str]:
    """/healthz 200, then one short /generate (group primary) and one /embed (group embed) answered with 200."""
    deadline = time.monotonic() + timeout_s
    probes = [("/generate", {"text": "hello world", "max_new_tokens": 4, "consumer_group": GROUP}),
              ("/embed", {"text": "hello world", "consumer_group": EMBED_GROUP})]
    healthy = False
    last = ""
    while probes and time.monotonic() < deadline:
        if server.proc.poll() is not None:
            return [f"{server.name} exited with code {server.proc.returncode}:\n{server.log_tail()}"]
        if not healthy:
            healthy = http_status(mgmt_port, "GET", "/healthz") == 200
        else:
            path, payload = probes[0]
            status, body = post_json(server.port, path, payload, timeout=max(1.0, deadline - time.monotonic()))
            if status == 200:
                probes.pop(0)
                continue
            last = f"{path}: {status} {str(body)[:200]}"
        time.sleep(0.5)
    if probes:
        return [f"{server.name} not ready within {timeout_s:g}s (last: {last or '/healthz not 200'}):\n"
                f"{server.log_tail()}"]
    return []


class Tree:
    """The processes of the `liftoff serve` tree, each with a stable label (a restarted worker gets a new one)."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.labels: dict[int, str] = {}  # pid -> label, kept for the whole run
        self.short: dict[str, str] = {}  # label -> column name
        self.workers = 0

    def _label(self, proc: psutil.Process, parent_label: str | None) -> str:
        if proc.pid in self.labels:
            return self.labels[proc.pid]
        try:
            cmd = proc.cmdline()
        except psutil.Error:
            cmd = []
        joined = " ".join(cmd)
        if proc.pid == self.root:
            label, short = "supervisor", "sup"
        elif "redis-server" in joined:
            label, short = "redis-server", "redis"
        elif "readers" in cmd and "-m" in cmd:
            rid = cmd[cmd.index("--reader-id") + 1] if "--reader-id" in cmd[:-1] else str(proc.pid)
            label, short = f"reader {rid}", f"r:{rid}"
        elif parent_label == "supervisor":
            label, short = "gunicorn arbiter", "arb"
        elif parent_label == "gunicorn arbiter":
            self.workers += 1
            label, short = f"gateway worker {self.workers}", f"w{self.workers}"
        else:
            label, short = f"other {proc.pid} {joined[:40]}", f"o{proc.pid}"
        n = 1
        base, base_short = label, short
        while label in self.short:  # the same role again under a new pid: a restart
            n += 1
            label, short = f"{base} #{n}", f"{base_short}#{n}"
        self.labels[proc.pid] = label
        self.short[label] = short
        return label

    def processes(self) -> dict[str, psutil.Process]:
        found: dict[str, psutil.Process] = {}

        def walk(proc: psutil.Process, parent_label: str | None) -> None:
            label = self._label(proc, parent_label)
            found[label] = proc
            try:
                children = sorted(proc.children(), key=lambda p: p.pid)
            except psutil.Error:
                return
            for child in children:
                walk(child, label)

        with contextlib.suppress(psutil.Error):
            walk(psutil.Process(self.root), None)
        return found

    def pid_of(self, label: str) -> int | None:
        return next((pid for pid, lab in self.labels.items() if lab == label), None)


@dataclass
class Sample:
    t: float  # seconds since the end of the warm-up
    answered: int  # complete responses so far
    inflight: int
    non2xx: int
    rss: dict[str, int] = field(default_factory=dict)  # label -> bytes
    fds: dict[str, int] = field(default_factory=dict)
    clients: dict[str, int] = field(default_factory=dict)  # established connections on the inference port
    server_cpu_s: float = 0.0  # user + system CPU seconds of the server tree so far
    machine_busy_s: float = 0.0  # busy CPU seconds of the whole machine (/proc/stat) so far
    redis: dict[str, Any] = field(default_factory=dict)


def group_figures(client: redis.Redis, keys: Keys, group: str) -> dict[str, Any]:
    """Request stream length, pending entries, lag and consumers of one consumer group."""
    stream = keys.requests(group)
    out: dict[str, Any] = {"xlen": client.xlen(stream)}
    try:
        groups = client.xinfo_groups(stream)
    except redis.ResponseError:
        groups = []
    info = next((g for g in groups if g["name"] == group), None)
    out["pending"] = info["pending"] if info else None
    out["lag"] = info.get("lag") if info else None
    out["consumers"] = info["consumers"] if info else None
    out["xpending"] = client.xpending(stream, group)["pending"] if info else None
    return out


def redis_figures(client: redis.Redis, keys: Keys, groups: tuple[str, ...] = (GROUP,)) -> dict[str, Any]:
    """Redis figures; "xlen" and "pending" are summed over `groups`, per group under "groups"; "keys" counts the
    namespace's keys (`<ns>:*`, what Liftoff owns), "dbsize" the whole database, "key_names" the namespace's."""
    out: dict[str, Any] = {}
    try:
        pipe = client.pipeline(transaction=False)
        pipe.xlen(keys.dlq(GROUP))
        pipe.dbsize()
        pipe.info("memory")
        out["dlq"], out["dbsize"], mem = pipe.execute()
        out["used_memory"] = mem["used_memory"]
        key_names = sorted(client.scan_iter(match=f"{keys.ns}:*", count=1000))
        out["keys"], out["key_names"] = len(key_names), key_names
        out["groups"] = {g: group_figures(client, keys, g) for g in groups}
        for figure in ("xlen", "pending", "lag", "consumers", "xpending"):
            values = [f[figure] for f in out["groups"].values()]
            out[figure] = None if any(v is None for v in values) else sum(values)
        names = sorted(client.scan_iter(match=f"{keys.ns}:replies:*", count=1000))
        if names:
            pipe = client.pipeline(transaction=False)
            for name in names:
                pipe.xlen(name)
            out["replies"] = dict(zip(names, pipe.execute(), strict=True))
        else:
            out["replies"] = {}
    except (redis.RedisError, OSError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def aof_bytes(redis_dir: Path) -> int | None:
    """Size of the embedded Redis's append-only file(s): everything in its data dir but the socket and the log."""
    total, found = 0, False
    with contextlib.suppress(OSError):
        for path in redis_dir.rglob("*"):
            if path.name not in ("redis.sock", "redis.log") and path.is_file():
                total += path.stat().st_size
                found = True
    return total if found else None


def sample(load: Load, tree: Tree, client: redis.Redis, keys: Keys, t: float, redis_dir: Path,
           groups: tuple[str, ...] = (GROUP,)) -> Sample:
    s = Sample(t, load.answered_total, load.inflight, load.non2xx)
    for label, proc in tree.processes().items():
        try:
            s.rss[label] = proc.memory_info().rss
            s.fds[label] = proc.num_fds()
            cpu = proc.cpu_times()
            s.server_cpu_s += cpu.user + cpu.system
            if label.startswith("gateway worker"):
                s.clients[label] = sum(1 for c in proc.net_connections("tcp")
                                       if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == load.port)
        except psutil.Error:
            pass
    s.machine_busy_s = machine_busy_ticks() / CLK_TCK
    s.redis = redis_figures(client, keys, groups)
    s.redis["aof_bytes"] = aof_bytes(redis_dir)
    return s


# --- report -----------------------------------------------------------------------------------------------------
def slope_mb_per_min(series: list[tuple[float, int]]) -> float:
    """Least-squares slope of RSS over time, MB per minute."""
    if len(series) < 3:
        return float("nan")
    n = len(series)
    mx = sum(t for t, _ in series) / n
    my = sum(v for _, v in series) / n
    den = sum((t - mx) ** 2 for t, _ in series)
    if not den:
        return float("nan")
    return sum((t - mx) * (v - my) for t, v in series) / den * 60 / MB


def fmt(v: Any) -> str:
    return "-" if v is None else str(v)


def fnum(v: float, spec: str) -> str:
    """`v` formatted with `spec`, or a right-aligned "-" when it is NaN (too few samples)."""
    width = int("".join(ch for ch in spec.split(".")[0] if ch.isdigit()) or 0)
    return f"{'-':>{width}}" if v != v else format(v, spec)


def print_outcomes(load: Load, lost_unanswered: Counter[str], drain_s: float, drain_timeout: float) -> int:
    statuses = sorted({s for c in load.status.values() for s in c})
    print(f"{'kind':<9}{'sent':>8}{'answered':>10}" + "".join(f"{'HTTP ' + str(s):>10}" for s in statuses)
          + f"{'cancelled':>10}{'wrong body':>12}{'cut':>6}{'LOST':>7}")
    tot_lost = 0
    for kind in (*load.kinds, "total"):
        kinds = load.kinds if kind == "total" else (kind,)
        sent = sum(load.sent[k] for k in kinds)
        answered = sum(load.answered[k] for k in kinds)
        cancelled = sum(load.cancelled[k] for k in kinds)
        lost = sent - answered - cancelled
        if kind == "total":
            tot_lost = lost
        print(f"{kind:<9}{sent:>8}{answered:>10}"
              + "".join(f"{sum(load.status[k][s] for k in kinds):>10}" for s in statuses)
              + f"{cancelled:>10}{sum(load.mismatched[k] for k in kinds):>12}{sum(load.cut[k] for k in kinds):>6}"
              + f"{lost:>7}")
    unanswered = sum(lost_unanswered.values())
    print(f"LOST requests: {tot_lost}  (still unanswered {drain_timeout:g}s into the drain: {unanswered}; "
          f"connection closed before the response was complete: {sum(load.cut.values())})   "
          f"drain took {drain_s:.1f}s")
    if load.transport_errors:
        print("transport errors: " + ", ".join(f"{what}: {n}" for what, n in load.transport_errors.items()))
    else:
        print("transport errors: 0")
    if load.stream_error_events:
        print(f"streams with an error event: {sum(load.stream_error_events.values())}")
    for what, examples in load.examples.items():
        for ex in examples:
            print(f"  e.g. {what}: {ex}")
    return tot_lost


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", choices=("echo", "real"), default="echo",
                   help="echo: two echo readers (the default); real: a generation reader on a random-weight ~100M "
                        "Llama (group primary) and an embedding reader on MiniLM (group embed)")
    p.add_argument("--minutes", type=float, default=3.0, help="minutes of load after the warm-up (3)")
    p.add_argument("--concurrency", type=int, default=None,
                   help="keep-alive connections, one request each (32; 8 with --models real)")
    p.add_argument("--workers", type=int, default=2, help="gateway (gunicorn) workers (2)")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds of load before the start figures (15; 30 with --models real)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between samples (10)")
    p.add_argument("--drain", type=float, default=None,
                   help=f"longest wait for the requests in flight after the load (request_timeout_s + 10: "
                        f"{REQUEST_TIMEOUT_S + 10}; {REAL_TIMEOUT_S + 10} with --models real)")
    p.add_argument("--threads", type=int, default=1,
                   help=f"--models real: torch threads of each reader ({THREADS_ENV}; two readers share the machine's "
                        f"cores); 0: the readers' default, one per core (1)")
    p.add_argument("--page-cache-size", default=None,
                   help="--models real: the generation reader's page_cache_size (its KV plan; default: the reader's)")
    p.add_argument("--rss-pct", type=float, default=10.0, help="memory flat: RSS growth below this %% ... (10)")
    p.add_argument("--rss-mb", type=float, default=10.0, help="... or below this many MB, per process (10)")
    p.add_argument("--seed", type=int, default=1, help="seed of the request mix (1)")
    p.add_argument("--quick", action="store_true", help="smoke run, about 30 s: 5 s warm-up, 20 s load, 5 s samples")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (config.toml, server log, Redis data)")
    p.add_argument("--start-timeout", type=float, default=None,
                   help="seconds the server may take to start (60; 300 with --models real, the model build apart)")
    args = p.parse_args(argv)
    real = args.models == "real"
    if args.concurrency is None:
        args.concurrency = 8 if real else 32
    if args.warmup is None:
        args.warmup = 30.0 if real else 15.0
    if args.drain is None:
        args.drain = (REAL_TIMEOUT_S if real else REQUEST_TIMEOUT_S) + 10.0
    if args.start_timeout is None:
        args.start_timeout = 300.0 if real else 60.0
    if args.quick:
        args.minutes, args.warmup, args.interval = 20 / 60, 10.0 if real else 5.0, 5.0

    tmp = Path(tempfile.mkdtemp(prefix="liftoff-soak-"))
    servers: list[Server] = []

    def cleanup() -> None:
        for server in servers:
            server.refresh_groups()
            server.stop(timeout_s=60.0)
        remove_tmp(tmp, args.keep)

    return guarded(lambda: serve_and_soak(args, argv, tmp, servers), cleanup)


def serve_and_soak(args: argparse.Namespace, argv: list[str] | None, tmp: Path, servers: list[Server]) -> int:
    ports = free_ports(6)
    args.tree_at_start = git_revision()  # the report's tree is read at its end; commits may land in between
    if args.models == "real":
        server = start_real(tmp, ports, args.workers, args.threads, args.page_cache_size)
        started = time.monotonic()
        servers.append(server)
        print(f"starting liftoff serve (workers={args.workers}, readers {GEN_READER} ({LLAMA_DIR}, group {GROUP}), "
              f"{EMBED_READER} ({EMBED_MODEL}, group {EMBED_GROUP}), temp dir {tmp}) ...", flush=True)
        if start_failed(wait_real_ready(server, ports[1], args.start_timeout)):
            return 1
    else:
        started = time.monotonic()
        server = start_liftoff(tmp, ports, args.workers)
        servers.append(server)
        print(f"starting liftoff serve (workers={args.workers}, readers {', '.join(READER_IDS)}, temp dir {tmp}) ...",
              flush=True)
        if start_failed(wait_ready([server], ports[1], args.start_timeout)):
            return 1
    print(f"server ready in {time.monotonic() - started:.1f}s on 127.0.0.1:{server.port}", flush=True)
    run_loop(soak(server, tmp, args, argv))
    return 0


async def soak(server: Server, tmp: Path, args: argparse.Namespace, argv: list[str] | None) -> None:
    keys = Keys(NAMESPACE)
    redis_dir = tmp / "state" / "redis"
    client = redis.Redis(unix_socket_path=str(redis_dir / "redis.sock"), decode_responses=True,
                         socket_timeout=5)
    tree = Tree(server.proc.pid)
    duration = args.minutes * 60
    real = args.models == "real"
    groups = (GROUP, EMBED_GROUP) if real else (GROUP,)
    load = Load(server.port, args.concurrency, args.seed, real=real)
    mix = ", ".join(f"{k} {w:.0%}" for k, w in zip(load.kinds, load.weights, strict=True))
    print(f"load: {args.concurrency} connections, mix {mix}; "
          f"{args.warmup:g}s warm-up + {duration:g}s, samples every {args.interval:g}s, drain up to {args.drain:g}s",
          flush=True)
    await load.start()
    await asyncio.sleep(args.warmup)

    samples: list[Sample] = []
    t0 = time.monotonic()
    load.record_from_ns = perf_counter_ns()
    samples.append(await asyncio.to_thread(sample, load, tree, client, keys, 0.0, redis_dir, groups))
    procs = tree.processes()
    print("processes: " + ", ".join(f"{label} {proc.pid}" for label, proc in procs.items()), flush=True)
    server_died = False
    k = 1
    while True:
        t_next = min(k * args.interval, duration)
        await asyncio.sleep(max(0.0, t0 + t_next - time.monotonic()))
        s = await asyncio.to_thread(sample, load, tree, client, keys, time.monotonic() - t0, redis_dir, groups)
        samples.append(s)
        prev = samples[-2]
        rate = (s.answered - prev.answered) / max(1e-9, s.t - prev.t)
        print(f"  t={s.t:5.0f}s  {rate:6.1f} req/s  in flight {s.inflight:3}  non-2xx {s.non2xx}  "
              f"cut so far {sum(load.cut.values())}  cancelled {sum(load.cancelled.values())}  "
              f"request stream(s) {fmt(s.redis.get('xlen'))}  "
              f"pending {fmt(s.redis.get('pending'))}", flush=True)
        if server.proc.poll() is not None:
            print(f"SERVER EXITED with code {server.proc.returncode} during the load", flush=True)
            server_died = True
            break
        if t_next >= duration:
            break
        k += 1
    end_load = samples[-1]
    load_s = time.monotonic() - t0

    drain_s = await load.drain(args.drain)
    lost_unanswered = Counter(c.kind for c in load.conns if c.busy)
    for conn in load.conns:
        if conn.busy:
            load.note("no answer by the end of the drain",
                      f"{conn.kind} sent {(perf_counter_ns() - conn.t0) / 1e9:.1f}s ago: {conn.expected!r}")
    await asyncio.sleep(2.0)  # gateway workers trim their reply streams every 0.5 s
    after = await asyncio.to_thread(sample, load, tree, client, keys, time.monotonic() - t0, redis_dir, groups)
    load.close()
    # Reply streams are trimmed with an approximate XTRIM MINID, which drops whole stream nodes only: after the
    # drain each may keep up to one node's worth of entries (stream-node-max-entries, 100 by default).
    node_entries = 100
    dead_letters: list[Any] = []
    with contextlib.suppress(redis.RedisError, OSError, KeyError, ValueError):
        node_entries = int(client.config_get("stream-node-max-entries")["stream-node-max-entries"]) or 100
    if (after.redis.get("dlq") or 0) > (samples[0].redis.get("dlq") or 0):
        with contextlib.suppress(redis.RedisError, OSError):
            dead_letters = client.xrevrange(keys.dlq(GROUP), count=3)
    client.close()

    # ---- report
    print()
    print(run_line("bench.soak", argv))
    if args.tree_at_start != git_revision():
        print(f"tree at the start of the run: {args.tree_at_start} (HEAD moved during the run)")
    print(host_line(f"client: {client_loop()}"))
    if real:
        print(f"server: liftoff serve, workers={args.workers}, reader {GEN_READER} (random-weight ~100M Llama "
              f"{LLAMA_DIR}, group {GROUP}), reader {EMBED_READER} ({EMBED_MODEL}, group {EMBED_GROUP}), reader "
              f"defaults otherwise, torch threads {args.threads or 'default'}, reserved_consumers=\"\", "
              f"request_timeout_s={REAL_TIMEOUT_S}")
        print(f"requests: generate/stream/abandon: a 3-12-word prompt, max_new_tokens {NEW_TOKENS[0]}-{NEW_TOKENS[1]}, "
              f"min_new_tokens {MIN_NEW} (streams with return_metadata: the metadata event ends them); abandon: the "
              f"connection closed after {ABANDON_AFTER} events; embed: one text, or a user batch of 2 or 4")
    else:
        print(f"server: liftoff serve, workers={args.workers}, readers {', '.join(READER_IDS)} (echo, group {GROUP}, "
              f"echo_token_delay_ms=2, max_batch_size=16), reserved_consumers=\"\", "
              f"request_timeout_s={REQUEST_TIMEOUT_S}")
    total_answered = load.answered_total
    print(f"load: {args.concurrency} connections for {args.warmup:g}s warm-up + {load_s:.0f}s; "
          f"{total_answered} responses, {end_load.answered - samples[0].answered} of them after warm-up "
          f"({(end_load.answered - samples[0].answered) / max(1e-9, end_load.t):.1f}/s); "
          f"{sum(load.cancelled.values())} streams abandoned")

    print("\nOUTCOMES (whole run, warm-up included; answered = complete response of any status)")
    lost = print_outcomes(load, lost_unanswered, drain_s, args.drain)

    print("\nLATENCY of 200 responses after warm-up, ms (stream: to the last event; ttfb: to its first byte"
          + ("; abandon: completed ones, and `abandoned at`: from sending to closing the connection" if real else "")
          + ")")
    print(f"{'kind':<14}{'n':>9}{'p50':>9}{'p99':>9}{'max':>9}")
    rows_lat = [*((k, load.lat[k]) for k in load.kinds), ("stream ttfb", load.ttfb)]
    if real:
        rows_lat.append(("abandoned at", load.abandon_ms))
    for kind, lat in rows_lat:
        print(f"{kind:<14}{len(lat):>9}" + "".join(f"{nearest_rank_ms(lat, q):>9.1f}" for q in (50, 99, 100)))
    if load.gen_tokens:
        toks = sorted(load.gen_tokens)
        print(f"generated tokens per completed stream (metadata): min {toks[0]}, median {toks[len(toks) // 2]}, "
              f"max {toks[-1]}")

    start = samples[0]
    print(f"\nPROCESSES: RSS in MB after warm-up (start), at the end of the load (end), after the drain; change = "
          f"end - start; trend = least-squares slope over the {len(samples)} samples, MB/min; late trend: over the "
          f"second half of the load only (warm-up settling gone); clients: connections from this test that the "
          f"gateway worker holds (gunicorn decides at accept time)")
    print(f"{'process':<24}{'pid':>8}{'start':>9}{'end':>9}{'change':>9}{'%':>7}{'trend':>8}{'late trend':>11}"
          f"{'drained':>9}{'fds':>10}{'clients':>9}")
    labels = list(dict.fromkeys([*start.rss, *end_load.rss, *after.rss]))
    mem_fail: list[str] = []
    changed: list[str] = []  # processes that appeared or went away during the run (a restart shows as both)
    worst = ("", 0.0)
    for label in labels:
        a, b, c = start.rss.get(label), end_load.rss.get(label), after.rss.get(label)
        pid = tree.pid_of(label)
        series = [(s.t, s.rss[label]) for s in samples if label in s.rss]
        trend = slope_mb_per_min(series)
        late = slope_mb_per_min([(t, v) for t, v in series if t >= end_load.t / 2])
        fds = f"{fmt(start.fds.get(label))}->{fmt(end_load.fds.get(label))}"
        if a is None or b is None:
            note = "(new during the run)" if a is None else "(gone by the end)"
            print(f"{label:<24}{fmt(pid):>8}{fmt(a and round(a / MB, 1)):>9}{fmt(b and round(b / MB, 1)):>9}  {note}")
            changed.append(f"{label} (pid {fmt(pid)}) {note}")
            continue
        change = (b - a) / MB
        rel = 100 * (b - a) / a
        if change >= args.rss_mb and rel >= args.rss_pct:
            mem_fail.append(f"{label} +{change:.1f} MB ({rel:+.0f}%)")
        if change > worst[1]:
            worst = (label, change)
        print(f"{label:<24}{fmt(pid):>8}{a / MB:>9.1f}{b / MB:>9.1f}{change:>+9.1f}{rel:>+7.1f}{fnum(trend, '+8.2f')}"
              f"{fnum(late, '+11.2f')}{fmt(c and round(c / MB, 1)):>9}{fds:>10}{fmt(start.clients.get(label)):>9}")

    print("\nREDIS (start: after warm-up, under load; end: end of the load; drained: after the drain + 2 s)")
    print(f"{'figure':<34}{'start':>12}{'end':>12}{'drained':>12}")
    for group in groups:
        for name, key in [
            (f"XLEN {keys.requests(group)}", "xlen"),
            (f"pending (XINFO GROUPS {group})", "pending"),
            ("pending (XPENDING summary)", "xpending"),
            ("lag (XINFO GROUPS)", "lag"),
            (f"consumers in {group}", "consumers"),
        ]:
            cells = [s.redis.get("groups", {}).get(group, {}).get(key) for s in (start, end_load, after)]
            if key == "lag" and all(c is None for c in cells):
                continue  # XINFO GROUPS reports lag from Redis 7 on
            print(f"{name:<34}" + "".join(f"{fmt(c):>12}" for c in cells))
    for name, key in [(f"XLEN {keys.dlq(GROUP)}", "dlq"), (f"keys {keys.ns}:* (SCAN)", "keys"), ("DBSIZE", "dbsize")]:
        print(f"{name:<34}" + "".join(f"{fmt(s.redis.get(key)):>12}" for s in (start, end_load, after)))
    print(f"{'used_memory MB':<34}" + "".join(
        f"{s.redis['used_memory'] / MB:>12.2f}" if "used_memory" in s.redis else f"{'-':>12}"
        for s in (start, end_load, after)))
    print(f"{'append-only file MB (on disk)':<34}" + "".join(
        f"{s.redis['aof_bytes'] / MB:>12.2f}" if s.redis.get("aof_bytes") is not None else f"{'-':>12}"
        for s in (start, end_load, after)))
    reply_names = sorted({n for s in (start, end_load, after) for n in s.redis.get("replies", {})})
    for name in reply_names:
        print(f"{'XLEN ' + name:<34}" + "".join(f"{fmt(s.redis.get('replies', {}).get(name)):>12}"
                                             for s in (start, end_load, after)))
    max_reply = max((v for s in samples for v in s.redis.get("replies", {}).values()), default=0)
    print(f"largest reply stream in any sample: {max_reply}; reply streams seen: {len(reply_names)}")
    for entry_id, fields in dead_letters:
        print(f"dead letter {entry_id}: {str(fields)[:300]}")
    for s in (start, end_load, after):
        if "error" in s.redis:
            print(f"redis error at t={s.t:.0f}s: {s.redis['error']}")

    print(f"\nTIME SERIES every {args.interval:g}s (req/s: responses/s since the previous sample; us/req: server "
          "tree CPU per response, microseconds; srv/mach: CPUs kept busy by the server tree / by the whole machine; "
          "RSS in MB; xlen/pend: request stream; rep: longest reply stream; mem: Redis used_memory MB; aof: "
          "append-only file MB)")
    shorts = [tree.short.get(label, label) for label in labels]
    print(f"{'t s':>5}{'req/s':>7}{'us/req':>{9 if real else 7}}{'srv':>5}{'mach':>5}{'non2xx':>7}"
          + "".join(f"{s[:10]:>11}" for s in shorts)
          + f"{'xlen':>6}{'pend':>6}{'rep':>6}{'mem':>7}{'aof':>7}{'dlq':>5}")
    for i, s in enumerate(samples):
        rate = us = srv = mach = ""
        if i:
            prev = samples[i - 1]
            dt, n = max(1e-9, s.t - prev.t), s.answered - prev.answered
            rate = f"{n / dt:.1f}" if real else f"{n / dt:.0f}"
            us = f"{(s.server_cpu_s - prev.server_cpu_s) / max(1, n) * 1e6:.0f}"
            srv = f"{(s.server_cpu_s - prev.server_cpu_s) / dt:.2f}"
            mach = f"{(s.machine_busy_s - prev.machine_busy_s) / dt:.2f}"
        cells = "".join(f"{s.rss[label] / MB:>11.1f}" if label in s.rss else f"{'-':>11}" for label in labels)
        rep = max(s.redis.get("replies", {}).values(), default=0)
        mem = f"{s.redis['used_memory'] / MB:.2f}" if "used_memory" in s.redis else "-"
        aof = f"{s.redis['aof_bytes'] / MB:.1f}" if s.redis.get("aof_bytes") is not None else "-"
        print(f"{s.t:>5.0f}{rate:>7}{us:>{9 if real else 7}}{srv:>5}{mach:>5}{s.non2xx:>7}{cells}"
              f"{fmt(s.redis.get('xlen')):>6}{fmt(s.redis.get('pending')):>6}{rep:>6}{mem:>7}{aof:>7}{fmt(s.redis.get('dlq')):>5}")

    problems = log_problems(server.log_path)
    print(f"\nSERVER LOG ({server.log_path.name}, log_level WARNING): {len(problems)} warning/error line(s)")
    for line in problems[:8]:
        print(f"  {line[:240]}")

    # ---- verdicts
    print("\nVERDICTS")
    wrong = sum(load.mismatched.values())
    non2xx = load.non2xx
    ok = lost == 0 and not server_died
    cancelled = sum(load.cancelled.values())
    print(f"  no lost requests:  {'PASS' if ok else 'FAIL'}  ({lost} lost of {sum(load.sent.values())} sent"
          + (f"; {cancelled} streams abandoned by the client, counted as cancelled" if real else "")
          + f"{'; the server exited during the load' if server_died else ''})")
    used = [s.redis.get("used_memory") for s in (start, end_load)]
    redis_mem = ""
    if None not in used:
        redis_mem = f"; Redis used_memory {used[0] / MB:.2f} -> {used[1] / MB:.2f} MB"
    print(f"  memory flat:       {'PASS' if not mem_fail else 'FAIL'}  (threshold: RSS growth from after warm-up to "
          f"the end of the load < {args.rss_mb:g} MB or < {args.rss_pct:g}% for every process present at both; "
          + (f"largest growth {worst[0]} {worst[1]:+.1f} MB" if worst[0] else "no process grew")
          + (f"; over: {', '.join(mem_fail)}" if mem_fail else "") + redis_mem + ")")
    print(f"  right answers:     {'PASS' if not wrong and not non2xx else 'FAIL'}  ({wrong} wrong bodies, "
          f"{sum(load.stream_error_events.values())} of them streams ending in an error event; {non2xx} non-2xx)")
    print(f"  no restarts:       {'PASS' if not changed else 'FAIL'}  ("
          + ("the same processes from the end of the warm-up to the end of the load" if not changed
             else "; ".join(changed)) + ")")
    r = after.redis
    flat: list[str] = []
    if r.get("xlen") != 0:
        flat.append(f"request stream length {fmt(r.get('xlen'))} after the drain (want 0)")
    if r.get("pending") not in (0, None):
        flat.append(f"{r.get('pending')} pending entries after the drain (want 0)")
    long_replies = {n: v for n, v in r.get("replies", {}).items() if v > node_entries}
    if long_replies:
        flat.append(f"reply streams not trimmed after the drain: {long_replies}")
    dlq_growth = (r.get("dlq") or 0) - (start.redis.get("dlq") or 0)
    if dlq_growth:
        flat.append(f"DLQ grew by {dlq_growth}")
    if "error" in r:
        flat.append(f"Redis not readable after the drain: {r['error']}")
    print(f"  streams flat:      {'PASS' if not flat else 'FAIL'}  (after the drain: request stream "
          f"{fmt(r.get('xlen'))} entries, {fmt(r.get('pending'))} pending, reply streams "
          f"{sorted(r.get('replies', {}).values())} entries (each <= {node_entries} wanted), "
          f"DLQ {fmt(start.redis.get('dlq'))} -> {fmt(r.get('dlq'))}" + (f"; {'; '.join(flat)}" if flat else "") + ")")
    k0, k1 = start.redis.get("keys"), r.get("keys")
    names0, names1 = set(start.redis.get("key_names", [])), set(r.get("key_names", []))
    new, gone = sorted(names1 - names0), sorted(names0 - names1)
    # `<ns>:stats:<counter>` keys are a fixed few, each created on its first use (stats:cancelled at the first
    # abandoned stream): one appearing after the warm-up is named but is not growth.
    counters = [n for n in new if n.startswith(f"{keys.ns}:stats:")]
    keys_ok = k0 is not None and k1 is not None and k1 - len(counters) <= k0
    print(f"  keys flat:         {'PASS' if keys_ok else 'FAIL'}  (keys {keys.ns}:* after the warm-up {fmt(k0)}, "
          f"at the end of the load {fmt(end_load.redis.get('keys'))}, after the drain {fmt(k1)}; want no more "
          f"after the drain than after the warm-up, counters created on first use aside"
          + (f"; new: {', '.join(new[:10])}" if new else "")
          + (f"; gone: {', '.join(gone[:10])}" if gone else "") + ")")


def log_problems(path: Path) -> list[str]:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    markers = ("WARNING", "ERROR", "CRITICAL", "Traceback", "Exception")
    return [line for line in lines if any(m in line for m in markers)]


if __name__ == "__main__":
    sys.exit(main())
