"""Replies from a reader to gateway workers, coalesced into one round trip per event-loop turn.

Engines call `token`, `done` and `error` synchronously (the reader's liveness task, `alive`); the sink queues them
as the broker's reply operations (`liftoff.core.broker.consumer`: a plain reply for tokens and beats, a `Finish`
for terminal replies) and sends what has gathered together in one MULTI/EXEC (on a Redis Cluster, one per hash
slot, sent together). A `Finish` writes the terminal reply,
acknowledges and deletes the request entry and counts the outcome, but only while this reader's consumer still owns
the entry: a reader that was taken for dead and whose work was reclaimed by another (a long pause, a partition)
drops its late answer instead of answering twice. A reader killed mid-flush leaves the entry pending, to be
reclaimed. Under load one round trip carries a whole batch's replies; while Redis (or a cluster master) is out of
reach the replies it should get are kept and re-sent, ahead of newer ones, when it is back, while the replies for
the other masters go out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from redis.asyncio import Redis

from liftoff.core import broker, wire
from liftoff.core.broker import Ack, Finish, PostReply, ReplyOp
from liftoff.core.keys import Keys
from liftoff.core.process import compute_backoff, critical_task
from liftoff.core.wire import Reply
from liftoff.readers.jobs import Job

log = logging.getLogger(__name__)

RETRY_CAP_S = 1.0  # longest wait between flushes while Redis is out of reach


class ReplySink:
    def __init__(self, redis: Redis, reader_id: str, keys: Keys, consumer: str) -> None:
        self._redis = redis
        self._reader_id = reader_id
        self._keys = keys
        self._consumer = consumer
        self.dropped = 0  # terminal replies not written: another reader had taken the request over
        self._ops: list[ReplyOp] = []
        self._expiry = broker.ExpiryClock()  # when each reply stream's expiry was last pushed out
        self._flushing: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.terminal_sent = 0
        self.stalled = False  # a flush is waiting for Redis to come back (nothing queued now gets out before it)

    def token(self, job: Job, index: int, text: str, logprobs: list[dict[str, Any]] | None = None) -> None:
        self._reply(job, Reply(id=job.item.id, kind="token", index=index, text=text, logprobs=logprobs))

    def done(
        self,
        job: Job,
        texts: list[str] | None,
        metadata: list[dict[str, Any]] | None = None,
        result: Any = None,
        logprobs: list[list[dict[str, Any]]] | None = None,
    ) -> None:
        self._finish_job(job, Reply(id=job.item.id, kind="done", texts=texts, metadata=metadata, result=result,
                                    logprobs=logprobs))

    def error(self, job: Job, status: int, message: str) -> None:
        job.failed = True
        self._finish_job(job, Reply(id=job.item.id, kind="error", status=status, message=message))

    def alive(self, job: Job) -> None:
        """A sign of life for a stream that is being worked on but has nothing to send (see
        liftoff.readers.liveness)."""
        self._reply(job, Reply(id=job.item.id, kind="alive"))

    def error_raw(self, reply_to: str, request_id: str, status: int, message: str) -> None:
        """Answer an entry that could not be decoded into a Job (but whose sender is known)."""
        reply = Reply(id=request_id, kind="error", status=status, message=message, reader_id=self._reader_id)
        self._queue(PostReply(reply_to, wire.encode(reply)))

    def ack_raw(self, stream: str, group: str, entry_id: bytes) -> None:
        self._queue(Ack(stream, group, entry_id))

    async def drained(self) -> None:
        """Wait until everything queued so far is in Redis."""
        await self._idle.wait()

    @property
    def settled(self) -> bool:
        """Whether everything queued so far is in Redis."""
        return self._idle.is_set()

    def _reply(self, job: Job, reply: Reply) -> None:
        reply.reader_id = self._reader_id
        reply.attempt = job.deliveries
        job.last_reply_s = time.monotonic()
        self._queue(PostReply(job.item.reply_to, wire.encode(reply)))

    def _finish_job(self, job: Job, reply: Reply) -> None:
        job.finished = True
        self.terminal_sent += 1
        reply.reader_id = self._reader_id
        reply.attempt = job.deliveries
        counter = "cancelled" if job.cancelled else ("failed" if job.failed else "completed")
        self._queue(Finish(stream=job.stream, group=job.group, consumer=self._consumer, entry_id=job.entry_id,
                           reply_stream=job.item.reply_to, payload=wire.encode(reply)[wire.FIELD],
                           counter=self._keys.stat(job.group, counter)))

    def _queue(self, op: ReplyOp) -> None:
        self._ops.append(op)
        self._idle.clear()
        if self._flushing is None:
            self._flushing = critical_task(self._flush(), "reader reply sink flush")

    async def _flush(self) -> None:
        attempt = 0
        try:
            while self._ops:
                ops, self._ops = self._ops, []
                sent = await broker.send_replies(self._redis, ops, self._expiry)
                if sent.dropped:
                    self.dropped += sent.dropped
                    log.warning("dropped %d late answer(s): another reader had taken those requests over",
                                sent.dropped)
                if not sent.unsent:
                    attempt = 0
                    self.stalled = False
                    continue
                # Kept and re-sent first when Redis is back; the gateway bounds how long it waits.
                self._ops = [*sent.unsent, *self._ops]
                self.stalled = True
                delay = compute_backoff(attempt, base_s=0.1, cap_s=RETRY_CAP_S)
                log.warning("reply flush failed (%s); retrying in %.1fs", sent.error, delay)
                attempt += 1
                await asyncio.sleep(delay)
        finally:
            self._flushing = None
            if not self._ops:
                self._idle.set()
