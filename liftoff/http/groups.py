"""Which consumer groups a gateway worker may dispatch to, and how deep their queues are.

The directory is refreshed in the background (registry, served groups and each group's stream length, read
through `liftoff.core.broker`); a request for a group the directory says is not live gets a fresh look before it is
refused, so a reader that just came up is never turned away by a stale view.

Queue depth is the request stream's length: readers delete entries as they acknowledge them, so the length is
exactly what is queued or in progress. Between refreshes the worker adds what it has sent itself, which keeps the
bound tight under a burst.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from redis.asyncio import Redis

from liftoff.core import broker
from liftoff.core.errors import NotFound, TooManyRequests, Unavailable
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
        directory = await broker.read_directory(self.redis, self.keys, self.check_interval_s, self.reserved)
        known = directory.known(direct=True)
        groups = sorted(known)
        depths = await broker.stream_lengths(self.redis, [self.keys.requests(group) for group in groups])
        return GroupView(directory.live(direct=True), known, dict(zip(groups, depths, strict=True)))
