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
   with its own warm-up and a fixed measured window, with the keep-alive asyncio client of bench/gateway_overhead.py.
3. Prints both tables, CPU time per request by process, and the ratios: gateway at c=64 / in-process static batch
   (target >= 0.8) and gateway at c=64 / in-process one at a time (target >= 5), each against the better of the
   two in-process passes. The server is stopped with SIGTERM before the second in-process pass.

torch uses `--threads` intra-op threads in the bench process and, through LIFTOFF_TORCH_THREADS, in the reader:
by default torch's own choice, one per core, which is how a reader runs unless `cpu_threads` says otherwise (for
MiniLM here, batches run 1.4-1.7x faster on two threads than on one, single sentences about as fast; see
bench/README.md). Timings are reported, never asserted: the exit status is non-zero
only if the server fails to start (130 on Ctrl-C).

The server harness below (`GatewayHarness`, `BodiesRun`, `InProcess`, the report helpers) is shared with
bench/generation.py.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import gc
import http.client
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.gateway_overhead import (
    CLK_TCK,
    MACHINE,
    Result,
    Run,
    Server,
    _machine_busy_ticks,
    child_env,
    free_ports,
    git_revision,
    launch_liftoff,
    measure_window,
)

THREADS_ENV = "LIFTOFF_TORCH_THREADS"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
GROUP = "embed"
CONCURRENCY = "1,8,32,64"

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


# --- load generation with per-request bodies -------------------------------------------------------------------
class BodiesRun(Run):
    """bench/gateway_overhead.py's `Run` for any path, sending the given JSON bodies in turn (one per request)."""

    def __init__(self, port: int, conc: int, path: str, bodies: list[bytes]) -> None:
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        self._requests = [(head + f"Content-Length: {len(b)}\r\n\r\n").encode() + b for b in bodies]
        self._next = 0
        super().__init__(port, conc)

    @property
    def request(self) -> bytes:  # read by each connection once per request it sends
        self._next += 1
        return self._requests[self._next % len(self._requests)]

    @request.setter
    def request(self, _value: bytes) -> None:  # Run.__init__ sets its fixed /generate request; ignored
        pass


# --- the server -------------------------------------------------------------------------------------------------
def post_json(port: int, path: str, payload: dict, timeout: float = 120.0) -> tuple[int, object]:
    """One request over http.client (loopback, no proxies): (status, decoded JSON or text); (-1, reason) on failure."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw[:300].decode(errors="replace")
    except (OSError, http.client.HTTPException) as exc:
        return -1, str(exc)
    finally:
        conn.close()


def get_status(port: int, path: str, timeout: float = 5.0) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return -1
    finally:
        conn.close()


class GatewayHarness:
    """`liftoff serve` with one reader, from a temp config.toml on six free loopback ports."""

    def __init__(self, tmp: Path, reader: dict[str, object], threads: int, workers: int = 1,
                 repository_path: Path | None = None) -> None:
        self.tmp = tmp
        self.reader = reader
        self.threads = threads
        self.workers = workers
        self.repository_path = repository_path or tmp / "models"
        self.ports = free_ports(6)
        self.port, self.mgmt_port = self.ports[0], self.ports[1]
        self.server: Server | None = None
        self.stopped = False

    def settings(self) -> list[str]:
        lines = [
            'host = "127.0.0.1"',
            f"state_dir = {json.dumps(str(self.tmp / 'state'))}",
            f"repository_path = {json.dumps(str(self.repository_path))}",
            f"workers = {self.workers}",
            'reserved_consumers = ""',
            "request_timeout_s = 120",
            'log_level = "WARNING"',
            "",
            "[[readers]]",
        ]
        lines += [f"{key} = {json.dumps(value)}" for key, value in self.reader.items()]
        return lines

    def start(self) -> None:
        env = child_env()  # without the caller's LIFTOFF_* variables
        env[THREADS_ENV] = str(self.threads)
        env.setdefault("HF_HUB_OFFLINE", "1")
        self.server = launch_liftoff(self.tmp, self.ports, self.settings(), env, name="liftoff")

    def wait_healthy(self, timeout_s: float) -> str | None:
        """None once the management /healthz is 200, else why not."""
        assert self.server is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.server.proc.poll() is not None:
                return f"liftoff serve exited with code {self.server.proc.returncode}:\n{self.server.log_tail()}"
            if get_status(self.mgmt_port, "/healthz") == 200:
                self.server.refresh_groups()
                return None
            time.sleep(0.2)
        return f"GET /healthz not 200 within {timeout_s:g}s:\n{self.server.log_tail()}"

    def describe(self) -> str:
        assert self.server is not None
        self.server.refresh_groups()
        return ", ".join(f"{role} {pids}" for role, pids in self.server.groups.items())

    def stop(self) -> None:
        """SIGTERM, wait for the tree to exit (the supervisor stops the gateway, reader and Redis); once."""
        if self.server is not None and not self.stopped:
            self.stopped = True
            self.server.refresh_groups()
            self.server.stop(timeout_s=60.0)


async def measure(harness: GatewayHarness, path: str, bodies: list[bytes], conc: int, warmup_s: float,
                  duration_s: float) -> Result:
    """One condition: `conc` connections, warm-up, then a measured window; CPU by process over the window."""
    server = harness.server
    assert server is not None
    result = Result(f"c={conc}", conc)
    run = BodiesRun(harness.port, conc, path, bodies)
    result.seconds, result.cpu_ticks = await measure_window(server, run, warmup_s, duration_s, drain_s=30.0)
    result.lat = run.lat
    result.errors = run.errors
    result.round_rps = [len(run.lat) / result.seconds]
    if run.first_error:
        result.notes.append(run.first_error[:300])
    return result


def run_loop(coro):
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


async def measure_all(harness: GatewayHarness, path: str, bodies: list[bytes], concs: list[int], warmup_s: float,
                      duration_s: float, unit: str, per_request: float, verbose: bool = True) -> dict[int, Result]:
    results = {}
    for conc in concs:
        res = await measure(harness, path, bodies, conc, warmup_s, duration_s)
        results[conc] = res
        if verbose:
            print(f"  gateway c={conc:<3} {res.rps:9.1f} req/s  {res.rps * per_request:9.1f} {unit}/s  "
                  f"p50 {res.pct(50):.1f} ms  errors {res.errors}", flush=True)
    return results


# --- in-process timing ------------------------------------------------------------------------------------------
@dataclass
class Timed:
    """An in-process condition: `units` produced by `calls` calls in `seconds`, and the CPU it took."""

    name: str
    units: float = 0.0
    calls: int = 0
    seconds: float = 0.0
    cpu_s: float = 0.0  # this process
    machine_s: float = 0.0  # the whole machine's busy CPU time
    per_call: list[float] = field(default_factory=list)  # seconds

    @property
    def rate(self) -> float:
        return self.units / self.seconds if self.seconds else 0.0


def timed(name: str, fn: Callable[[int], float], min_seconds: float, min_calls: int = 1) -> Timed:
    """Call `fn(i)` (returning the units it produced) until `min_seconds` and `min_calls` are both reached."""
    out = Timed(name)
    t_cpu = os.times()
    machine0 = _machine_busy_ticks()
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        out.units += fn(out.calls)
        t1 = time.perf_counter()
        out.per_call.append(t1 - t0)
        out.calls += 1
        if t1 - start >= min_seconds and out.calls >= min_calls:
            break
    out.seconds = time.perf_counter() - start
    t_end = os.times()
    out.cpu_s = (t_end.user + t_end.system) - (t_cpu.user + t_cpu.system)
    out.machine_s = (_machine_busy_ticks() - machine0) / CLK_TCK
    return out


class InProcess:
    """The in-process conditions, measured in the bench process before the server starts and after it stops.

    Each pass reloads the model. A ratio uses the better of the two passes of its condition, so that a burst of
    other work on the machine during one pass does not flatter the server."""

    def __init__(self) -> None:
        self.passes: dict[str, list[Timed]] = {}

    def add(self, label: str, rows: list[Timed], unit: str) -> None:
        self.passes[label] = rows
        for row in rows:
            print(f"  {label:<7}{row.name:<40} {row.rate:10.1f} {unit}/s", flush=True)

    def best(self, prefix: str) -> float:
        return max((r.rate for rows in self.passes.values() for r in rows if r.name.startswith(prefix)), default=0.0)

    def __bool__(self) -> bool:
        return bool(self.passes)

    def print(self, unit: str, threads: int) -> None:
        labels = list(self.passes)
        print(f"in-process (the bench process: {' and '.join(labels)}; torch threads {threads})")
        print(f"{'condition':<40}" + "".join(f"{label + ' /s':>12}" for label in labels) + f"{'best /s':>12}"
              f"{'ms/call':>9}{'calls':>7}" + "".join(f"{'busy ' + label[0]:>8}{'mach ' + label[0]:>8}"
                                                      for label in labels))
        for i, first in enumerate(self.passes[labels[0]]):
            rows = [self.passes[label][i] for label in labels]
            times = sorted(t for row in rows for t in row.per_call)
            per_call = times[len(times) // 2] * 1e3 if times else float("nan")
            print(f"{first.name:<40}" + "".join(f"{row.rate:>12.1f}" for row in rows)
                  + f"{max(row.rate for row in rows):>12.1f}{per_call:>9.1f}{sum(row.calls for row in rows):>7}"
                  + "".join(f"{row.cpu_s / row.seconds:>8.2f}{row.machine_s / row.seconds:>8.2f}" for row in rows))
        print(f"({unit}/s per pass and the better one; ms/call: median over both passes; busy: CPUs the bench process "
              f"kept busy; mach: CPUs busy machine-wide)")

    def as_json(self) -> dict:
        return {label: {r.name: round(r.rate, 2) for r in rows} for label, rows in self.passes.items()}


def print_gateway(results: dict[int, Result], unit: str, per_request: float, refs: list[tuple[str, float]]) -> None:
    ref_cols = "".join(f"{'÷ ' + name:>18}" for name, _ in refs)
    print(f"{'conc':>5}{'req/s':>10}{unit + '/s':>14}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'requests':>10}{ref_cols}")
    for conc, res in results.items():
        rate = res.rps * per_request
        cells = "".join(f"{rate / value if value else float('nan'):>18.2f}" for _, value in refs)
        print(f"{conc:>5}{res.rps:>10.1f}{rate:>14.1f}{res.pct(50):>9.1f}{res.pct(99):>9.1f}{res.errors:>8}"
              f"{len(res.lat):>10}{cells}")
        for note in res.notes:
            print(f"    first error: {note}")
    roles = ["client (bench)", "gateway workers", "arbiter", "reader", "redis", "supervisor", "other"]
    short = {"client (bench)": "client", "gateway workers": "gw-workers"}
    print()
    print("CPU time per request, microseconds (utime+stime over the measured window); busy: CPUs the bench and the")
    print("server kept busy; machine: CPUs busy machine-wide (anything else running included)")
    print(f"{'conc':>5}" + "".join(f"{short.get(r, r):>11}" for r in roles) + f"{'total':>11}{'busy':>7}{'machine':>9}")
    for conc, res in results.items():
        if not res.lat:
            continue
        cells, total = "", 0
        for role in roles:
            ticks = res.cpu_ticks.get(role)
            if ticks is None:
                cells += f"{'-':>11}"
                continue
            total += ticks
            cells += f"{ticks / CLK_TCK * 1e6 / len(res.lat):>11.0f}"
        print(f"{conc:>5}{cells}{total / CLK_TCK * 1e6 / len(res.lat):>11.0f}{total / CLK_TCK / res.seconds:>7.2f}"
              f"{res.cpu_ticks.get(MACHINE, 0) / CLK_TCK / res.seconds:>9.2f}")


def verdict(value: float, target: float) -> str:
    return "meets" if value >= target else "BELOW"


def header_lines(module: str, argv: list[str], extra: list[str]) -> list[str]:
    import torch

    now = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    command = " ".join(["python", "-m", module, *argv])
    host = (f"host: {platform.node()}  {os.cpu_count()} CPUs  load {os.getloadavg()[0]:.2f}  "
            f"Python {platform.python_version()}  torch {torch.__version__}")
    return [f"date: {now}   command: {command}   tree: {git_revision()}", host, *extra]


def conditions_json(results: dict[int, Result], per_request: float) -> list[dict]:
    return [{
        "concurrency": conc, "rps": round(res.rps, 2), "units_per_s": round(res.rps * per_request, 2),
        "p50_ms": round(res.pct(50), 2), "p99_ms": round(res.pct(99), 2), "errors": res.errors,
        "requests": len(res.lat),
        "cpu_us_per_request": {role: round(t / CLK_TCK * 1e6 / max(1, len(res.lat)), 1)
                               for role, t in res.cpu_ticks.items() if role != MACHINE},
        "machine_busy_cpus": round(res.cpu_ticks.get(MACHINE, 0) / CLK_TCK / max(res.seconds, 1e-9), 2),
    } for conc, res in results.items()]


def common_flags(p: argparse.ArgumentParser, threads: int = 1) -> None:
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds per concurrency (8)")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each concurrency (2)")
    p.add_argument("--inproc-seconds", type=float, default=5.0,
                   help="seconds per in-process condition, at least one call each (5)")
    p.add_argument("--concurrency", default=CONCURRENCY, help=f"comma-separated connection counts ({CONCURRENCY})")
    p.add_argument("--threads", type=int, default=threads,
                   help=f"torch intra-op threads, in-process and in the reader (LIFTOFF_TORCH_THREADS); 0: torch's "
                        f"default, one per core, as a reader runs unless told otherwise ({threads})")
    p.add_argument("--workers", type=int, default=1, help="gateway workers (1)")
    p.add_argument("--quick", action="store_true", help="smoke run: 0.5 s warm-up, 2 s per concurrency, "
                                                        "1.5 s per in-process condition")
    p.add_argument("--skip-inprocess", action="store_true", help="gateway only (no ratios)")
    p.add_argument("--no-after", action="store_true",
                   help="measure in-process before the server only (default: before and after)")
    p.add_argument("--hold", type=float, default=0.0, help="keep the server up this many seconds after measuring")
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (config.toml, server log, Redis data)")
    p.add_argument("--start-timeout", type=float, default=180.0, help="seconds to wait for /healthz (180)")


def apply_quick(args: argparse.Namespace) -> None:
    if args.quick:
        args.warmup, args.duration, args.inproc_seconds = 0.5, 2.0, 1.5


# --- embeddings ---------------------------------------------------------------------------------------------------
def inprocess(args: argparse.Namespace, texts: list[str], tmp: Path) -> list[Timed]:
    import torch

    from bench.embeddings_inprocess import bench_engine
    from liftoff.core.settings import ReaderConfig
    from readers.engines.embedding import EmbeddingEngine

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
        timed(f"static batch: encode({n} sentences)", static, args.inproc_seconds, 2),
        timed("one at a time: encode(1 sentence)", single, args.inproc_seconds, 5),
        timed(f"reader engine, {n} concurrent jobs", engine_jobs, args.inproc_seconds, 2),
    ]
    if args.threads > 1:
        # A single sentence gains nothing from more threads (it may lose a little), so the one-at-a-time baseline
        # also runs on one thread, and the ratio takes the faster of the two.
        torch.set_num_threads(1)
        try:
            single(0)
            rows.append(timed("one at a time, 1 thread", single, args.inproc_seconds, 5))
        finally:
            torch.set_num_threads(args.threads)
    return rows  # the model is freed with this frame (see the gc.collect() after the call)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    common_flags(p, threads=0)
    p.add_argument("--static-batch", type=int, default=64, help="in-process static batch size (64)")
    p.add_argument("--max-batch-size", type=int, default=64, help="reader max_batch_size (64)")
    p.add_argument("--batch-ms", type=int, default=5, help="reader batch_duration_millis (5)")
    args = p.parse_args(argv)
    apply_quick(args)
    argv = sys.argv[1:] if argv is None else argv
    concs = sorted({int(c) for c in args.concurrency.split(",") if c.strip()})
    import torch

    args.threads = args.threads or torch.get_num_threads()
    os.environ[THREADS_ENV] = str(args.threads)
    torch.set_num_threads(args.threads)
    texts = sentences(256)
    bodies = [json.dumps({"text": t, "consumer_group": GROUP}).encode() for t in texts]
    tmp = Path(tempfile.mkdtemp(prefix="liftoff-bench-embed-"))
    harness: GatewayHarness | None = None
    code = 0
    try:
        inproc = InProcess()
        if not args.skip_inprocess:
            print(f"in-process: {MODEL}, torch threads {torch.get_num_threads()} ...", flush=True)
            inproc.add("before", inprocess(args, texts, tmp), "sentences")
            gc.collect()

        reader = {"model_name": MODEL, "consumer_group": GROUP, "max_batch_size": args.max_batch_size,
                  "batch_duration_millis": args.batch_ms}
        harness = GatewayHarness(tmp, reader, args.threads, args.workers)
        started = time.monotonic()
        harness.start()
        print(f"starting liftoff serve (temp dir {tmp}) ...", flush=True)
        failure = harness.wait_healthy(args.start_timeout)
        if failure:
            print(f"FAILED TO START: {failure}", file=sys.stderr)
            return 1
        print(f"healthy in {time.monotonic() - started:.1f}s: {harness.describe()}", flush=True)
        status, body = post_json(harness.port, "/embed", {"text": texts[0], "consumer_group": GROUP})
        dim = len(body["result"]) if status == 200 and isinstance(body, dict) else None
        print(f"check: POST /embed -> {status}, vector of {dim} floats", flush=True)

        results = run_loop(measure_all(harness, "/embed", bodies, concs, args.warmup, args.duration, "sentences", 1))
        if args.hold > 0:
            print(f"holding the server {args.hold:g}s: {harness.describe()}", flush=True)
            time.sleep(args.hold)
        harness.stop()
        if inproc and not args.no_after:
            print("in-process again, the server stopped ...", flush=True)
            inproc.add("after", inprocess(args, texts, tmp), "sentences")
            gc.collect()

        words = [len(t.split()) for t in texts]
        tokens = [len(ids) for ids in _tokenize(texts)]
        extra = [
            f"model: {MODEL}  torch threads {args.threads} (bench process and reader: {THREADS_ENV}={args.threads})",
            f"texts: {len(texts)} distinct single sentences, {min(words)}-{max(words)} words, "
            f"{min(tokens)}-{max(tokens)} tokens (mean {sum(tokens) / len(tokens):.1f}, special tokens included)",
            f"gateway: POST /embed {{\"text\": <one sentence>, \"consumer_group\": \"{GROUP}\"}}, {args.workers} "
            f"worker(s); reader max_batch_size {args.max_batch_size}, batch_duration_millis {args.batch_ms}; "
            f"{args.warmup:g}s warm-up + {args.duration:g}s measured per concurrency",
        ]
        header = header_lines("bench.embeddings", argv, extra)
        print()
        for line in header:
            print(line)
        print()
        static, single = inproc.best("static"), inproc.best("one at a time")
        if inproc:
            inproc.print("sentences", args.threads)
            print()
        print("through the gateway (HTTP -> gateway -> Redis -> reader -> back); ÷: over the best in-process pass")
        refs = [("static", static), ("one-at-a-time", single)] if inproc else []
        print_gateway(results, "sentences", 1, refs)
        print()
        out: dict = {"header": header, "inprocess_sentences_per_s": inproc.as_json(),
                     "gateway": conditions_json(results, 1), "ratios": {}}
        top = max(concs)
        if inproc and top in results:
            r_static = results[top].rps / static if static else float("nan")
            r_single = results[top].rps / single if single else float("nan")
            same = inproc.best("one at a time:")
            r_same = results[top].rps / same if same else float("nan")
            print(f"gateway c={top} / in-process static batch:   {r_static:.2f}   "
                  f"(target >= 0.8: {verdict(r_static, 0.8)})")
            print(f"gateway c={top} / in-process one at a time:  {r_single:.2f}x  "
                  f"(target >= 5x: {verdict(r_single, 5.0)}; against the faster of {args.threads} threads and 1)")
            if args.threads > 1:
                print(f"  (against one at a time on {args.threads} threads, the reader's setting: {r_same:.2f}x)")
            out["ratios"] = {f"gateway_c{top}_over_static": round(r_static, 3),
                             f"gateway_c{top}_over_one_at_a_time": round(r_single, 3),
                             f"gateway_c{top}_over_one_at_a_time_same_threads": round(r_same, 3)}
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    finally:
        if harness is not None:
            harness.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return code


def _tokenize(texts: list[str]) -> list[list[int]]:
    from transformers import AutoTokenizer

    from readers.models import bundled_model_path

    path = bundled_model_path(MODEL)
    if path is None:
        return [[0] for _ in texts]
    return AutoTokenizer.from_pretrained(str(path))(texts)["input_ids"]


if __name__ == "__main__":
    sys.exit(main())
