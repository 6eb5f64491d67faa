"""Redis key hygiene: after 50 readers in 50 groups come and go and 10,000 requests pass (plain, streamed and
cancelled), the namespace holds the keys it held before, and a 404 no longer lists the deleted groups."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import redis

from liftoff.core.keys import Keys

from support.servers import Server, ServerFactory, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

WAVES, READERS_PER_WAVE, REQUESTS_PER_WAVE = 5, 10, 2000  # 50 readers, 10,000 requests
CONCURRENCY = 64
REPLY_TTL_BOUND_S = 120  # a reply stream's expiry (broker.REPLY_STREAM_TTL_S)


def _keys(client: redis.Redis, ns: str) -> dict[str, int]:
    """Every key of the namespace with its TTL in seconds (-1: none)."""
    names = [k.decode() for k in client.scan_iter(match=f"{ns}:*", count=1000)]
    return {name: client.ttl(name) for name in names}


def _wave(wave: int) -> list[str]:
    return [f"hyg-{wave * READERS_PER_WAVE + i}" for i in range(READERS_PER_WAVE)]


def _add_readers(server: Server, ids: list[str]) -> None:
    for reader_id in ids:
        body = {"model_name": "echo", "consumer_group": f"g-{reader_id}", "reader_id": reader_id,
                "echo_token_delay_ms": 2}
        assert httpx.post(server.mgmt + "/reader", json=body, timeout=10).status_code == 201
    wait_for(lambda: set(ids) <= set(server.status()["status"]["live_readers"]), 120, f"{ids} live", server,
             every_s=0.5)


def _delete_readers(server: Server, ids: list[str]) -> None:
    for reader_id in ids:
        assert httpx.delete(f"{server.mgmt}/reader/{reader_id}", timeout=10).status_code in (200, 204)


async def _one(client: httpx.AsyncClient, url: str, n: int, group: str) -> str:
    body = {"text": f"request {n} for {group} " + "word " * (40 if n % 20 == 0 else 3), "consumer_group": group}
    if n % 20 == 0:  # cancelled: the client reads the first event and hangs up mid-stream
        async with client.stream("POST", url + "/generate_stream", json=body) as r:
            async for _ in r.aiter_raw():
                break
        return "cancelled"
    if n % 5 == 0:
        r = await client.post(url + "/generate_stream", json=body)
        assert r.status_code == 200 and "event: error" not in r.text, r.text
        return "streamed"
    r = await client.post(url + "/generate", json=body)
    assert r.status_code == 200, r.text
    return "plain"


async def _requests(server: Server, wave: int) -> dict[str, int]:
    groups = [f"g-{r}" for r in _wave(wave)]
    counts: dict[str, int] = {}
    next_n = iter(range(wave * REQUESTS_PER_WAVE, (wave + 1) * REQUESTS_PER_WAVE))
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        async def worker() -> None:
            for n in next_n:
                kind = await _one(client, server.url, n, groups[n % len(groups)])
                counts[kind] = counts.get(kind, 0) + 1

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return counts


def _settled(client: redis.Redis, ns: str, baseline: dict[str, int]) -> list[str]:
    """What still differs from the baseline: keys beyond it, except reply streams and counters that carry an expiry
    or are one of the fixed few counters."""
    now = _keys(client, ns)
    extra = []
    for name, ttl in now.items():
        if name in baseline:
            continue
        if name.startswith(f"{ns}:replies:") and 0 < ttl <= REPLY_TTL_BOUND_S:
            continue  # a gateway worker's reply stream: it expires with the worker
        if name.startswith(f"{ns}:stats:"):
            continue  # a job counter (completed / failed / cancelled): one key per counter, kept
        extra.append(f"{name} (ttl {ttl})")
    return sorted(extra)


def test_keys_return_to_baseline_after_readers_and_requests(make_server: ServerFactory, redis_url: str) -> None:
    server = make_server(readers=[], reserved_consumers="", workers=2, wait_healthy=False)
    ns = server.settings["redis_namespace"]
    client = redis.Redis.from_url(redis_url)
    # warm up: one reader and a few requests of each kind, so that the counters and reply streams exist
    _add_readers(server, ["warm-0"])
    asyncio.run(_requests_few(server, "g-warm-0"))
    _delete_readers(server, ["warm-0"])
    wait_for(lambda: not any(":requests:" in k for k in _keys(client, ns)), 60, "the warm-up's streams to go",
             server, every_s=0.5)
    baseline = _keys(client, ns)
    started = time.monotonic()
    totals: dict[str, int] = {}
    request_s = 0.0
    for wave in range(WAVES):
        _add_readers(server, _wave(wave))
        t0 = time.monotonic()
        for kind, count in asyncio.run(_requests(server, wave)).items():
            totals[kind] = totals.get(kind, 0) + count
        request_s += time.monotonic() - t0
        print(f"wave {wave}: {time.monotonic() - t0:.1f}s of requests, {time.monotonic() - started:.1f}s in all")
        _delete_readers(server, _wave(wave))
    assert sum(totals.values()) == WAVES * REQUESTS_PER_WAVE
    print(f"\n{sum(totals.values())} requests {totals} in {request_s:.1f}s of requests "
          f"({sum(totals.values()) / request_s:.0f}/s); {time.monotonic() - started:.1f}s with the readers")
    wait_for(lambda: not _settled(client, ns, baseline), 60, "the keys to return to the baseline", server,
             every_s=0.5)
    print(f"keys: baseline {len(baseline)}, now {len(_keys(client, ns))}")
    missing = httpx.post(server.url + "/generate", json={"text": "x", "consumer_group": "g-hyg-0"}, timeout=10)
    assert missing.status_code == 404
    assert not [g for g in missing.json()["details"]["known_groups"] if g.startswith("g-hyg")]
    assert not client.exists(Keys(ns).groups)
    client.close()


async def _requests_few(server: Server, group: str) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(_one(client, server.url, n, group) for n in range(60)))
