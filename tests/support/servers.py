"""Real processes for the tests: `liftoff serve`, hand-started readers, and small HTTP/SSE helpers."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil

LIFTOFF = [sys.executable, "-m", "liftoff"]

T = TypeVar("T")
NAMESPACES = itertools.count()  # Redis namespaces of the servers tests make: unique in a test session


def free_ports(count: int) -> list[int]:
    socks, ports = [], []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(value)


def write_config(path: Path, settings: dict[str, Any], readers: list[dict[str, Any]]) -> Path:
    lines = [f"{k} = {toml_value(v)}" for k, v in settings.items() if v is not None]
    if not readers:
        lines.append("readers = []")
    for reader in readers:
        lines.append("\n[[readers]]")
        lines += [f"{k} = {toml_value(v)}" for k, v in reader.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class Server:
    """One `liftoff serve` process tree on free loopback ports."""

    def __init__(self, workdir: Path, settings: dict[str, Any], readers: list[dict[str, Any]]) -> None:
        ports = free_ports(6)
        names = ["port", "management_port", "vertex_port", "openai_port", "snowflake_port", "internal_port"]
        self.ports = dict(zip(names, ports, strict=True))
        self.settings = {
            **self.ports,
            "host": "127.0.0.1",
            "state_dir": str(workdir / "state"),
            "shutdown_grace_s": 5.0,
            "log_level": "INFO",
            **settings,
        }
        self.workdir = workdir
        self.config = write_config(workdir / "config.toml", self.settings, readers)
        self.log_path = workdir / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def port_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def openai_client(self, timeout_s: float = 60) -> Any:
        """The official `openai` client on this server's OpenAI port (no retries: a failure shows at once)."""
        import openai

        return openai.OpenAI(base_url=self.port_url("openai_port") + "/v1", api_key="unused", max_retries=0,
                             timeout=timeout_s)

    @property
    def url(self) -> str:
        return self.port_url("port")

    @property
    def mgmt(self) -> str:
        return self.port_url("management_port")

    def start(self, wait_healthy: bool = True, timeout_s: float = 60) -> Server:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*LIFTOFF, "serve", "--config", str(self.config)],
            cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.wait_listening(timeout_s)
        if wait_healthy:
            self.wait_healthy(timeout_s)
        return self

    def wait_listening(self, timeout_s: float = 60) -> None:
        wait_for(lambda: self._answers(), timeout_s, f"gateway on {self.mgmt}", self)

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"liftoff serve exited with {self.proc.returncode}:\n{self.log()}")
        try:
            httpx.get(self.mgmt + "/status", timeout=1)
            return True
        except httpx.TransportError:
            return False

    def wait_healthy(self, timeout_s: float = 60) -> None:
        wait_for(lambda: httpx.get(self.mgmt + "/healthz", timeout=5).status_code == 200, timeout_s, "healthy", self)

    def status(self) -> dict[str, Any]:
        return httpx.get(self.mgmt + "/status", timeout=5).json()

    def reader_pid(self, reader_id: str) -> int:
        info = self.status()["status"]["live_readers"][reader_id]
        return int(info["pids"][0])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def descendants(self) -> list[psutil.Process]:
        assert self.proc is not None
        try:
            return psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError(f"liftoff serve did not stop within {timeout_s}s:\n{self.log()}") from None


def start_reader(redis_url: str, namespace: str, workdir: Path, *args: str,
                 env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`liftoff reader` started by hand, the way an operator adds one on another machine."""
    env = {**os.environ, "LIFTOFF_REDIS_NAMESPACE": namespace, **(env or {})}
    env.pop("LIFTOFF_RESOLVED_SETTINGS", None)
    log = open(workdir / f"reader-{time.monotonic_ns()}.log", "ab")
    return subprocess.Popen(
        [*LIFTOFF, "reader", "--redis-url", redis_url, *args],
        cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


def wait_for(check: Any, timeout_s: float, what: str, server: Server | None = None, every_s: float = 0.05) -> None:
    deadline = time.monotonic() + timeout_s
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.TransportError, KeyError) as exc:
            last_exc = exc
        time.sleep(every_s)
    detail = f"\n--- serve log ---\n{server.log()}" if server else ""
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last error: {last_exc}){detail}")


def parse_sse(raw: str) -> list[tuple[str, str]]:
    """(event name, data) pairs, parsed per the SSE specification (one leading space stripped, lines joined)."""
    events, name, data = [], "message", []
    for line in raw.split("\n"):
        if line == "":
            if data:
                events.append((name, "\n".join(data)))
            name, data = "message", []
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
    return events


def leave_stream(url: str, body: dict[str, Any], events: int = 3, timeout_s: float = 30) -> None:
    """POST a streamed request, read `events` of its `data:` events, then close the connection: a client gone."""
    with httpx.Client(timeout=timeout_s) as client, client.stream("POST", url, json=body) as response:
        seen = 0
        for line in response.iter_lines():
            seen += line.startswith("data:")
            if seen >= events:
                return


def kill_one_under_load(readers: list[subprocess.Popen[bytes]], busy: Callable[[], bool], load: Callable[[], T]) -> T:
    """Run `load` while the first reader is SIGKILLed as soon as `busy()` says it holds work (whatever the machine's
    pace); then stop the others. Returns what `load` returned."""
    def kill_when_busy() -> None:
        wait_for(busy, 30, "the reader busy", every_s=0.01)
        os.kill(readers[0].pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_when_busy)
    killer.start()
    try:
        return load()
    finally:
        killer.join(30)
        for survivor in readers[1:]:
            survivor.terminate()
            survivor.wait(20)


ServerFactory = Callable[..., Server]


def server_factory(tmp: Path, redis_url: str, servers: list[Server]) -> ServerFactory:
    """A function that makes `Server`s under `tmp` on `redis_url`, each with its own namespace, kept in `servers`
    (the caller stops them)."""

    def make(readers: list[dict[str, Any]] | None = None, start: bool = True, wait_healthy: bool = True,
             **settings: Any) -> Server:
        workdir = tmp / f"server{len(servers)}"
        workdir.mkdir()
        settings.setdefault("redis_url", redis_url)
        settings.setdefault("redis_namespace", f"s{next(NAMESPACES)}")
        settings.setdefault("request_timeout_s", 10.0)
        default_reader = [{"model_name": "echo", "consumer_group": "primary", "reader_id": "primary-0"}]
        server = Server(workdir, settings, default_reader if readers is None else readers)
        servers.append(server)
        if start:
            server.start(wait_healthy=wait_healthy)
        return server

    return make
