"""Which consumer groups a gateway worker may dispatch to, and how deep their queues are.

The directory is refreshed in the background (registry, served groups and each group's stream length, in two
round trips); a request for a group the directory says is not live gets a fresh look before it is refused, so a
reader that just came up is never turned away by a stale view.

Queue depth is the request stream's length: readers delete entries as they acknowledge them, so the length is
exactly what is queued or in progress. Between refreshes the worker adds what it has sent itself, which keeps the
bound tight under a burst.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from liftoff.core import registry
from liftoff.core.http.errors import NotFound, TooManyRequests, Unavailable
from liftoff.core.keys import Keys
from liftoff.core.settings import Settings

RETRY_AFTER_S = 1


@dataclass(slots=True)
class GroupView:
    live: frozenset[str] = frozenset()
    known: frozenset[str] = frozenset()
    backlog: dict[str, int] = field(default_factory=dict)  # group → entries queued or in progress


class GroupDirectory:
    def __init__(self, redis: Redis, keys: Keys, settings: Settings) -> None:
        self.redis = redis
        self.keys = keys
        self.check_interval_s = settings.heartbeat_check_interval
        self.max_queue = settings.max_queue_length
        self.reserved = frozenset(settings.reserved_groups())
        self.view = GroupView(known=self.reserved)
        self._refreshing: asyncio.Future[None] | None = None

    async def admit(self, group: str) -> bool:
        """Raise unless `group` can take a request now; True when it will wait for a reserved group's reader."""
        if group not in self.view.live:
            await self.refresh()
        if group not in self.view.live and group not in self.reserved:
            if group in self.view.known:
                raise Unavailable(f"consumer group {group!r} has no live reader; try again once a reader is live")
            known = sorted(self.view.known)
            raise NotFound(f"unknown consumer group {group!r}; known groups: {known}", {"known_groups": known})
        self._check_backlog(group)
        return group not in self.view.live

    def _check_backlog(self, group: str) -> None:
        depth = self.view.backlog.get(group, 0)
        if self.max_queue and depth >= self.max_queue:
            raise TooManyRequests(
                f"consumer group {group!r} has {depth} requests queued, the limit (max_queue_length); retry later",
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        self.view.backlog[group] = depth + 1

    async def refresh(self) -> None:
        """Re-read the registry and queue depths; concurrent callers share one read."""
        if self._refreshing is not None:
            await asyncio.shield(self._refreshing)
            return
        self._refreshing = asyncio.get_running_loop().create_future()
        try:
            self.view = await self._read()
            self._refreshing.set_result(None)
        except BaseException as exc:
            self._refreshing.set_exception(exc)
            self._refreshing.exception()  # retrieved here: waiting callers get it through shield
            raise
        finally:
            self._refreshing = None

    async def _read(self) -> GroupView:
        records = await registry.read_registry(self.redis, self.keys, self.check_interval_s)
        served = await self.redis.smembers(self.keys.groups)
        live = {g for r in records if r.status == "live" for g in r.info.consumer_groups}
        live |= {Keys.direct_group(r.reader_id) for r in records if r.status == "live"}
        known = {g.decode() for g in served} | {g for r in records for g in r.info.consumer_groups} | self.reserved
        known |= {Keys.direct_group(r.reader_id) for r in records}
        groups = sorted(known)
        pipe = self.redis.pipeline(transaction=False)
        for group in groups:
            pipe.xlen(self.keys.requests(group))
        depths = await pipe.execute()
        return GroupView(frozenset(live), frozenset(known), dict(zip(groups, depths, strict=True)))


@dataclass(frozen=True, slots=True)
class Backlog:
    group: str
    queued: int  # in the stream, not yet delivered to any reader
    in_progress: int  # delivered, not yet acknowledged
    consumers: int  # consumer names the group has (live or not yet tidied)

    @property
    def total(self) -> int:
        return self.queued + self.in_progress


async def read_backlogs(redis: Redis, keys: Keys, groups: list[str]) -> dict[str, Backlog]:
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


def _group_info(infos: Any, group: str) -> dict[Any, Any] | None:
    if not isinstance(infos, list):  # an error (no such key) stands for a stream nobody has written yet
        return None
    for info in infos:
        name = info.get("name")
        if (name.decode() if isinstance(name, bytes) else name) == group:
            return info
    return None
