"""A reader beats for its running streams while its engine makes progress, and falls silent when it does not.

The beats go through a real ReplySink into the session's Redis and are read back from the reply stream. The real
engines can't show a step that hangs on demand (the echo engine reports no progress of its own; a model's step
can't be made to hang), so `SteppedEngine` stands for one: its progress is the time of the last step it took, and
it takes steps only when the test says so.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio

from liftoff.core import wire
from liftoff.core.keys import Keys
from liftoff.core.reader_config import ReaderConfig
from liftoff.core.wire import WorkItem
from liftoff.readers.engines.base import Engine
from liftoff.readers.engines.echo import EchoEngine
from liftoff.readers.jobs import Job
from liftoff.readers.liveness import beat, keep_alive, tick_s
from liftoff.readers.replies import ReplySink

SILENCE_MS = 200
_ids = itertools.count()


class SteppedEngine(Engine):
    """An engine whose every step is one sign of progress; between steps, it is as stuck as a hung model step."""

    def __init__(self) -> None:
        super().__init__(ReaderConfig())
        self.progress: float | None = None

    def step(self) -> None:
        self.progress = time.monotonic()

    def last_progress(self) -> float | None:
        return self.progress

    async def run(self, jobs: list[Job], sink: ReplySink) -> None:
        raise NotImplementedError("driven by the tests step by step")


def job(reply_to: str, stream: bool = True) -> Job:
    now = wire.now_ms()
    item = WorkItem(id=f"t:{next(_ids)}", reply_to=reply_to, stream=stream, texts=["one two"], enqueued_ms=now,
                    deadline_ms=now + 60_000)
    return Job(group="primary", stream="liveness:requests:primary", entry_id=b"1-0", item=item)


def run(redis_url: str, scenario: Callable[[ReplySink, redis.asyncio.Redis, str], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        client = redis.asyncio.Redis.from_url(redis_url)
        keys = Keys("liveness")
        reply_to = keys.replies("primary", f"w{next(_ids)}")
        sink = ReplySink(client, "r-0", keys, "r-0-1")
        try:
            return await scenario(sink, client, reply_to)
        finally:
            await sink.drained()
            await client.aclose()

    return asyncio.run(main())


async def replies(client: redis.asyncio.Redis, reply_to: str) -> list[tuple[int, wire.Reply]]:
    """(Redis time in ms, reply) of every entry on the reply stream."""
    return [(int(entry_id.split(b"-")[0]), wire.decode_reply(fields))
            for entry_id, fields in await client.xrange(reply_to)]


def test_only_running_streams_that_went_quiet_get_beats(redis_url: str) -> None:
    async def scenario(sink: ReplySink, client: redis.asyncio.Redis, reply_to: str) -> None:
        quiet, recent, unstarted, plain, finished, cancelled = (job(reply_to) for _ in range(6))
        plain.item.stream = False
        quiet.deliveries = 2  # reclaimed from a reader that died: its beats say so, as its tokens do
        for j in (quiet, recent, finished, cancelled, plain):
            sink.token(j, 0, "one")
        finished.finished, cancelled.cancelled = True, True
        tick = tick_s(SILENCE_MS)
        later = time.monotonic() + 2 * tick
        recent.last_reply_s = later - tick / 2  # it spoke within the last tick
        engine = EchoEngine(ReaderConfig())  # no progress signal of its own: it counts as progressing
        jobs = [quiet, recent, unstarted, plain, finished, cancelled]
        assert beat(jobs, sink, engine, later, SILENCE_MS / 1000, tick) == 1
        await sink.drained()
        beats = [r for _, r in await replies(client, reply_to) if r.kind == "alive"]
        assert [(r.id, r.attempt, r.reader_id) for r in beats] == [(quiet.item.id, 2, "r-0")]
        assert quiet.last_reply_s == pytest.approx(time.monotonic(), abs=0.5)  # a beat is a reply too

    run(redis_url, scenario)


def test_a_stale_engine_gets_no_beats(redis_url: str) -> None:
    async def scenario(sink: ReplySink, client: redis.asyncio.Redis, reply_to: str) -> tuple[int, int]:
        engine = SteppedEngine()
        quiet = job(reply_to)
        sink.token(quiet, 0, "one")
        engine.step()
        now = time.monotonic() + 1.0  # a second later, with no step since
        stale = beat([quiet], sink, engine, now, SILENCE_MS / 1000, tick_s(SILENCE_MS))
        engine.progress = now - SILENCE_MS / 2000  # half the limit ago: still progressing
        fresh = beat([quiet], sink, engine, now, SILENCE_MS / 1000, tick_s(SILENCE_MS))
        return stale, fresh

    assert run(redis_url, scenario) == (0, 1)


def gaps_and_span(entries: list[tuple[int, wire.Reply]]) -> tuple[int, int]:
    """The longest gap between consecutive replies and the time from the first to the last, in ms."""
    times = [t for t, _ in entries]
    return max((b - a for a, b in itertools.pairwise(times)), default=0), times[-1] - times[0]


def beating_after_one_token(sink: ReplySink, reply_to: str) -> tuple[SteppedEngine, asyncio.Task[None]]:
    """A stepped engine, and the beat task for one stream that has had its first token and nothing since."""
    engine = SteppedEngine()
    quiet = job(reply_to)
    beats = asyncio.create_task(keep_alive({quiet.item.id: quiet}, sink, engine, SILENCE_MS))
    sink.token(quiet, 0, "one")
    return engine, beats


def test_a_progressing_engine_keeps_a_quiet_stream_within_the_silence_limit(redis_url: str) -> None:
    async def scenario(sink: ReplySink, client: redis.asyncio.Redis, reply_to: str) -> list[tuple[int, Any]]:
        engine, beats = beating_after_one_token(sink, reply_to)
        end = time.monotonic() + 5 * SILENCE_MS / 1000
        while time.monotonic() < end:  # a long prefill: steps that make progress, no token
            engine.step()
            await asyncio.sleep(0.01)
        beats.cancel()
        await sink.drained()
        return await replies(client, reply_to)

    entries = run(redis_url, scenario)
    assert entries[0][1].kind == "token" and {r.kind for _, r in entries[1:]} == {"alive"}
    gap, span = gaps_and_span(entries)
    assert gap < SILENCE_MS and span > 4 * SILENCE_MS - 2 * tick_s(SILENCE_MS) * 1000, (gap, span)


def test_a_hung_step_stops_the_beats(redis_url: str) -> None:
    async def scenario(sink: ReplySink, client: redis.asyncio.Redis, reply_to: str) -> list[tuple[int, Any]]:
        engine, beats = beating_after_one_token(sink, reply_to)
        engine.step()  # the last step that completes; the next one hangs
        await asyncio.sleep(5 * SILENCE_MS / 1000)
        beats.cancel()
        await sink.drained()
        return await replies(client, reply_to)

    entries = run(redis_url, scenario)
    assert entries[0][1].kind == "token" and len(entries) > 1 and {r.kind for _, r in entries[1:]} == {"alive"}
    _, span = gaps_and_span(entries)
    # Beats while the last progress was within the limit, then silence: the gateway's clock runs out.
    assert span <= SILENCE_MS + 2 * tick_s(SILENCE_MS) * 1000, span
