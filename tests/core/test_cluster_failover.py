"""A Redis Cluster master SIGKILLed while 100 requests run: its replica takes over, every request ends with its
answer or a clean 503 (none hangs, none answers twice), and the group it served answers again within 10 s.

The cluster is this module's own (the failover changes which nodes are masters), with groups on all three masters:
`primary` (slot 13975, on the master killed), `second` (164) and `slow` (8903).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import orjson
import pytest
import redis

from liftoff.core.keys import Keys

from support.cluster import LocalCluster
from support.servers import Server, parse_sse, server_factory, wait_for

pytestmark = pytest.mark.processes  # starts redis-server and `liftoff serve` itself, beside the fixtures

GROUPS = ("primary", "second", "slow")
WORDS = " ".join(f"w{i}" for i in range(19))  # twenty tokens, 100 ms each: two seconds of work per request
REQUEST_TIMEOUT_S = 20.0
RESUME_WITHIN_S = 10.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("failover-cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, cluster: LocalCluster) -> Iterator[Server]:
    servers: list[Server] = []
    make = server_factory(tmp_path_factory.mktemp("failover"), cluster.url, servers)
    readers = [{"model_name": "echo", "consumer_group": group, "reader_id": f"{group}-0", "echo_token_delay_ms": 100,
                "max_batch_size": 64} for group in GROUPS]
    srv = make(readers=readers, reserved_consumers="", request_timeout_s=REQUEST_TIMEOUT_S)
    yield srv
    srv.stop()


async def one(http: httpx.AsyncClient, n: int) -> tuple[str, int, str]:
    """(group, status, what the client saw: the answer's text, or the error) of request `n`."""
    group, text = GROUPS[n % len(GROUPS)], f"n{n} {WORDS}"
    body = {"text": text, "consumer_group": group}
    if n % 4 == 0:
        async with http.stream("POST", "/generate_stream", json=body) as r:
            raw = (await r.aread()).decode()
        if r.status_code != 200:
            return group, r.status_code, orjson.loads(raw)["error"]
        events = parse_sse(raw)
        errors = [orjson.loads(data) for name, data in events if name == "error"]
        tokens = "".join(data for name, data in events if name == "message")
        if errors:  # the stream had started: it ends with the error as its last event, its tokens a prefix
            assert events[-1][0] == "error" and text.startswith(tokens), events
            return group, errors[0]["code"], errors[0]["error"]
        return group, 200, tokens
    r = await http.post("/generate", json=body)
    return group, r.status_code, r.json()["text"] if r.status_code == 200 else r.json()["error"]


async def load(url: str, count: int) -> list[tuple[str, int, str]]:
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S + 20, limits=limits) as http:
        return await asyncio.gather(*(one(http, n) for n in range(count)))


async def first_answer(url: str, group: str, since: float) -> tuple[float, list[str]]:
    """Seconds from `since` until `group` answers again, and the refusals met until then."""
    refusals: list[str] = []
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_TIMEOUT_S + 10) as http:
        while time.monotonic() - since < 30:
            r = await http.post("/generate", json={"text": "back?", "consumer_group": group})
            if r.status_code == 200:
                return time.monotonic() - since, refusals
            assert r.status_code == 503, r.text
            refusals.append(r.json()["error"])
            await asyncio.sleep(0.2)
    return time.monotonic() - since, refusals


def test_a_master_killed_under_load(server: Server, cluster: LocalCluster) -> None:
    victim = cluster.master_of(Keys(server.settings["redis_namespace"]).requests("primary"))
    registry = redis.RedisCluster(host="127.0.0.1", port=cluster.ports[0])

    def active() -> int:
        readers = registry.hgetall(Keys(server.settings["redis_namespace"]).readers).values()
        return sum(orjson.loads(blob)["jobs"].get("active", 0) for blob in readers)

    async def run() -> tuple[list[tuple[str, int, str]], tuple[float, list[str]]]:
        requests = asyncio.get_running_loop().create_task(load(server.url, 100))
        deadline = time.monotonic() + 15
        while active() < 60 and time.monotonic() < deadline:  # the requests are in the readers' hands  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        print(f"\n{active()} requests in the readers' hands when the master is killed")
        registry.close()
        cluster.kill(victim)
        # The client's timeout is past the request timeout: a request that hangs fails the test here.
        return await asyncio.gather(requests, first_answer(server.url, "primary", time.monotonic()))

    outcomes, (back_s, refusals) = asyncio.run(run())
    seen = Counter((group, status, what if status != 200 else "") for group, status, what in outcomes)
    print(f"outcomes: {dict(sorted(seen.items()))}\nprimary answered again {back_s:.1f}s after the kill, "
          f"refused {len(refusals)} times before: {sorted(set(refusals))}")
    assert back_s < RESUME_WITHIN_S, f"primary answered again only after {back_s:.1f}s"
    for n, (group, status, what) in enumerate(outcomes):
        assert status in (200, 503), (n, group, status, what)
        if status == 200:
            assert what == f"n{n} {WORDS}", (n, what)  # its own answer, whole, once
        else:
            assert what, (n, group)  # a 503 that says why
    wait_for(cluster.healthy, 30, "the replica to have taken over")
    for group in GROUPS:  # every group serves after the failover
        r = httpx.post(server.url + "/generate", json={"text": f"after {group}", "consumer_group": group}, timeout=30)
        assert r.status_code == 200 and r.json()["text"] == f"after {group}", r.text
