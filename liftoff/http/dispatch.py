"""Dispatch from a gateway worker to readers over Redis Streams (through `liftoff.core.broker`), and routing of
their replies back.

Each gateway worker owns one reply stream per consumer group it sends to (`<ns>:replies:{<group>}:<worker>`, in the
group's hash slot, so that a reader's `FINISH` touches one slot on a Redis Cluster), each read by one background
listener that hands every reply to the waiting request by id: no per-request subscriptions, no polling. A group's
listener starts with the first request for it and stops once the group has been idle a while. Request XADDs issued
in the same event-loop turn go to Redis in one pipeline, so a burst of requests costs one round trip.

A listener that loses its connection (Redis restarted, or on a cluster the master of its group's slot died) ends
the requests waiting on that group at once with a 503: their entries, or their answers, may have been on the
server that went away, and a failover can lose writes the old master had acknowledged. Whatever a reader sends for
them later (it may serve an entry again after a failover) finds no request waiting and is dropped, so a client
gets at most one answer; requests of groups on the other masters go on.

Which consumer groups have a live reader is kept in a view refreshed in the background; a request for a group
that the view says is not live gets a fresh look at the registry before it is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import socket
from dataclasses import dataclass, field
from typing import Any

from liftoff.core import broker, wire
from liftoff.core.broker import TRANSIENT  # also imported from here by older callers
from liftoff.core.errors import GatewayTimeout, Unavailable, raise_for_reply
from liftoff.core.keys import Keys
from liftoff.core.process import compute_backoff, critical_task
from liftoff.core.redis_client import MAX_BLOCK_MS, close, connect
from liftoff.core.settings import Settings
from liftoff.core.wire import Reply
from liftoff.http.groups import GroupDirectory

log = logging.getLogger(__name__)

VIEW_REFRESH_S = 0.5
REPLY_STREAM_TTL_S = broker.REPLY_STREAM_TTL_S  # a dead worker's reply stream goes away on its own
FEED_IDLE_S = 60.0  # a group's reply listener stops after this long without a request of that group


@dataclass(eq=False, slots=True)
class Ticket:
    """A request in flight: its replies arrive on `queue` until a terminal one (done or error)."""

    id: str
    group: str
    stream: str
    deadline: float  # loop.time() by which the outcome must be known
    reserved: bool
    queue: asyncio.Queue[Reply] = field(default_factory=asyncio.Queue)
    entry_id: bytes | None = None
    tokens_seen: int = 0
    attempt: tuple[str | None, int] | None = None  # the reader and delivery whose tokens the client has seen


@dataclass(eq=False, slots=True)
class ReplyFeed:
    """One group's reply stream for this worker, and the listener reading it."""

    group: str
    stream: str
    requests: str  # the group's request stream (kept here: named once, not on every request)
    last_id: bytes = b"0-0"
    task: asyncio.Task[None] | None = None
    used_s: float = 0.0  # loop.time() of the last request sent to the group


class Dispatcher:
    def __init__(self, settings: Settings) -> None:
        assert settings.redis_url, "the supervisor resolves redis_url before gateway workers start"
        self.settings = settings
        self.keys = Keys(settings.redis_namespace)
        self.worker_id = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.redis = connect(settings.redis_url)
        self._listen_redis = connect(settings.redis_url)  # blocking reads: one connection per group listened to
        self.groups = GroupDirectory(self.redis, self.keys, settings)
        self.pending: dict[str, Ticket] = {}
        self._ids = itertools.count()
        # Requests waiting for the next XADD pipeline: their tickets, and (request stream, entry) of each in order.
        self._outbox: list[Ticket] = []
        self._outbox_entries: list[tuple[str, dict[bytes, bytes]]] = []
        self._flush_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.feeds: dict[str, ReplyFeed] = {}

    async def start(self) -> None:
        try:
            await self.refresh_view()
        except TRANSIENT as exc:
            log.warning("Redis not reachable at start (%s); will keep trying", exc)
        self._tasks = [critical_task(self._maintain(), "gateway directory refresh and reply trimming")]

    async def stop(self) -> None:
        tasks = self._tasks + [feed.task for feed in self.feeds.values() if feed.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._fail_all(Unavailable("the gateway is shutting down"))
        await close(self.redis)
        await close(self._listen_redis)

    # --- admission and submission ---------------------------------------------------------------------------------
    async def submit(
        self,
        group: str,
        texts: list[str],
        params: dict[str, Any] | None = None,
        stream: bool = False,
        batched: bool = False,
        **work: Any,
    ) -> Ticket:
        """Queue a request; `params` are GenerationParams fields, validated (see GenerateRequest.params); `work`
        holds the other WorkItem fields a kind needs (kind, pairs, args)."""
        try:
            reserved = await self.groups.admit(group)
        except TRANSIENT as exc:
            raise Unavailable(f"the request queue (Redis) is unreachable: {exc}") from None
        loop = asyncio.get_running_loop()
        timeout_s = self.settings.request_timeout_s
        feed = self.feeds.get(group)
        if feed is None or feed.task is None:
            feed = self._feed(group)
        feed.used_s = now_s = loop.time()
        ticket = Ticket(
            id=f"{self.worker_id}:{next(self._ids)}",
            group=group,
            stream=feed.requests,
            deadline=now_s + timeout_s,
            reserved=reserved,
        )
        now = wire.now_ms()
        entry = wire.encode_work(
            id=ticket.id,
            reply_to=feed.stream,
            stream=stream,
            texts=texts,
            batched=batched,
            params=params or {},
            enqueued_ms=now,
            deadline_ms=now + int(timeout_s * 1000),
            **work,
        )
        self.pending[ticket.id] = ticket
        self._outbox.append(ticket)
        self._outbox_entries.append((ticket.stream, entry))
        if self._flush_task is None:
            self._flush_task = loop.create_task(self._flush())
        return ticket

    async def next_reply(self, ticket: Ticket) -> Reply:
        """The next token or terminal reply for `ticket`, or a timeout error once its deadline passes.

        Once a stream has started, its reader may go without a sign of life for at most reader_message_timeout_ms:
        a token or an `alive` beat (which a busy reader sends while its engine makes progress) restarts the clock;
        past it the reader is taken as stuck for this request, which ends with an error (and is withdrawn from it).
        Beats are consumed here, never returned; before the first token, and for requests that don't stream, they
        are simply dropped (the request deadline bounds those).
        """
        while True:
            stall_s = self.settings.reader_message_timeout_ms / 1000 if ticket.tokens_seen else None
            deadline = ticket.deadline if stall_s is None else asyncio.get_running_loop().time() + stall_s
            try:
                async with asyncio.timeout_at(deadline):
                    reply = await ticket.queue.get()
            except TimeoutError:
                if stall_s is None:
                    raise self._timeout_error(ticket) from None
                self._withdraw(ticket)
                raise GatewayTimeout(
                    f"the reader went silent for over {self.settings.reader_message_timeout_ms} ms in the middle of "
                    f"the stream (reader_message_timeout_ms), after {ticket.tokens_seen} tokens"
                ) from None
            delivery = (reply.reader_id, reply.attempt)
            if ticket.tokens_seen and reply.reader_id is not None and delivery != ticket.attempt:
                # Its reader died mid-stream and another took the request over: replaying would duplicate text.
                # (An error decided here, by the gateway, has no reader and says what happened itself.)
                self._withdraw(ticket)
                message = (f"the reader serving this stream stopped after {ticket.tokens_seen} tokens; the stream "
                           "ends here rather than being replayed")
                return Reply(id=ticket.id, kind="error", status=503, message=message)
            kind = reply.kind
            if kind == "token":
                # A stream is bounded by its silences, not its length: each token restarts the clock.
                ticket.tokens_seen += 1
                ticket.attempt = delivery
                ticket.deadline = asyncio.get_running_loop().time() + self.settings.request_timeout_s
                return reply
            if kind != "alive":
                return reply
            if ticket.tokens_seen:  # the reader is working on it: the next wait starts a fresh silence clock
                ticket.deadline = asyncio.get_running_loop().time() + self.settings.request_timeout_s

    async def outcome(self, ticket: Ticket) -> Reply:
        """The terminal reply of a request that does not stream (raised as an ApiError when it is an error)."""
        finished = False
        try:
            reply = await self.next_reply(ticket)
            while reply.kind == "token":
                reply = await self.next_reply(ticket)
            finished = True
        finally:
            self.release(ticket, finished)
        raise_for_reply(reply)
        return reply

    async def first_reply(self, ticket: Ticket) -> Reply:
        """The first reply of a stream, which decides its status line: an error before any token is raised as a
        plain HTTP error (and the ticket released) instead of being sent after a 200."""
        try:
            first = await self.next_reply(ticket)
        except BaseException:
            self.release(ticket, finished=False)
            raise
        if first.kind == "error":
            self.release(ticket, finished=True)
            raise_for_reply(first)
        return first

    def _withdraw(self, ticket: Ticket) -> None:
        """Nobody waits for `ticket` any more: delete its entry if no reader took it yet, and tell the reader that
        did, so that its generation leaves the batch."""
        self.pending.pop(ticket.id, None)
        asyncio.get_running_loop().create_task(self._forget(ticket))

    def release(self, ticket: Ticket, finished: bool) -> None:
        """Forget `ticket`; an unfinished one (timed out, client gone) is withdrawn so that no reader wastes work."""
        if finished:
            self.pending.pop(ticket.id, None)
        else:
            self._withdraw(ticket)

    def _timeout_error(self, ticket: Ticket) -> Unavailable | GatewayTimeout:
        limit = self.settings.request_timeout_s
        if ticket.reserved and ticket.group not in self.groups.view.live:
            return Unavailable(f"no reader of consumer group {ticket.group!r} became live within {limit:g}s")
        return GatewayTimeout(f"no answer from consumer group {ticket.group!r} within {limit:g}s")

    async def _forget(self, ticket: Ticket) -> None:
        with contextlib.suppress(*TRANSIENT):  # else the reader drops it anyway once its deadline passes
            await broker.withdraw(self.redis, self.keys, ticket.group, ticket.entry_id, ticket.id)

    async def _flush(self) -> None:
        try:
            while self._outbox:
                batch, entries = self._outbox, self._outbox_entries
                self._outbox, self._outbox_entries = [], []
                try:
                    ids = await broker.submit(self.redis, entries)
                except Exception as exc:  # noqa: BLE001 — out of reach, or refused (OOM): these requests end now
                    for ticket in batch:
                        self._deliver_error(ticket, Unavailable(f"could not queue the request (Redis): {exc}"))
                    continue
                for ticket, entry_id in zip(batch, ids, strict=True):
                    if isinstance(entry_id, Exception):  # on a cluster: its group's master is out of reach
                        self._deliver_error(ticket, Unavailable(f"could not queue the request (Redis): {entry_id}"))
                    else:
                        ticket.entry_id = entry_id
        finally:
            self._flush_task = None

    # --- replies --------------------------------------------------------------------------------------------------
    def _feed(self, group: str) -> ReplyFeed:
        """The reply stream of `group` for this worker, its listener running."""
        feed = self.feeds.get(group)
        if feed is None:
            feed = self.feeds[group] = ReplyFeed(group, self.keys.replies(group, self.worker_id),
                                                 self.keys.requests(group))
        if feed.task is None:
            feed.task = critical_task(self._listen(feed), f"gateway reply listener of group {group}")
        return feed

    async def _listen(self, feed: ReplyFeed) -> None:
        attempt = 0
        while True:
            try:
                entries = await broker.read_replies(self._listen_redis, feed.stream, feed.last_id,
                                                    count=1000, block_ms=MAX_BLOCK_MS)
                attempt = 0
            except TRANSIENT as exc:
                self._fail_group(feed.group, Unavailable(f"lost the connection to the request queue (Redis): {exc}"))
                # The server answering next may be a promoted replica that never had the last replies read here:
                # read the stream from its start again (what is left of it is for requests no longer waiting).
                feed.last_id = b"0-0"
                delay = compute_backoff(attempt, base_s=0.1, cap_s=1.0)
                attempt += 1
                await asyncio.sleep(delay)
                continue
            for entry_id, fields in entries:
                feed.last_id = entry_id
                self._route(fields)

    def _route(self, fields: dict[bytes, bytes]) -> None:
        try:
            reply = wire.decode_reply(fields)
        except ValueError as exc:
            log.error("undecodable reply for gateway worker %s: %s", self.worker_id, exc)
            return
        ticket = self.pending.get(reply.id)
        if ticket is not None:  # else the client is gone (timed out or disconnected)
            ticket.queue.put_nowait(reply)

    def _deliver_error(self, ticket: Ticket, err: Unavailable | GatewayTimeout) -> None:
        """End `ticket` with an error decided here, not by a reader; its entry, if queued, is withdrawn."""
        ticket.queue.put_nowait(Reply(id=ticket.id, kind="error", status=err.status, message=err.message))
        self._withdraw(ticket)

    def _fail_all(self, err: Unavailable) -> None:
        for ticket in list(self.pending.values()):
            self._deliver_error(ticket, err)

    def _fail_group(self, group: str, err: Unavailable) -> None:
        for ticket in list(self.pending.values()):
            if ticket.group == group:
                self._deliver_error(ticket, err)

    # --- background maintenance -----------------------------------------------------------------------------------
    async def refresh_view(self) -> None:
        await self.groups.refresh()
        self._fail_orphans()

    def _fail_orphans(self) -> None:
        """Requests waiting on a group that lost its last live reader end now with 503, not at their timeout.

        Reserved groups are exempt: their requests are meant to wait for a reader to come back.
        """
        for ticket in list(self.pending.values()):
            if ticket.group not in self.groups.view.live and ticket.group not in self.groups.reserved:
                self.pending.pop(ticket.id, None)
                message = f"consumer group {ticket.group!r} has no live reader any more (its last reader stopped)"
                self._deliver_error(ticket, Unavailable(message))

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(VIEW_REFRESH_S)
            self._stop_idle_feeds()
            try:
                await self.refresh_view()
                # what the listeners have read is done
                read = {feed.stream: feed.last_id for feed in self.feeds.values()}
                await broker.trim_replies(self.redis, read, REPLY_STREAM_TTL_S)
            except TRANSIENT as exc:
                log.debug("maintenance skipped: %s", exc)

    def _stop_idle_feeds(self) -> None:
        """Stop listening to groups nothing was sent to for FEED_IDLE_S and nothing waits on; their reply streams
        expire on their own."""
        now = asyncio.get_running_loop().time()
        waiting = {ticket.group for ticket in self.pending.values()}
        for group, feed in list(self.feeds.items()):
            if group not in waiting and now - feed.used_s > FEED_IDLE_S:
                if feed.task is not None:
                    feed.task.cancel()
                del self.feeds[group]
