"""How much work waits in the streams: lengths, each group's queued and in-progress entries, its consumers; and how
many jobs the groups have finished.

Readers delete entries as they acknowledge them, so a request stream's length (XLEN) is exactly what is queued or
in progress; the group's pending entries list (XINFO GROUPS `pending`) is the part delivered and not yet
acknowledged. A stream nobody has written yet counts as empty. The internal port, the health report, the metrics
and the deployment autoscaler all read their numbers here, so that they never disagree on one.

Job counters are kept per group (`<ns>:stats:{<group>}:<counter>`, in the group's slot, where `FINISH` counts each
outcome); `job_counts` adds up the groups asked for and the totals of groups gone (`<ns>:stats:<counter>`, into
which `tidy` folds a group's counters once the group no longer exists).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from liftoff.core.keys import Keys
from liftoff.core.redis_client import RedisClient

JOB_COUNTERS = ("completed", "failed", "cancelled", "dead_lettered")


@dataclass(frozen=True, slots=True)
class Backlog:
    group: str
    queued: int  # in the stream, not yet delivered to any reader
    in_progress: int  # delivered, not yet acknowledged
    consumers: int  # consumer names the group has (live or not yet tidied)

    @property
    def total(self) -> int:
        return self.queued + self.in_progress


@dataclass(frozen=True, slots=True)
class StreamStats:
    name: str
    messages: int
    bytes: int
    consumers: int  # over every consumer group of the stream


@dataclass(frozen=True, slots=True)
class ConsumerStats:
    name: str
    pending: int  # delivered to this consumer, not yet acknowledged
    idle_ms: int


async def stream_lengths(redis: RedisClient, streams: list[str]) -> list[int]:
    """XLEN of each stream, in one round trip (0 for a stream that does not exist)."""
    pipe = redis.pipeline(transaction=False)
    for stream in streams:
        pipe.xlen(stream)
    return list(await pipe.execute())


async def read_backlogs(redis: RedisClient, keys: Keys, groups: list[str]) -> dict[str, Backlog]:
    """One round trip: XLEN and XINFO GROUPS of each group's request stream (a missing stream is an empty one)."""
    if not groups:
        return {}
    pipe = redis.pipeline(transaction=False)
    for group in groups:
        pipe.xlen(keys.requests(group))
        pipe.xinfo_groups(keys.requests(group))
    replies = await pipe.execute(raise_on_error=False)
    out = {}
    for index, group in enumerate(groups):
        length, infos = replies[2 * index], replies[2 * index + 1]
        length = length if isinstance(length, int) else 0
        info = _group_info(infos, group)
        pending = int(info.get("pending", 0)) if info else 0
        consumers = int(info.get("consumers", 0)) if info else 0
        out[group] = Backlog(group, max(0, length - pending), pending, consumers)
    return out


async def stream_stats(redis: RedisClient, streams: list[str]) -> list[StreamStats]:
    """Length, memory and consumer count of each stream that exists, in one round trip."""
    pipe = redis.pipeline(transaction=False)
    for name in streams:
        pipe.xlen(name)
        pipe.memory_usage(name)
        pipe.xinfo_groups(name)
    replies = await pipe.execute(raise_on_error=False)
    out = []
    for index, name in enumerate(streams):
        length, size, infos = replies[3 * index: 3 * index + 3]
        if size is None or isinstance(size, Exception):
            continue  # no such stream yet
        consumers = sum(int(i.get("consumers", 0)) for i in infos) if isinstance(infos, list) else 0
        out.append(StreamStats(name, int(length), int(size), consumers))
    return out


async def job_counts(redis: RedisClient, keys: Keys, groups: list[str]) -> dict[str, int]:
    """Each of `JOB_COUNTERS` summed over `groups` and the groups gone, in one round trip (one per master)."""
    pipe = redis.pipeline(transaction=False)
    for counter in JOB_COUNTERS:
        pipe.get(keys.total(counter))
        for group in groups:
            pipe.get(keys.stat(group, counter))
    values = iter(await pipe.execute())
    return {counter: sum(int(next(values) or 0) for _ in range(1 + len(groups))) for counter in JOB_COUNTERS}


async def redelivered(redis: RedisClient, keys: Keys, group: str, scan: int) -> int:
    """Of the group's first `scan` pending entries, how many have been delivered more than once."""
    pending = await redis.xpending_range(keys.requests(group), group, min="-", max="+", count=scan)
    return sum(p["times_delivered"] > 1 for p in pending)


async def group_consumers(redis: RedisClient, keys: Keys, group: str) -> list[ConsumerStats]:
    members = await redis.xinfo_consumers(keys.requests(group), group)
    return [ConsumerStats(_text(m["name"]), int(m["pending"]), int(m["idle"])) for m in members]


def _group_info(infos: Any, group: str) -> dict[Any, Any] | None:
    if not isinstance(infos, list):  # an error (no such key) stands for a stream nobody has written yet
        return None
    for info in infos:
        name = info.get("name")
        if (name.decode() if isinstance(name, bytes) else name) == group:
            return info
    return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
