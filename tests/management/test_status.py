"""Management /status and /healthz, reader death, and the supervisor's restarts."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import jsonschema

from support.servers import Server, ServerFactory, start_reader, wait_for

SCHEMA = json.loads((Path(__file__).parent / "status_schema.json").read_text())


def test_status_matches_the_reference_schema(echo_server: Server) -> None:
    body = echo_server.status()
    jsonschema.validate(body, SCHEMA)
    status = body["status"]
    assert list(status["live_readers"]) == ["primary-0"]
    reader = status["live_readers"]["primary-0"]
    assert reader["consumer_groups"] == ["primary"]
    assert reader["consumer_name"] == f"primary-0-{reader['pids'][0]}"  # one consumer name per process
    assert reader["model_name"] == "echo"
    assert reader["device"] == "cpu"
    assert reader["pids"] and all(isinstance(p, int) for p in reader["pids"])
    beat = status["last_heartbeat"]["primary-0"]
    assert abs(beat["heartbeat_timestamp"] - time.time()) < 10
    assert body["config"]["port"] == echo_server.ports["port"]
    assert body["config"]["reserved_consumers"] == ""


def test_config_defaults_are_the_references(make_server: ServerFactory) -> None:
    server = make_server(readers=[], wait_healthy=False)
    config = server.status()["config"]
    assert config["body_size_limit_bytes"] == 2097152
    assert config["heartbeat_check_interval"] == 1
    assert config["reader_message_timeout_ms"] == 500
    assert config["reserved_consumers"] == "primary"
    assert config["echo"] is False and config["enable_metrics"] is True and config["allow_remote_images"] is False
    assert config["repository_path"].endswith("artefacts")
    assert server.status()["status"]["reserved_consumers"] == ["primary"]


def test_healthz_query_parameters(make_server: ServerFactory) -> None:
    server = make_server(readers=[], wait_healthy=False)
    r = httpx.get(server.mgmt + "/healthz", timeout=5)
    assert r.status_code == 503 and r.json()["reason"] == "no reader is attached"
    assert httpx.get(server.mgmt + "/healthz?state=bogus", timeout=5).status_code == 400
    assert httpx.get(server.mgmt + "/healthz?wait=soon", timeout=5).status_code == 400
    started = time.monotonic()
    r = httpx.get(server.mgmt + "/healthz?wait=1", timeout=5)
    assert r.status_code == 503 and time.monotonic() - started >= 0.9


def test_healthz_wait_returns_once_a_reader_is_live(make_server: ServerFactory, redis_url: str, tmp_path: Path) -> None:
    server = make_server(readers=[], wait_healthy=False, request_timeout_s=30.0)  # ?wait is capped at the timeout
    reader = start_reader(redis_url, server.settings["redis_namespace"], tmp_path, "--model", "echo")
    try:
        r = httpx.get(server.mgmt + "/healthz?wait=30", timeout=40)
        assert r.status_code == 200, r.text
        assert len(r.json()["live_readers"]) == 1
    finally:
        reader.terminate()
        assert reader.wait(15) == 0


def test_killed_reader_turns_dead_and_healthz_503(make_server: ServerFactory, redis_url: str, tmp_path: Path) -> None:
    server = make_server(readers=[], wait_healthy=False, reserved_consumers="")
    reader = start_reader(redis_url, server.settings["redis_namespace"], tmp_path, "--model", "echo",
                          "--reader-id", "by-hand")
    server.wait_healthy(30)
    os.kill(reader.pid, signal.SIGKILL)
    reader.wait()
    killed = time.monotonic()
    wait_for(lambda: "by-hand" in server.status()["status"]["dead_readers"], 10, "reader in dead_readers")
    # dead after 3 heartbeat intervals of 1 s, give or take a heartbeat
    assert time.monotonic() - killed < 5
    assert httpx.get(server.mgmt + "/healthz", timeout=5).status_code == 503
    r = httpx.post(server.url + "/generate", json={"text": "x", "consumer_group": "primary"}, timeout=10)
    assert r.status_code == 503 and "no live reader" in r.json()["error"]


def test_supervisor_restarts_a_killed_reader(make_server: ServerFactory) -> None:
    server = make_server(reserved_consumers="")
    old_pid = server.reader_pid("primary-0")
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: "primary-0" in server.status()["status"]["dead_readers"], 5, "reader marked dead", server)
    assert httpx.get(server.mgmt + "/healthz", timeout=5).status_code == 503
    wait_for(lambda: server.reader_pid("primary-0") != old_pid, 30, "reader restarted", server)
    server.wait_healthy(10)
    r = httpx.post(server.url + "/generate", json={"text": "back again"}, timeout=10)
    assert r.status_code == 200 and r.json() == {"text": "back again"}
    assert "restarting in" in server.log()


def test_reserved_group_buffers_until_a_reader_arrives(
    make_server: ServerFactory, redis_url: str, tmp_path: Path
) -> None:
    server = make_server(readers=[], wait_healthy=False, reserved_consumers="primary,batch")
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor() as pool:
        pending = pool.submit(httpx.post, server.url + "/generate",
                              json={"text": "sent before any reader", "consumer_group": "batch"}, timeout=30)
        time.sleep(1.0)
        assert not pending.done()
        reader = start_reader(redis_url, server.settings["redis_namespace"], tmp_path, "--model", "echo",
                              "--consumer-group", "batch")
        try:
            r = pending.result(timeout=30)
        finally:
            reader.terminate()
            reader.wait(15)
    assert r.status_code == 200, r.text
    assert r.json() == {"text": "sent before any reader"}


def test_reserved_group_wait_is_bounded(make_server: ServerFactory) -> None:
    server = make_server(readers=[], wait_healthy=False, reserved_consumers="primary", request_timeout_s=1.0)
    started = time.monotonic()
    r = httpx.post(server.url + "/generate", json={"text": "nobody home"}, timeout=10)
    assert r.status_code == 503
    assert "became live" in r.json()["error"]
    assert time.monotonic() - started < 5


def test_healthz_waits_for_every_configured_reader(make_server: ServerFactory) -> None:
    """The supervisor announces each reader before starting it: an echo reader is up in a second, the MiniLM one
    only after torch is imported, and /healthz must not say ready in between."""
    server = make_server(readers=[
        {"model_name": "echo", "consumer_group": "primary", "reader_id": "quick"},
        {"model_name": "sentence-transformers/all-MiniLM-L6-v2", "consumer_group": "embed", "reader_id": "slow"},
    ])
    status = server.status()["status"]
    assert set(status["live_readers"]) == {"quick", "slow"}, status


def test_a_duplicate_reader_id_leaves_the_live_reader_alone(make_server: ServerFactory, redis_url: str,
                                                           tmp_path: Path) -> None:
    """A supervised reader whose id is live elsewhere refuses to start; marking it exited must not mark the live
    one dead (nor must announcing it overwrite the live one's entry)."""
    import redis as redis_lib

    from liftoff.core.keys import Keys

    namespace = "dup-id"
    by_hand = start_reader(redis_url, namespace, tmp_path, "--model", "echo", "--reader-id", "dup")
    try:
        client = redis_lib.Redis.from_url(redis_url)
        wait_for(lambda: client.exists(Keys(namespace).heartbeat("dup")), 30, "the reader started by hand")
        server = make_server(readers=[{"model_name": "echo", "reader_id": "dup"}], redis_namespace=namespace,
                             wait_healthy=False)
        wait_for(lambda: "not restarting" in server.log(), 30, "the duplicate refusing to start", server)
        for _ in range(3):  # across a few heartbeats: still the hand-started one, still live
            live = server.status()["status"]["live_readers"]
            assert list(live) == ["dup"] and live["dup"]["pids"] == [by_hand.pid], live
            time.sleep(0.5)
    finally:
        by_hand.terminate()
        by_hand.wait(15)
