"""What the benches share: the load generator, process CPU accounting, `liftoff serve` trees, the report helpers.

* the load generator of bench.gateway_overhead (and, with one body per request, of bench.embeddings and
  bench.generation): an asyncio HTTP/1.1 keep-alive client on ``asyncio.Protocol`` callbacks (`Run`, `Conn`,
  `BodiesRun`), and the window around it (`measure_window`, `Result`);
* CPU time by process role of a server tree, from /proc (`process_groups`, `cpu_snapshot`, `machine_busy_ticks`);
* servers: free loopback ports, `liftoff serve` from a temp config.toml (`launch_liftoff`, `Server`,
  `GatewayHarness`), readiness, one-off requests (`http_status`, `post_json`);
* in-process timing against which the gateway figures are set (`Timed`, `timed`, `InProcess`, `interleave`);
* the report: header lines, tables, JSON, flags shared by bench.embeddings and bench.generation, and `guarded`,
  the Ctrl-C and clean-up frame of every bench's main.

Nothing here imports torch at module level: bench.gateway_overhead and bench.soak do not need it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as _dt
import gc
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter_ns
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parent.parent
PATH = "/generate"  # the request of bench.gateway_overhead, and the probe of `wait_ready`
BODY = b'{"text": "hello world"}'
CLK_TCK = os.sysconf("SC_CLK_TCK")
MACHINE = "machine"  # key of the whole machine's busy ticks in a CPU snapshot
THREADS_ENV = "LIFTOFF_TORCH_THREADS"
CONCURRENCY = "1,8,32,64"
PORT_NAMES = ["port", "management_port", "vertex_port", "openai_port", "snowflake_port", "internal_port"]
T = TypeVar("T")


# --- the load generator ----------------------------------------------------------------------------------------------
def post_request(port: int, path: str, body: bytes) -> bytes:
    """The bytes of one `POST path` with a JSON `body` to 127.0.0.1:`port` on a keep-alive connection."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def response_head(head: bytes) -> tuple[int, int, bool]:
    """(status, Content-Length or -1 without one, chunked) of a lower-cased HTTP/1.1 response head."""
    try:
        status = int(head[9:12])
    except ValueError:
        status = 0
    i = head.find(b"\r\ncontent-length:")
    if i >= 0:
        j = head.find(b"\r\n", i + 2)
        return status, int(head[i + 17 : j if j >= 0 else len(head)]), False
    return status, -1, b"\r\ntransfer-encoding: chunked" in head


def set_nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class Run:
    """One condition: `conc` keep-alive connections, each sending requests back to back until `end_ns`."""

    def __init__(self, port: int, conc: int, path: str, body: bytes) -> None:
        self.port = port
        self.conc = conc
        self.request = post_request(port, path, body)
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


class BodiesRun(Run):
    """`Run` sending the given JSON bodies in turn (one per request)."""

    def __init__(self, port: int, conc: int, path: str, bodies: list[bytes]) -> None:
        self._requests = [post_request(port, path, b) for b in bodies]
        self._next = 0
        super().__init__(port, conc, path, bodies[0])

    @property
    def request(self) -> bytes:  # read by each connection once per request it sends
        self._next += 1
        return self._requests[self._next % len(self._requests)]

    @request.setter
    def request(self, _value: bytes) -> None:  # Run.__init__ sets its one fixed request; ignored
        pass


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
        set_nodelay(transport)
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
            self.status, length, chunked = response_head(head)
            if length >= 0:
                self.total = hend + 4 + length
            elif chunked:
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


def client_loop() -> str:
    """The event loop the benches' clients run on, as the reports name it: uvloop where it is installed."""
    try:
        import uvloop
    except ImportError:
        return "asyncio (uvloop not installed)"
    return f"uvloop {uvloop.__version__}"


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


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
        elif "-m liftoff.readers" in cmd or "-m readers" in cmd:
            role = "reader"
        elif ("liftoff.entry.server" in cmd or "liftoff.server" in cmd or "gateway.server" in cmd
              or parent_role in ("arbiter", "gateway workers")):
            # (liftoff.server, gateway.server: the gunicorn module's name in older trees, for --against)
            role = "arbiter" if parent_role == "supervisor" else "gateway workers"
        else:
            role = "other"
        groups.setdefault(role, []).append(pid)
        for child in children.get(pid, []):
            walk(child, role)

    walk(root, None)
    return groups


def machine_busy_ticks() -> int:
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
    snap[MACHINE] = machine_busy_ticks()
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


def post_json(port: int, path: str, payload: dict[str, Any], timeout: float = 120.0) -> tuple[int, object]:
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


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFTOFF_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class StreamTally:
    """What a bench counts of streamed answers: each one's time to first token, the tokens, the failures."""

    ttft_s: list[float] = field(default_factory=list)
    tokens: int = 0
    errors: int = 0


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


def wait_ready(servers: list[Server], mgmt_port: int, timeout_s: float) -> list[str]:
    """Wait until Liftoff's /healthz is 200 and every server answers `POST PATH BODY` with 200; returns the
    failures."""
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


def start_failed(failures: list[str]) -> bool:
    """Print why the server(s) did not start, if they did not."""
    for failure in failures:
        print(f"FAILED TO START: {failure}", file=sys.stderr)
    return bool(failures)


class GatewayHarness:
    """`liftoff serve` with one reader, from a temp config.toml on six free loopback ports (picked at `start`)."""

    def __init__(self, tmp: Path, reader: dict[str, object], threads: int, workers: int = 1,
                 repository_path: Path | None = None) -> None:
        self.tmp = tmp
        self.reader = reader
        self.threads = threads
        self.workers = workers
        self.repository_path = repository_path or tmp / "models"
        self.ports: list[int] = []
        self.port = self.mgmt_port = 0
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
        self.ports = free_ports(6)
        self.port, self.mgmt_port = self.ports[0], self.ports[1]
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
            if http_status(self.mgmt_port, "GET", "/healthz", timeout=5.0) == 200:
                self.server.refresh_groups()
                return None
            time.sleep(0.2)
        return f"GET /healthz not 200 within {timeout_s:g}s:\n{self.server.log_tail()}"

    def serve(self, timeout_s: float) -> bool:
        """Start the server and wait until it is healthy, saying so; False once why it did not start is printed."""
        started = time.monotonic()
        self.start()
        print(f"starting liftoff serve (temp dir {self.tmp}) ...", flush=True)
        failure = self.wait_healthy(timeout_s)
        if start_failed([failure] if failure else []):
            return False
        print(f"healthy in {time.monotonic() - started:.1f}s: {self.describe()}", flush=True)
        return True

    def guarded(self, work: Callable[[], int], keep: bool) -> int:
        """`guarded(work)` with this server stopped and its temp dir removed (unless `keep`) at the end."""

        def cleanup() -> None:
            self.stop()
            remove_tmp(self.tmp, keep)

        return guarded(work, cleanup)

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


# --- measurement -------------------------------------------------------------------------------------------------
def nearest_rank_ms(lat_ns: list[int], q: float) -> float:
    """Nearest-rank percentile `q` (0-100) of latencies in nanoseconds, in milliseconds."""
    if not lat_ns:
        return float("nan")
    ordered = sorted(lat_ns)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1] / 1e6


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
        return nearest_rank_ms(self.lat, q)

    def add(self, run: Run, window_s: float, cpu: dict[str, int]) -> None:
        """Pool one measured window of `run` (its seconds, and CPU ticks by role in it) into this condition."""
        self.lat.extend(run.lat)
        self.seconds += window_s
        self.errors += run.errors
        self.round_rps.append(len(run.lat) / window_s)
        self.round_p50.append(nearest_rank_ms(run.lat, 50))
        for role, ticks in cpu.items():
            self.cpu_ticks[role] = self.cpu_ticks.get(role, 0) + ticks
        if run.first_error and len(self.notes) < 3:
            self.notes.append(run.first_error[:300])


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


async def measure_all(harness: GatewayHarness, path: str, bodies: list[bytes], concs: list[int], warmup_s: float,
                      duration_s: float, unit: str, per_request: float, verbose: bool = True) -> dict[int, Result]:
    """Each concurrency in turn through `harness`'s server: `conc` connections, warm-up, then a measured window."""
    server = harness.server
    assert server is not None
    results = {}
    for conc in concs:
        res = results[conc] = Result(f"c={conc}", conc)
        run = BodiesRun(harness.port, conc, path, bodies)
        res.add(run, *await measure_window(server, run, warmup_s, duration_s, drain_s=30.0))
        if verbose:
            print(f"  gateway c={conc:<3} {res.rps:9.1f} req/s  {res.rps * per_request:9.1f} {unit}/s  "
                  f"p50 {res.pct(50):.1f} ms  errors {res.errors}", flush=True)
    return results


def measure_served(harness: GatewayHarness, args: argparse.Namespace, path: str, bodies: list[bytes],
                   concs: list[int], unit: str, per_request: float, inproc: InProcess,
                   again: Callable[[], list[Timed]]) -> dict[int, Result]:
    """Every concurrency through the gateway, then `--hold`, stop the server, and the in-process pass `again`
    (unless `--no-after`)."""
    results = run_loop(measure_all(harness, path, bodies, concs, args.warmup, args.duration, unit, per_request))
    if args.hold > 0:
        print(f"holding the server {args.hold:g}s: {harness.describe()}", flush=True)
        time.sleep(args.hold)
    harness.stop()
    if inproc and not args.no_after:
        print("in-process again, the server stopped ...", flush=True)
        inproc.measure("after", again, unit)
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
    machine0 = machine_busy_ticks()
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
    out.machine_s = (machine_busy_ticks() - machine0) / CLK_TCK
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

    def measure(self, label: str, rows: Callable[[], list[Timed]], unit: str) -> None:
        """One pass: `rows()` loads the model and times each condition; the model is collected after it."""
        self.add(label, rows(), unit)
        gc.collect()

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

    def as_json(self) -> dict[str, dict[str, float]]:
        return {label: {r.name: round(r.rate, 2) for r in rows} for label, rows in self.passes.items()}


def interleave(rounds: int, conditions: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Each condition's rate once per round, the conditions in turn within a round (drift hits them alike)."""
    results: dict[str, list[float]] = {name: [] for name in conditions}
    for _ in range(rounds):
        for name, measure in conditions.items():
            results[name].append(measure())
    return results


def print_best(title: str, results: dict[str, list[float]], unit: str, widths: tuple[int, int, int],
               ratios: list[tuple[str, str, str, str]]) -> None:
    """The best round of each condition and the ratios of the best rounds: `ratios` holds (label, numerator,
    denominator, note) and `widths` the widths of the condition names, the rates and the ratio labels."""
    best = {name: max(rates) for name, rates in results.items()}
    name_w, rate_w, label_w = widths
    print(title)
    for name, value in best.items():
        print(f"  {name:<{name_w}} {value:{rate_w}.0f} {unit}/s   "
              f"(rounds: {', '.join(f'{v:.0f}' for v in results[name])})")
    for label, top, bottom, note in ratios:
        print(f"  {label:<{label_w}}{best[top] / best[bottom]:.2f}{note}")


# --- report -----------------------------------------------------------------------------------------------------
ROLES = ["client (bench)", "gateway workers", "arbiter", "reader", "redis", "supervisor", "other"]
_SHORT = {"client (bench)": "client", "gateway workers": "gw-workers"}
CPU_COLUMNS = "".join(f"{_SHORT.get(r, r):>11}" for r in ROLES) + f"{'total':>11}{'busy':>7}{'machine':>9}"


def cpu_columns(res: Result) -> str:
    """The CPU microseconds per request of each role and of all of them, then the CPUs they and the machine kept
    busy over the measured windows (columns under CPU_COLUMNS)."""
    cells, total = "", 0
    for role in ROLES:
        ticks = res.cpu_ticks.get(role)
        if ticks is None:
            cells += f"{'-':>11}"
            continue
        total += ticks
        cells += f"{ticks / CLK_TCK * 1e6 / len(res.lat):>11.0f}"
    return (f"{cells}{total / CLK_TCK * 1e6 / len(res.lat):>11.0f}{total / CLK_TCK / res.seconds:>7.2f}"
            f"{res.cpu_ticks.get(MACHINE, 0) / CLK_TCK / res.seconds:>9.2f}")


def cpu_json(res: Result) -> dict[str, Any]:
    return {
        "cpu_us_per_request": {role: round(ticks / CLK_TCK * 1e6 / max(1, len(res.lat)), 1)
                               for role, ticks in res.cpu_ticks.items() if role != MACHINE},
        "machine_busy_cpus": round(res.cpu_ticks.get(MACHINE, 0) / CLK_TCK / max(res.seconds, 1e-9), 2),
    }


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
    print()
    print("CPU time per request, microseconds (utime+stime over the measured window); busy: CPUs the bench and the")
    print("server kept busy; machine: CPUs busy machine-wide (anything else running included)")
    print(f"{'conc':>5}" + CPU_COLUMNS)
    for conc, res in results.items():
        if res.lat:
            print(f"{conc:>5}{cpu_columns(res)}")


def conditions_json(results: dict[int, Result], per_request: float) -> list[dict[str, Any]]:
    return [{
        "concurrency": conc, "rps": round(res.rps, 2), "units_per_s": round(res.rps * per_request, 2),
        "p50_ms": round(res.pct(50), 2), "p99_ms": round(res.pct(99), 2), "errors": res.errors,
        "requests": len(res.lat), **cpu_json(res),
    } for conc, res in results.items()]


def print_served(module: str, argv: list[str], extra: list[str], inproc: InProcess, threads: int, unit: str,
                 per_request: float, results: dict[int, Result], refs: list[tuple[str, float]],
                 note: str = "") -> dict[str, Any]:
    """The header (`header_lines`), the in-process table, the gateway table (each rate also over `refs`, the best
    in-process rates); returns the figures for `--json`, their "ratios" still empty."""
    header = header_lines(module, argv, extra)
    print()
    for line in header:
        print(line)
    print()
    if inproc:
        inproc.print(unit, threads)
        print()
    print(f"through the gateway (HTTP -> gateway -> Redis -> reader -> back); {note}÷: over the best in-process pass")
    print_gateway(results, unit, per_request, refs if inproc else [])
    print()
    return {"header": header, f"inprocess_{unit}_per_s": inproc.as_json(),
            "gateway": conditions_json(results, per_request), "ratios": {}}


def threads_note(threads: int) -> str:
    return f"torch threads {threads} (bench process and reader: {THREADS_ENV}={threads})"


def gateway_line(request: str, args: argparse.Namespace, reader: str) -> str:
    """The header line that says what was sent through the gateway, to which reader, for how long."""
    return (f"gateway: {request}, {args.workers} worker(s); reader {reader}; {args.warmup:g}s warm-up + "
            f"{args.duration:g}s measured per concurrency")


def verdict(value: float, target: float) -> str:
    return "meets" if value >= target else "BELOW"


def run_line(module: str, argv: list[str] | None) -> str:
    """The first header line of a report: when, the command (`python -m <module> <argv>`) and the tree measured."""
    now = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    command = " ".join(["python", "-m", module, *(argv if argv is not None else sys.argv[1:])])
    return f"date: {now}   command: {command}   tree: {git_revision()}"


def host_line(tail: str) -> str:
    return (f"host: {platform.node()}  {os.cpu_count()} CPUs  load {os.getloadavg()[0]:.2f}  "
            f"Python {platform.python_version()}  {tail}")


def header_lines(module: str, argv: list[str], extra: list[str]) -> list[str]:
    import torch

    return [run_line(module, argv), host_line(f"torch {torch.__version__}"), *extra]


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


def concurrencies(text: str) -> list[int]:
    """`--concurrency`'s comma-separated connection counts, in order, each once."""
    return sorted({int(c) for c in text.split(",") if c.strip()})


def use_threads(args: argparse.Namespace) -> None:
    """torch's intra-op threads, in this process and (through THREADS_ENV) in the reader: `--threads`, where 0
    means torch's default (one per core), written back to `args.threads`."""
    import torch

    args.threads = args.threads or torch.get_num_threads()
    os.environ[THREADS_ENV] = str(args.threads)
    torch.set_num_threads(args.threads)


def remove_tmp(tmp: Path, keep: bool) -> None:
    if keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


def guarded(work: Callable[[], int], cleanup: Callable[[], None]) -> int:
    """`work()`'s exit status, 130 on Ctrl-C; `cleanup()` whatever happens."""
    try:
        return work()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        cleanup()


# --- in-process generation benches ----------------------------------------------------------------------------------
def inprocess_parser(doc: str, jobs: int, new_tokens: int, rounds: int) -> argparse.ArgumentParser:
    """The flags every in-process generation bench takes: concurrent jobs, new tokens per job, rounds."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[1])
    parser.add_argument("--jobs", type=int, default=jobs)
    parser.add_argument("--new-tokens", type=int, default=new_tokens)
    parser.add_argument("--rounds", type=int, default=rounds)
    return parser


@contextlib.contextmanager
def tiny_generation_engine(max_batch_size: int, **llama: int) -> Iterator[Any]:
    """The tests' tiny random Llama (`build_llama`, with `llama` sizes), built in a temp dir and loaded the way a
    reader loads it; closed and removed after."""
    import tempfile

    from liftoff.core.reader_config import ReaderConfig
    from liftoff.readers.engines.generation import GenerationEngine
    from tests.support.models import build_llama

    with tempfile.TemporaryDirectory() as tmp:
        path = build_llama(Path(tmp) / "tiny-llama", **llama)
        engine = GenerationEngine(ReaderConfig(model_name=str(path), max_batch_size=max_batch_size))
        asyncio.run(engine.load())
        try:
            yield engine
        finally:
            engine.close()


def generated_tokens_per_s(engine: Any, jobs: list[Any]) -> float:
    """Run `jobs` (tests.support.models.make_job) on `engine` at once, each its own run call as the reader loop
    makes them, and answer the tokens they generated per second; a failed job ends the bench with its reply."""
    from tests.support.models import CollectingSink

    async def go() -> CollectingSink:
        sink = CollectingSink()
        await asyncio.gather(*(engine.run([job], sink) for job in jobs))
        return sink

    start = time.perf_counter()
    sink = asyncio.run(go())
    elapsed = time.perf_counter() - start
    failed = [f for f in sink.finals.values() if f[0] != "done"]
    if failed:
        raise SystemExit(f"a job failed: {failed[0]}")
    return sum(f[2][0]["generated_tokens"] for f in sink.finals.values()) / elapsed


def add_window_args(p: argparse.ArgumentParser) -> None:
    """The measuring options the load benches share: --duration, --warmup, --rounds, --workers, --quick."""
    p.add_argument("--duration", type=float, default=5.0, help="measured seconds per condition per round (5)")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds before each measurement (1)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds over all conditions (3)")
    p.add_argument("--workers", type=int, default=1, help="gunicorn workers of each server (1)")
    p.add_argument("--quick", action="store_true", help="smoke run: 1 round, 2 s per condition, 0.5 s warm-up")


def add_run_args(p: argparse.ArgumentParser, start_timeout: float, what: str) -> None:
    """The run options the server benches share: --json, --keep, --start-timeout (per `what`), --quiet."""
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs, Redis data)")
    p.add_argument("--start-timeout", type=float, default=start_timeout,
                   help=f"seconds to wait for each {what} ({start_timeout:g})")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-round progress lines")


def parse_window_args(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse; --quick shortens the measuring window to a smoke run."""
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 2.0, 0.5
    return args
