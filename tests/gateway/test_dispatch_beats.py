"""The gateway's silence rule with beats: an `alive` reply keeps a started stream going and never reaches a caller.

These drive a real Dispatcher (on the session's Redis) through its reply routing, with replies encoded as readers
encode them, so that the timing can be set exactly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from liftoff.core import wire
from liftoff.core.errors import GatewayTimeout
from liftoff.core.settings import Settings
from liftoff.core.wire import Reply
from liftoff.http.dispatch import Dispatcher, Ticket

SILENCE_MS = 100


def run(redis_url: str, scenario: Callable[[Dispatcher, Ticket], Awaitable[Any]], **settings: Any) -> Any:
    async def main() -> Any:
        d = Dispatcher(Settings(redis_url=redis_url, redis_namespace="beats", reader_message_timeout_ms=SILENCE_MS,
                                **{"request_timeout_s": 5.0, **settings}))
        ticket = Ticket(id=f"{d.worker_id}:0", group="primary", stream=d.keys.requests("primary"),
                        deadline=asyncio.get_running_loop().time() + d.settings.request_timeout_s, reserved=False)
        d.pending[ticket.id] = ticket
        try:
            return await scenario(d, ticket)
        finally:
            await asyncio.sleep(0.05)  # let a withdrawal's cancel notice go out
            await d.redis.aclose()
            await d._listen_redis.aclose()

    return asyncio.run(main())


def route(d: Dispatcher, ticket: Ticket, kind: str, attempt: int = 1, **fields: Any) -> None:
    """What the reply listener does with an entry a reader wrote."""
    d._route(wire.encode(Reply(id=ticket.id, kind=kind, attempt=attempt, reader_id="r-0", **fields)))


async def beat_for(d: Dispatcher, ticket: Ticket, seconds: float, every_s: float, attempt: int = 1) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        await asyncio.sleep(every_s)
        route(d, ticket, "alive", attempt)


def test_beats_keep_a_started_stream_past_its_silence_limit(redis_url: str) -> None:
    async def scenario(d: Dispatcher, ticket: Ticket) -> list[str]:
        route(d, ticket, "token", text="one")
        first = await d.next_reply(ticket)

        async def reader() -> None:
            await beat_for(d, ticket, 4 * SILENCE_MS / 1000, SILENCE_MS / 1000 / 3)
            route(d, ticket, "token", text=" two")
            route(d, ticket, "done")

        feeding = asyncio.create_task(reader())
        started = time.monotonic()
        second = await d.next_reply(ticket)
        assert time.monotonic() - started > 3 * SILENCE_MS / 1000
        third = await d.next_reply(ticket)
        await feeding
        return [first.kind, second.kind, third.kind]

    assert run(redis_url, scenario) == ["token", "token", "done"]


def test_without_beats_a_started_stream_is_timed_out(redis_url: str) -> None:
    async def scenario(d: Dispatcher, ticket: Ticket) -> float:
        route(d, ticket, "token", text="one")
        await d.next_reply(ticket)
        started = time.monotonic()
        with pytest.raises(GatewayTimeout, match="reader_message_timeout_ms"):
            await d.next_reply(ticket)
        return time.monotonic() - started

    assert SILENCE_MS / 1000 <= run(redis_url, scenario) < 3 * SILENCE_MS / 1000


def test_a_beat_from_another_delivery_ends_the_stream(redis_url: str) -> None:
    async def scenario(d: Dispatcher, ticket: Ticket) -> Reply:
        route(d, ticket, "token", text="one")
        await d.next_reply(ticket)
        route(d, ticket, "alive", attempt=2)  # another reader took the request over: its text would start again
        return await d.next_reply(ticket)

    reply = run(redis_url, scenario)
    assert reply.kind == "error" and reply.status == 503 and "rather than being replayed" in (reply.message or "")


def test_requests_that_do_not_stream_ignore_beats(redis_url: str) -> None:
    async def scenario(d: Dispatcher, ticket: Ticket) -> Reply:
        route(d, ticket, "alive")
        route(d, ticket, "alive")
        route(d, ticket, "done", texts=["one two"])
        return await d.outcome(ticket)

    assert run(redis_url, scenario).texts == ["one two"]


def test_beats_before_the_first_token_do_not_extend_the_request_deadline(redis_url: str) -> None:
    async def scenario(d: Dispatcher, ticket: Ticket) -> float:
        feeding = asyncio.create_task(beat_for(d, ticket, 1.0, 0.02))
        started = time.monotonic()
        with pytest.raises(GatewayTimeout, match="no answer"):
            await d.first_reply(ticket)
        feeding.cancel()
        return time.monotonic() - started

    assert run(redis_url, scenario, request_timeout_s=0.3) < 0.6
