"""Signs of life for the streams a reader is working on: alive is not the same as talking.

The gateway ends a started stream whose reader has sent nothing for `reader_message_timeout_ms`. A reader that is
busy (prefilling another request's long prompt, or slowed by CPU contention) would be taken for a stuck one, so
every tick (a quarter of that timeout, at least `MIN_TICK_S`) the reader queues an `alive` reply for each in-flight
stream that has had a reply already but none in the last tick. Beats go through the reply sink, in the same
pipelined flush as tokens, and carry the job's delivery number, so the gateway applies to them the same take-over
rule as to tokens.

Beats go out only while the engine is making progress: its `last_progress()` is None (no signal of its own: the
event loop running is the sign) or no older than the timeout. So a reader that is stopped (SIGSTOP, a partition)
sends nothing at all, and one whose model step hangs stops beating once its progress goes stale; either way the
gateway's silence rule ends its streams. A stream's silence as the gateway sees it is at most about two ticks (half
the timeout) while the reader beats; a hung step is caught within about twice the timeout of its last progress.

A stream with no reply yet gets no beats: the gateway's silence clock starts at the first token (before it, the
request timeout applies), and the reader holds no clock to keep alive for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from liftoff.readers.engines.base import Engine
from liftoff.readers.jobs import Job
from liftoff.readers.replies import ReplySink

log = logging.getLogger(__name__)

MIN_TICK_S = 0.02  # a tighter timeout than 80 ms is not beaten faster than this


def tick_s(reader_message_timeout_ms: int) -> float:
    """How often the reader looks for streams that need a beat."""
    return max(MIN_TICK_S, reader_message_timeout_ms / 4000)


def beat(jobs: Iterable[Job], sink: ReplySink, engine: Engine, now: float, timeout_s: float, tick: float) -> int:
    """Queue an `alive` reply for each running stream among `jobs` whose last reply is over `tick` old, if the
    engine's progress is fresh (within `timeout_s` of `now`); the number of beats queued."""
    if sink.stalled:  # Redis is away: beats would only pile up behind the replies waiting to be re-sent
        return 0
    progress = engine.last_progress()
    if progress is not None and now - progress > timeout_s:
        return 0  # stuck, not busy: say nothing, and let the gateway's silence rule end these streams
    sent = 0
    for job in jobs:
        last = job.last_reply_s
        if last is not None and now - last > tick and job.item.stream and not job.finished and not job.cancelled:
            sink.alive(job)
            sent += 1
    return sent


async def keep_alive(jobs: dict[str, Job], sink: ReplySink, engine: Engine, reader_message_timeout_ms: int) -> None:
    """Beat for the reader's in-flight `jobs` (request id → job) every tick, until cancelled."""
    timeout_s = reader_message_timeout_ms / 1000
    tick = tick_s(reader_message_timeout_ms)
    while True:
        await asyncio.sleep(tick)
        try:
            beat(jobs.values(), sink, engine, time.monotonic(), timeout_s, tick)
        except Exception:  # a bug here must not stop the beats for good: that would time out every busy stream
            log.exception("liveness beat failed; trying again next tick")
