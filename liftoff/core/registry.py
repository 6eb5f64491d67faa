"""The reader registry: who serves which consumer group, and whether they are loading, live or dead.

Readers write their `ReaderInfo` into the registry hash and refresh a heartbeat key whose TTL is the dead-after
window, so a reader that stops heartbeating disappears from liveness on its own (no clock comparison across
machines). Gateway workers, the management API and the supervisor all classify readers through `read_registry`.
A reader's keys go with it: deregistering (or being pruned when long dead) deletes its entry, its heartbeat, its
stop request and its direct request stream `<ns>:requests:{@<reader_id>}`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

from redis.asyncio import Redis

from liftoff.core.keys import Keys
from liftoff.core.redis_client import get_many
from liftoff.core.wire import ReaderInfo

Status = Literal["live", "loading", "dead"]
DEAD_AFTER_HEARTBEATS = 3  # a reader silent for this many heartbeat_check_intervals is dead
STARTING_GRACE_S = 120.0  # a reader its supervisor announced counts as loading this long before its first beat


def heartbeat_period_s(check_interval_s: int) -> float:
    """How often a reader heartbeats: twice per check interval, so one lost beat never looks like death."""
    return check_interval_s / 2 if check_interval_s > 0 else 1.0


def dead_after_ms(check_interval_s: int) -> int | None:
    """Heartbeat key TTL; None when heartbeat_check_interval is 0 (never declare a reader dead)."""
    return DEAD_AFTER_HEARTBEATS * check_interval_s * 1000 if check_interval_s > 0 else None


@dataclass(frozen=True, slots=True)
class ReaderRecord:
    reader_id: str
    info: ReaderInfo
    status: Status
    last_heartbeat_s: float | None

    def heartbeat_view(self) -> dict[str, int]:
        """The reference `LastHeartbeat`: epoch seconds of the last beat, and the seconds allowed between beats."""
        return {
            "heartbeat_timestamp": int(self.last_heartbeat_s or 0),
            "heartbeat_wait_interval": math.ceil(self.info.heartbeat_interval_s * DEAD_AFTER_HEARTBEATS),
        }


def classify(info: ReaderInfo, heartbeat: bytes | None, never_dead: bool) -> Status:
    if info.state == "failed":
        return "dead"
    if heartbeat is None and not never_dead:
        return "loading" if _announced(info) else "dead"
    return "loading" if info.state == "loading" else "live"


def _announced(info: ReaderInfo) -> bool:
    """Announced by its supervisor (see `announce_starting`) and not yet beating, within the grace period."""
    return info.state == "loading" and info.last_heartbeat_s is None and \
        time.time() - info.registered_s < STARTING_GRACE_S


async def announce_starting(redis: Redis, keys: Keys, info: ReaderInfo) -> None:
    """Registry entry for a reader process about to start: loading until it registers itself (which takes seconds of
    imports), so that /healthz does not report ready while a configured reader has not even appeared yet."""
    if await redis.exists(keys.heartbeat(info.reader_id)):
        return  # that id is beating elsewhere: its own entry stands (the new process will refuse to start)
    info.state, info.last_heartbeat_s = "loading", None
    await redis.hset(keys.readers, info.reader_id, info.model_dump_json())


async def read_registry(redis: Redis, keys: Keys, check_interval_s: int) -> list[ReaderRecord]:
    raw = await redis.hgetall(keys.readers)
    if not raw:
        return []
    ids = [k.decode() if isinstance(k, bytes) else k for k in raw]
    beats = await get_many(redis, [keys.heartbeat(i) for i in ids])
    records = []
    for reader_id, blob, beat in zip(ids, raw.values(), beats, strict=True):
        try:
            info = ReaderInfo.model_validate_json(blob)
        except ValueError:
            continue  # an entry written by an incompatible version; it ages out with its heartbeat
        last = float(beat) if beat is not None else info.last_heartbeat_s
        status = classify(info, beat, never_dead=check_interval_s <= 0)
        records.append(ReaderRecord(reader_id, info, status, last))
    return sorted(records, key=lambda r: r.reader_id)


async def write_heartbeat(redis: Redis, keys: Keys, reader_id: str, info: ReaderInfo, check_interval_s: int) -> None:
    """Refresh the heartbeat key and the registry entry (which re-registers the reader after a Redis restart)."""
    now = time.time()
    info.last_heartbeat_s = now
    pipe = redis.pipeline(transaction=False)
    pipe.set(keys.heartbeat(reader_id), repr(now), px=dead_after_ms(check_interval_s))
    pipe.hset(keys.readers, reader_id, info.model_dump_json())
    await pipe.execute()


async def mark_exited(redis: Redis, keys: Keys, reader_id: str, reason: str, pid: int | None = None) -> None:
    """Called by the supervisor when a reader process exits: it is dead now, not after its heartbeat expires.

    With `pid`, only an entry of that process (or one announced and not yet registered) is marked: a process that
    refused to start because its id is live elsewhere must not take the live reader's entry down with it."""
    blob = await redis.hget(keys.readers, reader_id)
    if blob is None:
        return
    info = ReaderInfo.model_validate_json(blob)
    if pid is not None and info.pids and pid not in info.pids:
        return
    info.state = "failed"
    info.error = f"{info.error} ({reason})" if info.error else reason  # keep the reader's own account first
    pipe = redis.pipeline(transaction=False)
    pipe.hset(keys.readers, reader_id, info.model_dump_json())
    pipe.delete(keys.heartbeat(reader_id))
    await pipe.execute()


async def deregister(redis: Redis, keys: Keys, reader_id: str) -> None:
    """Forget a reader and delete its keys. Work still queued for it alone goes with its direct stream: gateway
    workers end those requests with a 503 once the reader is no longer live."""
    await _forget(redis, keys, [reader_id])


async def _forget(redis: Redis, keys: Keys, reader_ids: list[str]) -> None:
    pipe = redis.pipeline(transaction=False)
    pipe.hdel(keys.readers, *reader_ids)
    for reader_id in reader_ids:
        pipe.delete(keys.heartbeat(reader_id), keys.stop(reader_id), keys.requests(Keys.direct_group(reader_id)))
    await pipe.execute()


async def prune_dead(redis: Redis, keys: Keys, check_interval_s: int, retention_s: float,
                     keep: Collection[str] = ()) -> list[str]:
    """Forget readers dead for longer than `retention_s` (and their keys), so a reader removed by hand stops failing
    /healthz; readers in `keep` (still configured) stay listed, and so keep their groups known."""
    now = time.time()
    stale = [
        r.reader_id
        for r in await read_registry(redis, keys, check_interval_s)
        if r.status == "dead" and r.reader_id not in keep
        and now - (r.last_heartbeat_s or r.info.registered_s) > retention_s
    ]
    if stale:
        await _forget(redis, keys, stale)
    return stale


STOP_TTL_S = 300  # an unanswered stop request expires


async def request_stop(redis: Redis, keys: Keys, reader_id: str) -> None:
    """Ask reader `reader_id` to drain and exit (supervised and hand-started readers alike). The request carries
    the time it was made, so a reader that starts later knows it is not for it."""
    await redis.set(keys.stop(reader_id), str(int(time.time() * 1000)), ex=STOP_TTL_S)


def stop_applies(value: bytes | str | None, started_ms: int) -> bool:
    """Whether a stop request read from Redis is for the reader process that started at `started_ms`: one made
    before it started was for an earlier reader of the same id. A request without a time (older managers) counts
    only once the reader is running, never at its registration."""
    if value is None:
        return False
    text = value.decode() if isinstance(value, bytes) else value
    return not text.isdigit() or int(text) >= started_ms
