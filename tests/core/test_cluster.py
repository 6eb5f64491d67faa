"""The end-to-end flows on a real Redis Cluster (three masters, three replicas): generate, stream, embed, cancel,
reclaim after a reader's death, dead letters, deployments, status and health, with the same code as on one Redis.

The groups are chosen so that each master serves one: `primary` (slot 13975), `second` (164) and `slow` (8903).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
from redis.crc import key_slot

from liftoff.core import wire
from liftoff.core.keys import Keys

from support.cluster import LocalCluster
from support.servers import Server, kill_one_under_load, leave_stream, parse_sse, server_factory, start_reader, wait_for

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
WORDS = " ".join(f"w{i}" for i in range(9))  # ten tokens with the request's own first word
DEPLOYMENTS = "/api/v2/models/liveDeployments"
PREVIEW = {"preview": "true"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, redis_cluster: LocalCluster) -> Iterator[Server]:
    servers: list[Server] = []
    make = server_factory(tmp_path_factory.mktemp("cluster-e2e"), redis_cluster.url, servers)
    readers = [
        {"model_name": "echo", "consumer_group": "primary", "reader_id": "primary-0"},
        {"model_name": "echo", "consumer_group": "second", "reader_id": "second-0"},
        {"model_name": MINILM, "consumer_group": "embed", "reader_id": "minilm", "max_batch_size": 8},
    ]
    srv = make(readers=readers, reserved_consumers="dl", request_timeout_s=30.0)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(redis_cluster: LocalCluster) -> Iterator[redis.RedisCluster]:
    cluster = redis.RedisCluster(host="127.0.0.1", port=redis_cluster.ports[0])
    yield cluster
    cluster.close()


def namespace(server: Server) -> str:
    return str(server.settings["redis_namespace"])


def hand_reader(server: Server, cluster: LocalCluster, tmp: Path, reader_id: str, group: str, delay_ms: int,
                batch: int, env: dict[str, str] | None = None) -> Any:
    """`liftoff reader` started by hand with the cluster's seed nodes as its --redis-url."""
    config = {"model_name": "echo", "consumer_group": group, "echo_token_delay_ms": delay_ms, "max_batch_size": batch}
    return start_reader(cluster.url, namespace(server), tmp, "--config-json", orjson.dumps(config).decode(),
                        "--reader-id", reader_id, env=env)


def reader_jobs(client: redis.RedisCluster, server: Server, reader_id: str) -> dict[str, int]:
    blob = client.hget(Keys(namespace(server)).readers, reader_id)
    return orjson.loads(blob)["jobs"] if blob else {}


def stat(client: redis.RedisCluster, server: Server, group: str, name: str) -> int:
    return int(client.get(Keys(namespace(server)).stat(group, name)) or 0)


async def fire(url: str, texts: list[str], group: str, timeout_s: float = 60) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(texts))
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as http:
        return await asyncio.gather(*(http.post("/generate", json={"text": t, "consumer_group": group})
                                      for t in texts))


def test_each_master_serves_a_group_and_every_group_answers(server: Server, redis_cluster: LocalCluster) -> None:
    keys = Keys(namespace(server))
    masters = {group: redis_cluster.master_of(keys.requests(group)) for group in ("primary", "second", "slow")}
    assert len(set(masters.values())) == 3, masters
    for group in ("primary", "second"):
        r = httpx.post(server.url + "/generate", json={"text": f"hello {group}", "consumer_group": group}, timeout=30)
        assert r.status_code == 200 and r.json()["text"] == f"hello {group}", r.text
    with httpx.stream("POST", server.url + "/generate_stream", json={"text": WORDS, "consumer_group": "second"},
                      timeout=30) as r:
        assert r.status_code == 200
        events = parse_sse(r.read().decode())
    assert "".join(data for name, data in events if name == "message") == WORDS, events


def test_a_groups_keys_share_its_hash_slot(server: Server, client: redis.RedisCluster) -> None:
    keys = Keys(namespace(server))
    for group in ("primary", "second"):
        assert httpx.post(server.url + "/generate", json={"text": "x", "consumer_group": group},
                          timeout=30).status_code == 200
    names = [k.decode() for k in client.scan_iter(match=f"{keys.ns}:*", count=1000)]
    for group in ("primary", "second"):
        slot = key_slot(keys.requests(group).encode())
        mine = [n for n in names if f"{{{group}}}" in n]
        kinds = {n.split(":")[1] for n in mine}
        assert {"requests", "replies", "stats"} <= kinds, mine
        assert {key_slot(n.encode()) for n in mine} == {slot}, mine
    assert key_slot(keys.deployment_scale.encode()) == key_slot(keys.deployments.encode())


def test_embed(server: Server) -> None:
    texts = ["A man is playing a guitar.", "Someone plays the guitar."]
    r = httpx.post(server.url + "/embed", json={"text": texts, "consumer_group": "embed"}, timeout=60)
    assert r.status_code == 200, r.text
    vectors = r.json()["result"]
    assert len(vectors) == 2 and all(len(v) == 384 for v in vectors)


def test_client_disconnect_cancels_the_generation(
    server: Server, redis_cluster: LocalCluster, client: redis.RedisCluster, tmp_path: Path
) -> None:
    reader = hand_reader(server, redis_cluster, tmp_path, "streamer", "slow", delay_ms=50, batch=4)
    try:
        wait_for(lambda: "streamer" in server.status()["status"]["live_readers"], 30, "streamer live", server)
        long_text = " ".join(f"t{i}" for i in range(400))  # 20 s at 50 ms a token
        leave_stream(server.url + "/generate_stream", {"text": long_text, "consumer_group": "slow"})
        wait_for(lambda: reader_jobs(client, server, "streamer").get("cancelled") == 1, 10, "cancelled job", server)
        assert reader_jobs(client, server, "streamer")["active"] == 0
    finally:
        reader.terminate()
        reader.wait(20)


def test_a_reader_killed_under_load_loses_nothing(
    server: Server, redis_cluster: LocalCluster, client: redis.RedisCluster, tmp_path: Path
) -> None:
    readers = [hand_reader(server, redis_cluster, tmp_path, name, "pool", delay_ms=20, batch=8)
               for name in ("ra", "rb")]
    wait_for(lambda: {"ra", "rb"} <= set(server.status()["status"]["live_readers"]), 30, "two live readers", server)
    texts = [f"r{i} {WORDS}" for i in range(100)]

    responses = kill_one_under_load(readers, lambda: reader_jobs(client, server, "ra").get("active", 0) >= 4,
                                    lambda: asyncio.run(fire(server.url, texts, "pool")))
    assert [r.status_code for r in responses] == [200] * 100, {r.text for r in responses if r.status_code != 200}
    assert [r.json()["text"] for r in responses] == texts
    assert stat(client, server, "pool", "completed") == 100  # each answered once
    assert any("reclaimed" in log.read_text() for log in tmp_path.glob("reader-*.log"))


def test_exhausted_requests_are_dead_lettered_and_retried(
    server: Server, redis_cluster: LocalCluster, client: redis.RedisCluster, tmp_path: Path
) -> None:
    keys = Keys(namespace(server))
    env = {"LIFTOFF_MAX_DELIVERIES": "1"}
    first = hand_reader(server, redis_cluster, tmp_path, "lone", "dl", delay_ms=200, batch=4, env=env)
    wait_for(lambda: "lone" in server.status()["status"]["live_readers"], 30, "lone live", server)
    texts = [f"d{i} {WORDS}" for i in range(6)]
    killer = threading.Timer(0.7, lambda: os.kill(first.pid, signal.SIGKILL))
    killer.start()
    results: list[httpx.Response] = []
    worker = threading.Thread(target=lambda: results.extend(asyncio.run(fire(server.url, texts, "dl"))))
    worker.start()
    # The four the dead reader held were delivered once, the limit of the next reader, which dead-letters them.
    wait_for(lambda: "lone" in server.status()["status"]["dead_readers"], 30, "lone dead", server)
    second = hand_reader(server, redis_cluster, tmp_path, "lone-again", "dl", delay_ms=1, batch=4, env=env)
    try:
        wait_for(lambda: client.xlen(keys.dlq("dl")) == 4, 30, "four dead letters", server)
        worker.join(60)
        assert sorted(r.status_code for r in results) == [200, 200, 503, 503, 503, 503], [r.text for r in results]
        assert all("dead-letter queue" in r.json()["error"] for r in results if r.status_code == 503)
        listing = httpx.get(server.mgmt + "/dlq", timeout=10).json()
        assert listing["total"] == 4 and all(e["group"] == "dl" for e in listing["entries"])
        retried = httpx.post(server.mgmt + "/dlq/retry", json={"all": True}, timeout=10).json()["retried"]
        assert len(retried) == 4
        wait_for(lambda: stat(client, server, "dl", "completed") == 6, 30, "retried requests served", server)
        assert client.xlen(keys.dlq("dl")) == 0
        assert httpx.delete(server.mgmt + "/dlq", timeout=10).json() == {"purged": 0}
    finally:
        second.terminate()
        second.wait(20)


# KEYS: request stream. ARGV: entry, group, consumer. The entry is queued and delivered to `consumer` at once.
DELIVER = """
redis.call('XADD', KEYS[1], '*', 'd', ARGV[1])
return redis.call('XREADGROUP', 'GROUP', ARGV[2], ARGV[3], 'COUNT', 1, 'STREAMS', KEYS[1], '>')
"""


def test_a_reader_serves_again_what_a_failover_left_pending(
    server: Server, redis_cluster: LocalCluster, client: redis.RedisCluster, tmp_path: Path
) -> None:
    """A failover can lose a `FINISH` the old master acknowledged: the promoted replica has the entry pending for a
    live reader that is done with it. Once its connection drops, the reader serves the entry again."""
    keys = Keys(namespace(server))
    reader = hand_reader(server, redis_cluster, tmp_path, "keeper", "kept", delay_ms=1, batch=4)
    try:
        wait_for(lambda: "keeper" in server.status()["status"]["live_readers"], 30, "keeper live", server)
        consumer = orjson.loads(client.hget(keys.readers, "keeper"))["consumer_name"]
        now = wire.now_ms()
        item = {"v": 1, "id": "t:kept", "reply_to": keys.replies("kept", "by-hand"), "texts": ["kept answer"],
                "enqueued_ms": now, "deadline_ms": now + 60_000}
        client.eval(DELIVER, 1, keys.requests("kept"), orjson.dumps(item), "kept", consumer)
        assert client.xlen(keys.replies("kept", "by-hand")) == 0  # pending for the reader, which never saw it
        master = redis.Redis(host="127.0.0.1", port=redis_cluster.master_of(keys.requests("kept")))
        master.client_kill_filter(_type="normal")  # its connections drop, as when a master goes
        master.close()

        def answered() -> bool:
            entries = client.xrange(keys.replies("kept", "by-hand"))
            return any(wire.decode_reply(fields).kind == "done" for _, fields in entries)

        wait_for(answered, 20, "the entry served again", server)
        (reply,) = [wire.decode_reply(f) for _, f in client.xrange(keys.replies("kept", "by-hand"))]
        assert reply.id == "t:kept" and reply.texts == ["kept answer"] and reply.attempt == 2
        assert client.xlen(keys.requests("kept")) == 0  # acknowledged and deleted by its FINISH
        assert any("of group kept again" in log.read_text() for log in tmp_path.glob("reader-*.log"))
    finally:
        reader.terminate()
        reader.wait(20)


def test_deployment_lifecycle(server: Server) -> None:
    body = {"deploymentType": {"type": "direct", "branch": "master"}, "modelName": "echo",
            "runtimeConfiguration": {"minReplicas": 1, "maxReplicas": 2, "cpu": 0.5, "memory": "256MiB",
                                     "threadCount": 1}}
    r = httpx.post(server.mgmt + DEPLOYMENTS, params=PREVIEW, json=body, timeout=10)
    assert r.status_code == 200, r.text
    dep = r.json()

    def state() -> dict[str, Any]:
        return httpx.get(f"{server.mgmt}{DEPLOYMENTS}/{dep['rid']}", params=PREVIEW, timeout=10).json()["status"]

    wait_for(lambda: state()["isReady"], 60, "deployment ready", server)
    out = httpx.post(server.url + "/generate", json={"text": "hello there", "consumer_group": dep["consumerGroup"]},
                     timeout=30)
    assert out.status_code == 200 and out.json()["text"] == "hello there", out.text
    assert httpx.delete(f"{server.mgmt}{DEPLOYMENTS}/{dep['rid']}", params=PREVIEW, timeout=10).status_code == 204
    def serving() -> bool:
        readers = server.status()["status"]
        return any(info["consumer_groups"] == [dep["consumerGroup"]]
                   for state in ("live", "loading") for info in readers[f"{state}_readers"].values())

    wait_for(lambda: not serving(), 30, "replicas stopped", server)


def test_status_and_health_report(server: Server) -> None:
    status = server.status()["status"]
    assert {"primary-0", "second-0", "minilm"} <= set(status["live_readers"])
    r = httpx.get(server.mgmt + "/api/health/status", timeout=30)
    body = r.json()
    assert body["components"]["redis"]["status"] == "ok", body
    assert body["jobs"]["completed"] >= 4 and body["jobs"]["dlq"] == 0, body["jobs"]
