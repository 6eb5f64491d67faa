"""A reader pushes a reply stream's expiry out with its first write, then at most every EXPIRY_REFRESH_S
(liftoff/core/broker/consumer.py, ExpiryClock), against a real Redis."""

from __future__ import annotations

import asyncio

import redis

from liftoff.core.broker import consumer
from liftoff.core.broker.consumer import EXPIRY_REFRESH_S, REPLY_STREAM_TTL_S, ExpiryClock, PostReply, send_replies
from liftoff.core.redis_client import close, connect


def test_expiry_with_the_first_write_then_once_per_refresh(redis_url: str, monkeypatch) -> None:
    stream = "test-expiry:replies:{g}:w1"
    sync = redis.Redis.from_url(redis_url)
    sync.delete(stream)
    now = [1000.0]
    monkeypatch.setattr(consumer.time, "monotonic", lambda: now[0])
    clock = ExpiryClock()
    op = PostReply(reply_stream=stream, fields={b"d": b"{}"})

    async def send() -> None:
        client = connect(redis_url)
        try:
            sent = await send_replies(client, [op, op], clock)
            assert not sent.unsent and sent.error is None
        finally:
            await close(client)

    asyncio.run(send())
    assert 0 < sync.ttl(stream) <= REPLY_STREAM_TTL_S  # the write that creates the stream sets its expiry
    sync.persist(stream)
    now[0] += EXPIRY_REFRESH_S - 1
    asyncio.run(send())
    assert sync.ttl(stream) == -1  # refreshed less than EXPIRY_REFRESH_S ago: no EXPIRE sent
    now[0] += 2
    asyncio.run(send())
    assert 0 < sync.ttl(stream) <= REPLY_STREAM_TTL_S  # due again
    assert sync.xlen(stream) == 6
    sync.delete(stream)


def test_without_a_clock_every_write_sets_the_expiry(redis_url: str) -> None:
    stream = "test-expiry:replies:{g}:w2"
    sync = redis.Redis.from_url(redis_url)
    sync.delete(stream)

    async def send() -> None:
        client = connect(redis_url)
        try:
            await send_replies(client, [PostReply(reply_stream=stream, fields={b"d": b"{}"})])
        finally:
            await close(client)

    for _ in range(2):
        asyncio.run(send())
        assert 0 < sync.ttl(stream) <= REPLY_STREAM_TTL_S
        sync.persist(stream)
    sync.delete(stream)
