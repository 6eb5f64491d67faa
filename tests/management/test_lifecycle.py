"""Readers die, Redis restarts, clients leave, readers come and go: every request still gets one outcome."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis

from liftoff.control.embedded_redis import EmbeddedRedis
from liftoff.core.keys import Keys

from support.servers import (
    Server,
    ServerFactory,
    kill_one_under_load,
    leave_stream,
    parse_sse,
    server_factory,
    start_reader,
    wait_for,
)

WORDS = " ".join(f"w{i}" for i in range(9))  # ten tokens with the request's own first word


def sync_redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def reader_jobs(client: redis.Redis, namespace: str, reader_id: str) -> dict[str, int]:
    blob = client.hget(f"{namespace}:readers", reader_id)
    return orjson.loads(blob)["jobs"] if blob else {}


def stat(client: redis.Redis, namespace: str, name: str, group: str = "primary") -> int:
    return int(client.get(Keys(namespace).stat(group, name)) or 0)


async def fire(url: str, texts: list[str], timeout_s: float = 60) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(texts))
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as client:
        return await asyncio.gather(*(client.post("/generate", json={"text": t}) for t in texts))


def slow_reader(server: Server, redis_url: str, tmp: Path, reader_id: str, delay_ms: int, batch: int,
                env: dict[str, str] | None = None) -> Any:
    config = orjson.dumps({"model_name": "echo", "echo_token_delay_ms": delay_ms, "max_batch_size": batch}).decode()
    return start_reader(redis_url, server.settings["redis_namespace"], tmp, "--config-json", config,
                        "--reader-id", reader_id, env=env)


def test_reader_killed_under_load_loses_nothing(make_server: ServerFactory, redis_url: str, tmp_path: Path) -> None:
    server = make_server(readers=[], wait_healthy=False, reserved_consumers="", request_timeout_s=60.0)
    ns = server.settings["redis_namespace"]
    readers = [slow_reader(server, redis_url, tmp_path, name, delay_ms=20, batch=8) for name in ("ra", "rb")]
    wait_for(lambda: len(server.status()["status"]["live_readers"]) == 2, 30, "two live readers", server)
    texts = [f"r{i} {WORDS}" for i in range(200)]
    client = sync_redis(redis_url)

    responses = kill_one_under_load(readers, lambda: reader_jobs(client, ns, "ra").get("active", 0) >= 4,
                                    lambda: asyncio.run(fire(server.url, texts)))
    assert [r.status_code for r in responses] == [200] * 200, {r.text for r in responses if r.status_code != 200}
    assert [r.json()["text"] for r in responses] == texts
    assert stat(client, ns, "completed") == 200  # each reply produced once: reply and ack are one transaction
    assert any("reclaimed" in log.read_text() for log in tmp_path.glob("reader-*.log"))


def test_exhausted_requests_are_dead_lettered_and_retried(
    make_server: ServerFactory, redis_url: str, tmp_path: Path
) -> None:
    server = make_server(readers=[], wait_healthy=False, reserved_consumers="primary", max_deliveries=1,
                         request_timeout_s=60.0)
    ns = server.settings["redis_namespace"]
    env = {"LIFTOFF_MAX_DELIVERIES": "1"}
    first = slow_reader(server, redis_url, tmp_path, "lone", delay_ms=200, batch=4, env=env)
    server.wait_healthy(30)
    texts = [f"d{i} {WORDS}" for i in range(6)]
    killer = threading.Timer(0.7, lambda: os.kill(first.pid, signal.SIGKILL))
    killer.start()
    results: list[httpx.Response] = []
    worker = threading.Thread(target=lambda: results.extend(asyncio.run(fire(server.url, texts))))
    worker.start()
    # The four taken by the dead reader were delivered once, the limit: dead-lettered, their clients told so.
    client = sync_redis(redis_url)
    wait_for(lambda: client.xlen(Keys(ns).dlq("primary")) == 4, 30, "four dead letters", server)
    second = slow_reader(server, redis_url, tmp_path, "lone-again", delay_ms=1, batch=4, env=env)
    try:
        worker.join(60)
        codes = sorted(r.status_code for r in results)
        assert codes == [200, 200, 503, 503, 503, 503], [r.text for r in results]
        failed = [r.json()["error"] for r in results if r.status_code == 503]
        assert all("dead-letter queue" in e and "max_deliveries" in e for e in failed)
        listing = httpx.get(server.mgmt + "/dlq", timeout=10).json()
        assert listing["total"] == 4 and all(e["group"] == "primary" for e in listing["entries"])
        retried = httpx.post(server.mgmt + "/dlq/retry", json={"all": True}, timeout=10).json()["retried"]
        assert len(retried) == 4
        wait_for(lambda: stat(client, ns, "completed") == 6, 30, "retried requests served", server)
        assert client.xlen(Keys(ns).dlq("primary")) == 0
    finally:
        second.terminate()
        second.wait(20)


def test_dlq_endpoints_refuse_bad_input(make_server: ServerFactory) -> None:
    server = make_server(readers=[], wait_healthy=False)
    assert httpx.get(server.mgmt + "/dlq?count=0", timeout=5).status_code == 400
    assert httpx.post(server.mgmt + "/dlq/retry", json={}, timeout=5).status_code == 400
    r = httpx.post(server.mgmt + "/dlq/retry", json={"ids": ["1-0"]}, timeout=5)
    assert r.status_code == 404 and "1-0" in r.json()["error"]
    assert httpx.delete(server.mgmt + "/dlq", timeout=5).json() == {"purged": 0}


def test_client_disconnect_cancels_the_generation(
    make_server: ServerFactory, redis_url: str, tmp_path: Path
) -> None:
    server = make_server(readers=[], wait_healthy=False)
    ns = server.settings["redis_namespace"]
    reader = slow_reader(server, redis_url, tmp_path, "streamer", delay_ms=50, batch=4)
    server.wait_healthy(30)
    long_text = " ".join(f"t{i}" for i in range(400))  # 20 s at 50 ms a token
    try:
        leave_stream(server.url + "/generate_stream", {"text": long_text})
        started = time.monotonic()
        redis_client = sync_redis(redis_url)
        wait_for(lambda: reader_jobs(redis_client, ns, "streamer").get("cancelled") == 1, 10, "cancelled job")
        assert reader_jobs(redis_client, ns, "streamer")["active"] == 0
        assert time.monotonic() - started < 10
    finally:
        reader.terminate()
        reader.wait(20)


def test_add_and_remove_readers_under_load(make_server: ServerFactory) -> None:
    server = make_server(readers=[{"model_name": "echo", "reader_id": "base", "echo_token_delay_ms": 5}],
                         reserved_consumers="", request_timeout_s=60.0)
    results: list[httpx.Response] = []

    def load() -> None:
        for chunk in range(6):
            results.extend(asyncio.run(fire(server.url, [f"c{chunk} {i} {WORDS}" for i in range(40)])))

    worker = threading.Thread(target=load)
    worker.start()
    r = httpx.post(server.mgmt + "/reader", json={"model_name": "echo", "consumer_group": "primary",
                                                   "echo_token_delay_ms": 5, "shiny_new_option": True}, timeout=10)
    assert r.status_code == 201, r.text
    added = r.json()["reader_id"]
    assert r.json()["ignored_fields"] == ["shiny_new_option"]
    wait_for(lambda: sum(x["ready"] for x in httpx.get(server.mgmt + "/reader_groups", timeout=5).json()["primary"])
             == 2, 30, "added reader live", server)
    assert httpx.get(f"{server.mgmt}/config/{added}", timeout=5).json()["echo_token_delay_ms"] == 5
    r = httpx.delete(f"{server.mgmt}/reader/{added}", timeout=60)
    assert r.status_code == 204, r.text
    worker.join(120)
    assert len(results) == 240
    assert all(r.status_code == 200 for r in results), {r.text for r in results if r.status_code != 200}
    groups = httpx.get(server.mgmt + "/reader_groups", timeout=5).json()
    assert [x["reader_id"] for x in groups["primary"]] == ["base"]
    assert httpx.get(f"{server.mgmt}/config/{added}", timeout=5).status_code == 404
    assert httpx.delete(f"{server.mgmt}/reader/nobody", timeout=5).status_code == 404
    bad = httpx.post(server.mgmt + "/reader", json={"model_name": "echo", "max_batch_size": 0}, timeout=5)
    assert bad.status_code == 422 and "max_batch_size" in bad.json()["error"]
    time.sleep(1.5)  # the supervisor does not bring a removed reader back
    assert [x["reader_id"] for x in httpx.get(server.mgmt + "/reader_groups", timeout=5).json()["primary"]] == ["base"]


def test_full_queue_answers_429(make_server: ServerFactory) -> None:
    server = make_server(readers=[{"model_name": "echo", "max_batch_size": 1, "echo_token_delay_ms": 20}],
                         reserved_consumers="", max_queue_length=4, request_timeout_s=60.0)
    responses = asyncio.run(fire(server.url, [f"q{i} {WORDS}" for i in range(30)]))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429} and codes.count(429) > 0 and codes.count(200) >= 4
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["retry-after"] == "1"
    assert "max_queue_length" in refused.json()["error"]


def test_redis_restart_under_load(make_server: ServerFactory, tmp_path: Path) -> None:
    own = EmbeddedRedis(tmp_path / "own-redis", appendonly=True)
    own.start()
    server = make_server(redis_url=own.url, reserved_consumers="", request_timeout_s=20.0)
    outcomes: list[tuple[float, int]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                try:
                    code = client.post(server.url + "/generate", json={"text": "still here"}).status_code
                except httpx.TransportError:
                    code = -1
                outcomes.append((time.monotonic(), code))

    worker = threading.Thread(target=load)
    worker.start()
    try:
        time.sleep(1.0)
        own.kill()
        outage = time.monotonic()
        time.sleep(1.0)
        own.start()
        back = time.monotonic()
        wait_for(lambda: outcomes and outcomes[-1][1] == 200 and outcomes[-1][0] > back, 15, "service resumed",
                 server)
        resumed = next(t for t, code in outcomes if t > back and code == 200)
        time.sleep(1.0)
    finally:
        stop.set()
        worker.join(30)
        server.stop()
        own.stop()
    assert resumed - back < 8, f"service took {resumed - back:.1f}s to resume"
    during = {code for t, code in outcomes if outage < t < back}
    assert during <= {200, 503}, f"outage answers: {during}"
    assert all(code == 200 for t, code in outcomes if t > resumed + 0.5)


SILENCE_MS = 300  # reader_message_timeout_ms of the paced server: its reader's pause between tokens is 3 times that


@pytest.fixture(scope="module")
def paced_server(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Server]:
    """An echo reader far slower than the silence limit: it is busy between tokens, not stuck."""
    servers: list[Server] = []
    make = server_factory(tmp_path_factory.mktemp("paced"), redis_url, servers)
    yield make(readers=[{"model_name": "echo", "echo_token_delay_ms": 3 * SILENCE_MS}], reserved_consumers="",
               reader_message_timeout_ms=SILENCE_MS)
    for server in servers:
        server.stop()


def test_a_busy_reader_is_not_timed_out(paced_server: Server) -> None:
    started = time.monotonic()
    r = httpx.post(paced_server.url + "/generate_stream", json={"text": "one two three"}, timeout=30)
    assert parse_sse(r.text) == [("message", "one"), ("message", " two"), ("message", " three")]
    assert time.monotonic() - started > 2 * 3 * SILENCE_MS / 1000  # two silences, each 3 times the limit


def test_a_reader_silent_mid_stream_is_timed_out(paced_server: Server) -> None:
    pid = paced_server.reader_pid("primary-0")
    events: list[str] = []
    with httpx.stream("POST", paced_server.url + "/generate_stream", json={"text": "one two three"},
                      timeout=30) as response:
        lines = response.iter_lines()
        assert next(lines) == "data: one"
        os.kill(pid, signal.SIGSTOP)  # stopped, not busy: no more tokens and no more beats
        stopped = time.monotonic()
        try:
            events = list(lines)
            silent_s = time.monotonic() - stopped
        finally:
            os.kill(pid, signal.SIGCONT)
    body = "\n".join(events)
    assert "event: error" in body and "reader_message_timeout_ms" in body and "after 1 tokens" in body, body
    assert silent_s < (SILENCE_MS + 400) / 1000, f"caught {silent_s:.2f}s after the reader stopped"


def test_a_reader_that_comes_back_does_not_answer_twice(
    make_server: ServerFactory, redis_url: str, tmp_path: Path
) -> None:
    server = make_server(readers=[], wait_healthy=False, reserved_consumers="", request_timeout_s=60.0)
    ns = server.settings["redis_namespace"]
    paused, steady = (slow_reader(server, redis_url, tmp_path, name, delay_ms=50, batch=8) for name in ("pz", "st"))
    wait_for(lambda: len(server.status()["status"]["live_readers"]) == 2, 30, "two live readers", server)
    texts = [f"p{i} {WORDS}" for i in range(40)]
    results: list[httpx.Response] = []
    worker = threading.Thread(target=lambda: results.extend(asyncio.run(fire(server.url, texts))))
    worker.start()
    time.sleep(0.3)
    os.kill(paused.pid, signal.SIGSTOP)  # frozen with work in hand: its heartbeat stops, its work is reclaimed
    try:
        wait_for(lambda: "pz" in server.status()["status"]["dead_readers"], 15, "paused reader dead", server)
        worker.join(60)
    finally:
        os.kill(paused.pid, signal.SIGCONT)
    time.sleep(2.0)  # the resumed reader finishes what it held and tries to answer
    assert [r.status_code for r in results] == [200] * 40
    assert [r.json()["text"] for r in results] == texts
    client = sync_redis(redis_url)
    assert stat(client, ns, "completed") == 40
    for reader in (paused, steady):
        reader.terminate()
        reader.wait(20)
