"""Reading work for one consumer group: new entries, and entries reclaimed from dead readers.

The consumer is the reader's loop over the broker (`liftoff.core.broker`, which holds every stream command): it
reads new entries and reclaims dead readers' ones; acknowledgement happens in the reply sink, after the terminal
reply. Jobs go to the reader's `Executor`, which owns capacity: the consumer asks for at most as many entries as
there are free slots, so a busy reader leaves work in the stream for its peers.

After losing its connection the consumer looks at what the group still has pending for it: a failover (a Redis
Cluster master killed, its replica promoted) can lose the answers, acknowledgements and deliveries the old master
had not passed on yet. Entries it owns but no longer works on are taken back and served again; an entry delivered
anew while its request is still running here is left to the running job, whose `FINISH` acknowledges it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from redis.asyncio import Redis

from liftoff.core import broker, wire
from liftoff.core.broker import TRANSIENT, Entry
from liftoff.core.keys import Keys
from liftoff.core.process import compute_backoff
from liftoff.core.redis_client import same_slot
from liftoff.core.wire import WIRE_VERSION
from liftoff.readers.jobs import Job
from liftoff.readers.replies import ReplySink

log = logging.getLogger(__name__)

READ_BLOCK_MS = 500  # longest XREADGROUP block, which bounds how long a stop request waits for the read loop
RECLAIM_EVERY_S = 1.0
RETRY_CAP_S = 1.0  # longest wait between reads while Redis is out of reach: a promoted replica is used at once


class Executor(Protocol):
    def free_slots(self) -> int: ...

    async def wait_for_slot(self) -> None: ...

    def start(self, jobs: list[Job]) -> None: ...

    def serving(self, request_id: str) -> bool: ...

    def entries_in_flight(self, stream: str) -> set[bytes]: ...


class GroupConsumer:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        group: str,
        consumer: str,
        executor: Executor,
        sink: ReplySink,
        stopping: Callable[[], bool],
        max_deliveries: int,
        check_interval_s: int,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.group = group
        self.stream = keys.requests(group)
        self.consumer = consumer
        self.executor = executor
        self.sink = sink
        self.stopping = stopping
        self.max_deliveries = max_deliveries
        self.check_interval_s = check_interval_s
        self.reclaimed = 0
        self.taken_back = 0
        self._next_reclaim = 0.0
        self._recheck_own = False  # set when the connection was lost: look for own entries left without an answer

    async def ensure_group(self) -> None:
        await broker.ensure_group(self.redis, self.stream, self.group)

    async def run(self) -> None:
        attempt = 0
        while not self.stopping():
            free = self.executor.free_slots()
            if free <= 0:
                await self.executor.wait_for_slot()
                continue
            try:
                if self._recheck_own and self.sink.settled:
                    self._recheck_own = False
                    free -= await self._take_back(free)
                    if free <= 0:
                        continue
                if time.monotonic() >= self._next_reclaim:
                    self._next_reclaim = time.monotonic() + RECLAIM_EVERY_S
                    free -= await self._reclaim(free)
                    if free <= 0:
                        continue
                entries = await broker.read_new(self.redis, self.stream, self.group, self.consumer, free,
                                                READ_BLOCK_MS)
                attempt = 0
            except TRANSIENT as exc:
                self._recheck_own = True
                delay = compute_backoff(attempt, base_s=0.2, cap_s=RETRY_CAP_S)
                log.warning("read from %s failed (%s); retrying in %.1fs", self.stream, exc, delay)
                attempt += 1
                await asyncio.sleep(delay)
                continue
            except Exception as exc:
                if not broker.group_gone(exc):
                    raise
                log.warning("consumer group %s is gone (Redis restarted?); recreating it", self.group)
                await self.ensure_group()
                continue
            jobs = self._decode(entries)
            if jobs:
                self.executor.start(jobs)

    async def _reclaim(self, free: int) -> int:
        """Take over work of dead readers of this group; returns how many jobs were started."""
        live = await broker.live_consumers(self.redis, self.keys, self.check_interval_s)
        live.add(self.consumer)
        claimed = await broker.sweep(
            self.redis, self.keys, self.group, self.consumer, self.max_deliveries, free, live
        )
        jobs = []
        for entry in claimed:
            for job in self._decode([(entry.entry_id, entry.fields)]):
                job.deliveries = entry.deliveries
                jobs.append(job)
        if jobs:
            self.reclaimed += len(jobs)
            log.warning("reclaimed %d request(s) of group %s from a reader that stopped", len(jobs), self.group)
            self.executor.start(jobs)
        return len(jobs)

    async def _take_back(self, free: int) -> int:
        """Serve again the entries pending for this consumer that it is not working on; how many jobs started."""
        running = self.executor.entries_in_flight(self.stream)
        page = len(running) + free
        pending = await broker.own_pending(self.redis, self.stream, self.group, self.consumer, page)
        left = [(entry_id, n) for entry_id, n in pending.items() if entry_id not in running]
        if not left:
            return 0
        orphans = dict(left[:free])
        self._recheck_own = len(left) > free or len(pending) == page  # more may wait: the rest once slots free up
        jobs = []
        for entry in await broker.take_back(self.redis, self.stream, self.group, self.consumer, orphans):
            for job in self._decode([(entry.entry_id, entry.fields)]):
                job.deliveries = entry.deliveries
                jobs.append(job)
        if jobs:
            self.taken_back += len(jobs)
            log.warning("serving %d request(s) of group %s again: their answers were lost with the connection",
                        len(jobs), self.group)
            self.executor.start(jobs)
        return len(jobs)

    def _decode(self, entries: list[Entry]) -> list[Job]:
        jobs = []
        for entry_id, fields in entries:
            try:
                item = wire.decode_work(fields)
                if not 1 <= item.v <= WIRE_VERSION:
                    raise ValueError(f"wire version {item.v} is not one this reader knows (1 to {WIRE_VERSION})")
                if not same_slot(self.redis, self.stream, item.reply_to):
                    raise ValueError(f"its reply stream {item.reply_to!r} is not in the hash slot of {self.stream} "
                                     "(on a Redis Cluster the answer and the acknowledgement are one script)")
            except ValueError as exc:
                request_id, reply_to = wire.peek_ids(fields)
                log.error("undecodable entry %s in %s: %s", entry_id, self.stream, exc)
                if request_id and reply_to:
                    self.sink.error_raw(reply_to, request_id, 500, f"reader could not decode the request: {exc}")
                self.sink.ack_raw(self.stream, self.group, entry_id)
                continue
            if self.executor.serving(item.id):
                continue  # delivered again (a failover lost the delivery) while its first delivery still runs here
            jobs.append(Job(group=self.group, stream=self.stream, entry_id=entry_id, item=item))
        return jobs
