"""No silent zombies: a background task that dies on a non-transient Redis error ends its process, and the process
is replaced (the supervisor restarts a reader, gunicorn's arbiter a gateway worker), instead of staying up and
looking healthy while it does nothing."""

from __future__ import annotations

from pathlib import Path

import httpx
import psutil
import pytest
import redis

from liftoff.control.embedded_redis import EmbeddedRedis
from liftoff.core.keys import Keys
from liftoff.core.process import EXIT_TASK_DIED

from support.servers import Server, ServerFactory, wait_for

pytestmark = pytest.mark.slow

READER = {"model_name": "echo", "consumer_group": "primary", "reader_id": "primary-0"}


def _generate(server: Server, text: str = "still here") -> httpx.Response:
    return httpx.post(server.url + "/generate", json={"text": text}, timeout=10)


def _live_pid(server: Server, reader_id: str) -> int | None:
    info = server.status()["status"]["live_readers"].get(reader_id)
    return int(info["pids"][0]) if info and info.get("pids") else None


def test_reader_that_redis_refuses_exits_and_is_restarted(tmp_path: Path, make_server: ServerFactory) -> None:
    own = EmbeddedRedis(tmp_path / "redis", appendonly=False)  # a dedicated server: OOM would hurt the others
    url = own.start()
    try:
        server = make_server(readers=[READER], redis_url=url)
        assert _generate(server).status_code == 200
        first = _live_pid(server, "primary-0")
        assert first is not None
        client = redis.Redis.from_url(url)
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", "1")  # every write is refused now: OOM command not allowed
        try:
            wait_for(lambda: not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE,
                     30, "the reader to exit", server)
            wait_for(lambda: f"exited with code {EXIT_TASK_DIED}" in server.log(), 10, "the supervisor's note",
                     server)
        finally:
            client.config_set("maxmemory", "0")
        log = server.log()
        assert "background task 'reader " in log and "died (OutOfMemoryError" in log
        wait_for(lambda: (_live_pid(server, "primary-0") or first) != first, 60, "a restarted live reader", server)
        assert _generate(server).json()["text"] == "still here"
        client.close()
    finally:
        own.stop()


def _workers(server: Server) -> set[int]:
    """The pids of the gateway's gunicorn workers (the children of `python -m liftoff.entry.server`). The test kills
    workers while it asks, so a process may be gone between being listed and being read: it is not a worker then."""
    pids = set()
    for process in server.descendants():
        try:
            if "liftoff.entry.server" in " ".join(process.cmdline()):
                pids |= {child.pid for child in process.children()}
        except psutil.NoSuchProcess:
            continue
    return pids


def test_gateway_worker_whose_listener_dies_is_replaced(make_server: ServerFactory, redis_url: str) -> None:
    server = make_server(readers=[READER], workers=1)
    assert _generate(server).status_code == 200
    before = _workers(server)
    assert len(before) == 1
    client = redis.Redis.from_url(redis_url)
    keys = Keys(server.settings["redis_namespace"])
    poisoned = [k.decode() for k in client.scan_iter(match=keys.replies("*", "*"))]
    assert poisoned, "the worker's reply stream exists once it has had a reply"
    try:
        for key in poisoned:  # a reply stream that is not a stream: XREAD and XTRIM answer WRONGTYPE
            client.delete(key)
            client.set(key, "not a stream")
        wait_for(lambda: len(_workers(server)) == 1 and not _workers(server) & before, 30,
                 "a new gateway worker", server)
    finally:
        client.delete(*poisoned)
        client.close()
    log = server.log()
    assert "background task 'gateway " in log and "WRONGTYPE" in log
    assert f"exited with code {EXIT_TASK_DIED}" in log  # gunicorn's arbiter says so
    wait_for(lambda: _generate(server).status_code == 200, 30, "the new worker to serve", server)
