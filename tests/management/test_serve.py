"""`liftoff serve` as a user runs it: embedded Redis, the default reader, Ctrl-C leaves nothing behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import httpx
import psutil
import pytest
import redis

from support.servers import LIFTOFF, Server, parse_sse

pytestmark = pytest.mark.processes  # starts redis-server and `liftoff serve` itself, beside the fixtures


def embedded_server(tmp_path: Path) -> Server:
    """No redis_url: the embedded redis-server, and one echo reader in `primary`."""
    return Server(tmp_path, {}, readers=[{"model_name": "echo"}])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_with_embedded_redis_and_clean_stop(tmp_path: Path, sig: int) -> None:
    server = embedded_server(tmp_path).start()
    try:
        children = server.descendants()
        names = " ".join(" ".join(p.cmdline()) for p in children)
        assert "redis-server" in names and "liftoff.entry.server" in names and "readers" in names
        r = httpx.post(server.url + "/generate", json={"text": "hello world"}, timeout=10)
        assert r.status_code == 200 and r.json() == {"text": "hello world"}
        r = httpx.post(server.url + "/generate_stream", json={"text": "hello world"}, timeout=10)
        assert [d for _, d in parse_sse(r.text)] == ["hello", " world"]
        assert (tmp_path / "state" / "redis" / "appendonlydir").is_dir() or any(
            (tmp_path / "state" / "redis").glob("appendonly*"))
    finally:
        assert server.proc is not None
        if sig == signal.SIGINT:
            os.killpg(server.proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
            code = server.proc.wait(30)
        else:
            code = server.stop(sig)
    assert code == 0, server.log()
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left behind: {[p.cmdline() for p in alive]}"


def test_redis_data_survives_a_restart(tmp_path: Path) -> None:
    server = embedded_server(tmp_path).start()

    sock = tmp_path / "state" / "redis" / "redis.sock"
    client = redis.Redis(unix_socket_path=str(sock))
    client.set("liftoff:test:survivor", "yes")
    client.close()
    assert server.stop() == 0
    server.start()
    client = redis.Redis(unix_socket_path=str(sock))
    assert client.get("liftoff:test:survivor") == b"yes"
    client.close()
    assert server.stop() == 0


def test_port_in_use_fails_clearly(tmp_path: Path) -> None:
    server = Server(tmp_path, {}, readers=[])
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", server.ports["vertex_port"]))
    blocker.listen()
    try:
        with open(server.log_path, "ab") as log:
            proc = subprocess.run([*LIFTOFF, "serve", "--config", str(server.config)], cwd=server.workdir,
                                  stdout=log, stderr=subprocess.STDOUT, timeout=120)
    finally:
        blocker.close()
    assert proc.returncode == 1
    assert "gateway exited" in server.log()
