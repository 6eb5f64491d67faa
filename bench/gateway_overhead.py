#!/usr/bin/env python
"""Gateway overhead benchmark: Liftoff's full /generate path against a bare Starlette app, in one run.

    .venv/bin/python -m bench.gateway_overhead [--duration S] [--rounds N] [--workers N] [--quick]

Starts, on free loopback ports,

* ``liftoff serve`` (embedded Redis, gunicorn ``asgi`` gateway with ``--workers`` workers, one echo reader), and
* ``gunicorn -k asgi -w <workers> --no-control-socket bench.hello_app:app`` (the bare baseline),

then drives ``POST /generate {"text": "hello world"}`` at each server at concurrency 1 and 64 (``--concurrency``),
in interleaved rounds, each condition with its own warm-up. The load generator is an asyncio (uvloop) HTTP/1.1
keep-alive client built on ``asyncio.Protocol`` callbacks: pre-built request bytes, one request in flight per
connection, Content-Length parsing, latency from ``time.perf_counter_ns``. It shares the CPUs with the servers, so
it is as cheap as it can be made, and its own CPU use is reported alongside the servers'.

Prints a table (requests/s, p50, p99, errors per condition), CPU time per request by process group, and the two
ratios: echo/bare throughput at the highest concurrency (target >= 0.5) and echo p50 - bare p50 at concurrency 1
(target <= 1 ms). Timings are reported, never asserted: the exit status is non-zero only if a server fails to start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as _dt
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from time import perf_counter_ns

REPO = Path(__file__).resolve().parent.parent
BODY = b'{"text": "hello world"}'
PATH = "/generate"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MACHINE = "machine"  # key of the whole machine's busy ticks in a CPU snapshot


# --- the load generator ----------------------------------------------------------------------------------------------
class Run:
    """One condition: `conc` keep-alive connections, each sending requests back to back until `end_ns`."""

    def __init__(self, port: int, conc: int) -> None:
        self.port = port
        self.conc = conc
        self.request = (
            f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(BODY)}\r\n\r\n"
        ).encode() + BODY
        self.start_ns = 1 << 62  # completions in [start_ns, end_ns) are recorded; set when the warm-up ends
        self.end_ns = 1 << 62  # set when the measurement ends; a connection stops at its next completion
        self.lat: list[int] = []  # ns, successful responses completed in the window
        self.errors = 0  # non-2xx responses in the window, plus broken connections and timeouts at any time
        self.bad_status: dict[int, int] = {}
        self.first_error: str | None = None
        self.conns: list[Conn] = []
        self.running = 0
        self.finished: asyncio.Future[None] | None = None
        self.stopping = False

    def error(self, what: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = what

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self.finished = loop.create_future()
        self.conns = [Conn(self) for _ in range(self.conc)]
        await asyncio.gather(*(self._connect(conn) for conn in self.conns))

    async def _connect(self, conn: Conn, delay: float = 0.0) -> None:
        if delay:
            await asyncio.sleep(delay)
        if self.stopping:
            self._stopped(conn)
            return
        try:
            await asyncio.get_running_loop().create_connection(lambda: conn, "127.0.0.1", self.port)
        except OSError as exc:
            self.error(f"connect: {exc}")
            asyncio.get_running_loop().create_task(self._connect(conn, 0.05))

    def start(self) -> None:
        self.running = len(self.conns)
        for conn in self.conns:
            if conn.transport is not None:
                conn.send()  # the others send once they connect

    def _stopped(self, conn: Conn) -> None:
        if conn.stopped:
            return
        conn.stopped = True
        self.running -= 1
        if self.running <= 0 and self.finished is not None and not self.finished.done():
            self.finished.set_result(None)

    async def stop(self, drain_s: float) -> None:
        """After `end_ns` is set: wait for the requests in flight, then close every connection."""
        assert self.finished is not None
        try:
            await asyncio.wait_for(asyncio.shield(self.finished), drain_s)
        except TimeoutError:
            for conn in self.conns:
                if not conn.stopped:
                    self.error(f"no response within {drain_s:g}s after the end")
        self.stopping = True
        for conn in self.conns:
            if conn.transport is not None:
                conn.transport.close()
            self._stopped(conn)


class Conn(asyncio.Protocol):
    __slots__ = ("buf", "busy", "run", "status", "stopped", "t0", "total", "transport")

    def __init__(self, run: Run) -> None:
        self.run = run
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.total = -1  # length of the response being read (headers + body), -1 until its headers are in
        self.status = 0
        self.t0 = 0
        self.busy = False
        self.stopped = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.run.running and not self.stopped:  # connected after the start (or reconnected): carry on
            self.send()

    def send(self) -> None:
        self.buf = b""
        self.total = -1
        self.busy = True
        self.t0 = perf_counter_ns()
        self.transport.write(self.run.request)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        if self.total < 0:
            hend = buf.find(b"\r\n\r\n")
            if hend < 0:
                self.buf = buf
                return
            head = buf[:hend].lower()
            try:
                self.status = int(head[9:12])
            except ValueError:
                self.status = 0
            i = head.find(b"\r\ncontent-length:")
            if i >= 0:
                j = head.find(b"\r\n", i + 2)
                self.total = hend + 4 + int(head[i + 17 : j if j >= 0 else len(head)])
            elif b"chunked" in head:
                self.total = 1 << 62  # ends at the last chunk (small bodies: the terminator is searched for)
            else:
                self.run.error(f"response without Content-Length: {head[:200]!r}")
                self.transport.close()  # type: ignore[union-attr]
                return
        if self.total == 1 << 62:
            if not buf.endswith(b"0\r\n\r\n"):
                self.buf = buf
                return
        elif len(buf) < self.total:
            self.buf = buf
            return
        t1 = perf_counter_ns()
        run = self.run
        self.busy = False
        if run.start_ns <= t1 < run.end_ns:
            if 200 <= self.status < 300:
                run.lat.append(t1 - self.t0)
            else:
                run.bad_status[self.status] = run.bad_status.get(self.status, 0) + 1
                run.error(f"HTTP {self.status}: {buf[:300]!r}")
        if t1 >= run.end_ns or run.stopping:
            run._stopped(self)
            return
        self.buf = b""
        self.total = -1
        self.t0 = t1
        self.transport.write(run.request)  # type: ignore[union-attr]
        self.busy = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        run = self.run
        if run.stopping or self.stopped:
            return
        if self.busy:
            run.error(f"connection lost mid-request: {exc}")
        self.busy = False
        if perf_counter_ns() >= run.end_ns:
            run._stopped(self)
            return
        asyncio.get_running_loop().create_task(run._connect(self, 0.05))


# --- process CPU accounting -----------------------------------------------------------------------------------------
def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (ppid, cmdline) for every process we can read."""
    table: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        table[int(entry)] = (int(stat.rsplit(b")", 1)[1].split()[1]), cmd)
    return table


def _cpu_ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0


def process_groups(root: int, kind: str) -> dict[str, list[int]]:
    """The processes of one server by role: a `liftoff serve` tree or a bare gunicorn tree."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    groups: dict[str, list[int]] = {}

    def walk(pid: int, parent_role: str | None) -> None:
        cmd = table.get(pid, (0, ""))[1]
        if kind == "bare":
            role = "arbiter" if pid == root else "gateway workers"
        elif pid == root:
            role = "supervisor"
        elif "redis-server" in cmd:
            role = "redis"
        elif "-m readers" in cmd:
            role = "reader"
        elif "liftoff.server" in cmd or parent_role in ("arbiter", "gateway workers"):
            role = "arbiter" if parent_role == "supervisor" else "gateway workers"
        else:
            role = "other"
        groups.setdefault(role, []).append(pid)
        for child in children.get(pid, []):
            walk(child, role)

    walk(root, None)
    return groups


def _machine_busy_ticks() -> int:
    """Ticks the whole machine spent busy (all CPUs, every process, interrupts included): /proc/stat."""
    try:
        with open("/proc/stat", "rb") as f:
            cpu = [int(x) for x in f.readline().split()[1:9]]
        return sum(cpu) - cpu[3] - cpu[4]  # minus idle and iowait
    except (OSError, ValueError, IndexError):
        return 0


def cpu_snapshot(groups: dict[str, list[int]]) -> dict[str, int]:
    snap = {role: sum(_cpu_ticks(pid) for pid in pids) for role, pids in groups.items()}
    t = os.times()
    snap["client (bench)"] = round((t.user + t.system) * CLK_TCK)
    snap[MACHINE] = _machine_busy_ticks()
    return snap


# --- the servers -------------------------------------------------------------------------------------------------
def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def http_status(port: int, method: str, path: str, body: bytes | None = None, timeout: float = 2.0) -> int:
    """One request over http.client (no proxies, loopback only); -1 when the server does not answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return -1
    finally:
        conn.close()


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFTOFF_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Server:
    name: str
    kind: str  # "echo" or "bare"
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    groups: dict[str, list[int]] = field(default_factory=dict)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def refresh_groups(self) -> None:
        self.groups = process_groups(self.proc.pid, self.kind)

    def stop(self, timeout_s: float) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                print(f"  {self.name}: still running {timeout_s:g}s after SIGTERM; killing pid {self.proc.pid}")
                self.proc.kill()
                self.proc.wait()
        # Anything of ours that outlived its parent (it should not): by pid, never by name.
        for pids in self.groups.values():
            for pid in pids:
                if pid != self.proc.pid and _alive_child_of_ours(pid):
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)


def _alive_child_of_ours(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state != b"Z"
    except OSError:
        return False


def git_revision() -> str:
    """The commit measured, with '+dirty' when the working tree differs from it (read-only git calls)."""
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, check=False,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (rev or "unknown") + ("+dirty" if dirty else "")


def liftoff_binary() -> str:
    beside = Path(sys.executable).parent / "liftoff"
    if beside.exists():
        return str(beside)
    found = shutil.which("liftoff")
    if found:
        return found
    return str(REPO / ".venv" / "bin" / "liftoff")


PORT_NAMES = ["port", "management_port", "vertex_port", "openai_port", "snowflake_port", "internal_port"]


def launch_liftoff(tmp: Path, ports: list[int], settings: list[str], env: dict[str, str] | None = None,
                   name: str = "liftoff echo") -> Server:
    """`liftoff serve` from `<tmp>/config.toml`: the six `ports` in PORT_NAMES order, then the `settings` lines
    (TOML, `[[readers]]` tables included); its output goes to `<tmp>/liftoff.log`. It does not wait for it."""
    lines = [f"{key} = {port}" for key, port in zip(PORT_NAMES, ports, strict=True)] + settings
    config = tmp / "config.toml"
    config.write_text("\n".join(lines) + "\n")
    log_path = tmp / "liftoff.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [liftoff_binary(), "serve", "--config", str(config)],
            cwd=tmp, env=env or child_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server(name, "echo", ports[0], proc, log_path)  # kind "echo": a liftoff process tree


def start_liftoff(tmp: Path, ports: list[int], workers: int) -> Server:
    return launch_liftoff(tmp, ports, [
        'host = "127.0.0.1"',
        f'state_dir = "{tmp / "state"}"',
        f"workers = {workers}",
        'log_level = "WARNING"',
        "",
        "[[readers]]",
        'model_name = "echo"',
        'consumer_group = "primary"',
        "max_batch_size = 64",
    ])


def start_bare(tmp: Path, port: int, workers: int) -> Server:
    log_path = tmp / "bare.log"
    argv = [
        sys.executable, "-m", "gunicorn", "-k", "asgi", "-w", str(workers), "-b", f"127.0.0.1:{port}",
        "--no-control-socket", "--chdir", str(REPO),
        # as the Liftoff gateway configures gunicorn (liftoff/server.py), so that only the app differs
        "--keep-alive", "75", "--backlog", "2048", "--worker-connections", "10000", "--log-level", "warning",
        "bench.hello_app:app",
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv, cwd=tmp, env=child_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server("bare starlette", "bare", port, proc, log_path)


def wait_ready(servers: list[Server], mgmt_port: int, timeout_s: float) -> list[str]:
    """Wait until Liftoff's /healthz is 200 and both /generate answer 200; returns the failures."""
    deadline = time.monotonic() + timeout_s
    pending = {s.name: s for s in servers}
    healthy = False
    while pending and time.monotonic() < deadline:
        for name, server in list(pending.items()):
            if server.proc.poll() is not None:
                return [f"{name} exited with code {server.proc.returncode}:\n{server.log_tail()}"]
            if server.kind == "echo" and not healthy:
                healthy = http_status(mgmt_port, "GET", "/healthz") == 200
                if not healthy:
                    continue
            if http_status(server.port, "POST", PATH, BODY) == 200:
                del pending[name]
        time.sleep(0.1)
    return [f"{name} not ready within {timeout_s:g}s:\n{s.log_tail()}" for name, s in pending.items()]


# --- measurement -------------------------------------------------------------------------------------------------
@dataclass
class Result:
    server: str
    conc: int
    lat: list[int] = field(default_factory=list)
    seconds: float = 0.0
    errors: int = 0
    round_rps: list[float] = field(default_factory=list)
    round_p50: list[float] = field(default_factory=list)  # ms
    cpu_ticks: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return len(self.lat) / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        """Nearest-rank percentile, in milliseconds."""
        if not self.lat:
            return float("nan")
        ordered = sorted(self.lat)
        rank = max(1, -(-len(ordered) * q // 100))
        return ordered[int(rank) - 1] / 1e6


async def measure_window(server: Server, run: Run, warmup_s: float, duration_s: float,
                         drain_s: float) -> tuple[float, dict[str, int]]:
    """Open `run`'s connections, warm up, then measure a window: its seconds, and CPU ticks by process role in it.
    `run` keeps the window's latencies and errors."""
    await run.open()
    server.refresh_groups()
    run.start()
    await asyncio.sleep(warmup_s)
    before = cpu_snapshot(server.groups)
    run.start_ns = perf_counter_ns()
    await asyncio.sleep(duration_s)
    run.end_ns = perf_counter_ns()
    after = cpu_snapshot(server.groups)
    await run.stop(drain_s=drain_s)
    return (run.end_ns - run.start_ns) / 1e9, {role: ticks - before.get(role, 0) for role, ticks in after.items()}


async def measure(server: Server, conc: int, warmup_s: float, duration_s: float, result: Result) -> None:
    run = Run(server.port, conc)
    window, cpu = await measure_window(server, run, warmup_s, duration_s, drain_s=10.0)
    result.lat.extend(run.lat)
    result.seconds += window
    result.errors += run.errors
    result.round_rps.append(len(run.lat) / window)
    result.round_p50.append(Result("", conc, lat=run.lat).pct(50))
    for role, ticks in cpu.items():
        result.cpu_ticks[role] = result.cpu_ticks.get(role, 0) + ticks
    if run.first_error and len(result.notes) < 3:
        result.notes.append(run.first_error[:300])


async def run_all(servers: list[Server], concs: list[int], rounds: int, warmup_s: float, duration_s: float,
                  verbose: bool) -> dict[tuple[str, int], Result]:
    results = {(s.kind, c): Result(s.name, c) for s in servers for c in concs}
    for r in range(rounds):
        order = servers if r % 2 == 0 else servers[::-1]  # alternate which server goes first at each concurrency
        for conc in concs:
            for server in order:
                res = results[(server.kind, conc)]
                await measure(server, conc, warmup_s, duration_s, res)
                if verbose:
                    print(f"  round {r + 1}/{rounds}  {server.name:<15} c={conc:<4} {res.round_rps[-1]:9.0f} req/s",
                          flush=True)
    return results


# --- report -----------------------------------------------------------------------------------------------------
def report(results: dict[tuple[str, int], Result], concs: list[int], header: list[str]) -> dict:
    out: dict = {"header": header, "conditions": [], "ratios": {}}
    print()
    for line in header:
        print(line)
    print()
    print(f"{'server':<16}{'conc':>5}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'requests':>10}"
          f"   req/s by round")
    for conc in concs:
        for kind in ("bare", "echo"):
            res = results.get((kind, conc))
            if res is None:
                continue
            rounds = " ".join(f"{x:.0f}" for x in res.round_rps)
            print(f"{res.server:<16}{conc:>5}{res.rps:>10.0f}{res.pct(50):>9.2f}{res.pct(99):>9.2f}{res.errors:>8}"
                  f"{len(res.lat):>10}   {rounds}")
            out["conditions"].append({
                "server": kind, "concurrency": conc, "rps": round(res.rps, 1), "p50_ms": round(res.pct(50), 3),
                "p99_ms": round(res.pct(99), 3), "errors": res.errors, "requests": len(res.lat),
                "rps_by_round": [round(x, 1) for x in res.round_rps],
                "cpu_us_per_request": {
                    role: round(ticks / CLK_TCK * 1e6 / max(1, len(res.lat)), 1)
                    for role, ticks in res.cpu_ticks.items() if role != MACHINE
                },
                "machine_busy_cpus": round(res.cpu_ticks.get(MACHINE, 0) / CLK_TCK / max(res.seconds, 1e-9), 2),
            })
            for note in res.notes:
                print(f"    first error: {note}")

    # CPU per request, by process role (from /proc utime+stime, 1/CLK_TCK resolution)
    roles = ["client (bench)", "gateway workers", "arbiter", "reader", "redis", "supervisor", "other"]
    print()
    print("CPU time per request, microseconds (utime+stime over the measured windows). busy: CPUs these processes")
    print("kept busy; machine: CPUs busy machine-wide (interrupts and everything else running included)")
    short = {"client (bench)": "client", "gateway workers": "gw-workers"}
    print(f"{'server':<16}{'conc':>5}" + "".join(f"{short.get(r, r):>11}" for r in roles) + f"{'total':>11}{'busy':>7}"
          f"{'machine':>9}")
    for conc in concs:
        for kind in ("bare", "echo"):
            res = results.get((kind, conc))
            if res is None or not res.lat:
                continue
            cells = ""
            total = 0
            for role in roles:
                ticks = res.cpu_ticks.get(role)
                if ticks is None:
                    cells += f"{'-':>11}"
                    continue
                us = ticks / CLK_TCK * 1e6 / len(res.lat)
                total += ticks
                cells += f"{us:>11.0f}"
            busy = total / CLK_TCK / res.seconds
            machine = res.cpu_ticks.get(MACHINE, 0) / CLK_TCK / res.seconds
            print(f"{res.server:<16}{conc:>5}{cells}{total / CLK_TCK * 1e6 / len(res.lat):>11.0f}{busy:>7.2f}"
                  f"{machine:>9.2f}")

    print()
    hi, lo = max(concs), min(concs)
    bare_hi, echo_hi = results.get(("bare", hi)), results.get(("echo", hi))
    bare_lo, echo_lo = results.get(("bare", lo)), results.get(("echo", lo))
    # Headline: the median over rounds of the paired figures (bare and echo of one round ran back to back, so
    # pairing cancels most of a noisy machine's drift); the pooled figure over all rounds is shown beside it.
    if bare_hi and echo_hi and bare_hi.rps:
        pooled = echo_hi.rps / bare_hi.rps
        paired = [e / b for e, b in zip(echo_hi.round_rps, bare_hi.round_rps, strict=True) if b]
        ratio = median(paired) if paired else pooled
        verdict = "meets" if ratio >= 0.5 else "BELOW"
        print(f"throughput echo/bare at c={hi}:  {ratio:.2f}  (target >= 0.5: {verdict})   "
              f"by round: {' '.join(f'{x:.2f}' for x in paired)}; pooled {pooled:.2f}")
        out["ratios"][f"throughput_echo_over_bare_c{hi}"] = round(ratio, 3)
        out["ratios"][f"throughput_echo_over_bare_c{hi}_by_round"] = [round(x, 3) for x in paired]
    if bare_lo and echo_lo and bare_lo.lat and echo_lo.lat:
        pooled = echo_lo.pct(50) - bare_lo.pct(50)
        paired = [e - b for e, b in zip(echo_lo.round_p50, bare_lo.round_p50, strict=True)]
        added = median(paired) if paired else pooled
        verdict = "meets" if added <= 1.0 else "ABOVE"
        print(f"added p50 echo-bare at c={lo}:    {added:.2f} ms  (target <= 1 ms: {verdict})   "
              f"by round: {' '.join(f'{x:.2f}' for x in paired)}; pooled {pooled:.2f}")
        out["ratios"][f"added_p50_ms_c{lo}"] = round(added, 3)
        out["ratios"][f"added_p50_ms_c{lo}_by_round"] = [round(x, 3) for x in paired]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per condition per round (5)")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds before each measurement (1)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all conditions (3)")
    p.add_argument("--workers", type=int, default=1, help="gunicorn workers for both servers (1)")
    p.add_argument("--concurrency", default="1,64", help="comma-separated connection counts (1,64)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round, 2 s per condition, 0.5 s warm-up")
    p.add_argument("--only", choices=["echo", "bare"], help="run one server only (no ratios)")
    p.add_argument("--hold", type=float, default=0.0,
                   help="after the run, keep the servers up this many seconds (to attach a profiler)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs, Redis data)")
    p.add_argument("--start-timeout", type=float, default=60.0, help="seconds to wait for each server (60)")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-round progress lines")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 2.0, 0.5
    concs = sorted({int(c) for c in args.concurrency.split(",") if c.strip()})

    try:
        import uvloop
        loop_name = f"uvloop {uvloop.__version__}"
    except ImportError:
        uvloop = None
        loop_name = "asyncio (uvloop not installed)"
    import gunicorn

    tmp = Path(tempfile.mkdtemp(prefix="liftoff-bench-"))
    servers: list[Server] = []
    code = 0
    try:
        ports = free_ports(7)
        started = time.monotonic()
        if args.only != "bare":
            servers.append(start_liftoff(tmp, ports[:6], args.workers))
        if args.only != "echo":
            servers.append(start_bare(tmp, ports[6], args.workers))
        print(f"starting {', '.join(s.name for s in servers)} (workers={args.workers}, temp dir {tmp}) ...", flush=True)
        failures = wait_ready(servers, ports[1], args.start_timeout)
        if failures:
            for failure in failures:
                print(f"FAILED TO START: {failure}", file=sys.stderr)
            return 1
        print(f"servers ready in {time.monotonic() - started:.1f}s", flush=True)
        for server in servers:
            server.refresh_groups()
            roles = ", ".join(f"{role} {pids}" for role, pids in server.groups.items())
            print(f"  {server.name} on 127.0.0.1:{server.port}: {roles}")
        total = args.rounds * len(concs) * len(servers) * (args.warmup + args.duration)
        print(f"measuring: {args.rounds} round(s) x {len(concs) * len(servers)} conditions x "
              f"({args.warmup:g}s warm-up + {args.duration:g}s) = about {total:.0f}s", flush=True)

        coro = run_all(servers, concs, args.rounds, args.warmup, args.duration, not args.quiet)
        results = uvloop.run(coro) if uvloop is not None else asyncio.run(coro)

        command = " ".join(["python", "-m", "bench.gateway_overhead", *(argv if argv is not None else sys.argv[1:])])
        now = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
        host = (
            f"host: {platform.node()}  {os.cpu_count()} CPUs  load {os.getloadavg()[0]:.2f}  "
            f"Python {platform.python_version()}  gunicorn {gunicorn.__version__} -k asgi  workers={args.workers}  "
            f"client: {loop_name}"
        )
        conditions = (
            f"conditions: {args.rounds} round(s), {args.warmup:g}s warm-up + {args.duration:g}s measured each; "
            f"POST {PATH} {BODY.decode()}"
        )
        header = [f"date: {now}   command: {command}   tree: {git_revision()}", host, conditions]
        out = report(results, concs, header)
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        if args.hold > 0:
            print(f"\nholding the servers for {args.hold:g}s: " + "; ".join(
                f"{s.name} {s.groups}" for s in servers), flush=True)
            time.sleep(args.hold)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    finally:
        for server in servers:
            server.stop(timeout_s=60.0)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
