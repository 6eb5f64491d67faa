"""Replies from a reader to gateway workers, coalesced into one pipeline per event-loop turn.

Engines call `token`, `done` and `error` synchronously; the sink queues the XADDs and, for terminal replies, the
XACK and XDEL of the request entry, and flushes them together in one MULTI/EXEC: a terminal reply and the
acknowledgement of its entry happen together or not at all, so a reader killed mid-flush leaves the entry pending
(to be reclaimed) rather than answered twice. Acknowledged entries are deleted, which keeps each request stream's
length equal to its backlog. Under load one round trip carries a whole batch's replies.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import redis.exceptions
from redis.asyncio import Redis

from liftoff import wire
from liftoff.keys import Keys
from liftoff.process import compute_backoff
from liftoff.wire import Reply
from readers.jobs import Job

log = logging.getLogger(__name__)

REPLY_STREAM_MAXLEN = 100_000  # approximate cap; gateway workers trim what they have read long before this


class ReplySink:
    def __init__(self, redis: Redis, reader_id: str, keys: Keys) -> None:
        self._redis = redis
        self._reader_id = reader_id
        self._keys = keys
        self._ops: list[tuple[str, Any]] = []
        self._flushing: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.terminal_sent = 0

    def token(self, job: Job, index: int, text: str) -> None:
        self._reply(job, Reply(id=job.item.id, kind="token", index=index, text=text))

    def done(
        self,
        job: Job,
        texts: list[str] | None,
        metadata: list[dict[str, Any]] | None = None,
        result: Any = None,
    ) -> None:
        self._reply(job, Reply(id=job.item.id, kind="done", texts=texts, metadata=metadata, result=result))
        self._ack(job)

    def error(self, job: Job, status: int, message: str) -> None:
        job.failed = True
        self._reply(job, Reply(id=job.item.id, kind="error", status=status, message=message))
        self._ack(job)

    def error_raw(self, reply_to: str, request_id: str, status: int, message: str) -> None:
        """Answer an entry that could not be decoded into a Job (but whose sender is known)."""
        reply = Reply(id=request_id, kind="error", status=status, message=message, reader_id=self._reader_id)
        self._queue(("xadd", (reply_to, wire.encode(reply))))

    def ack_raw(self, stream: str, group: str, entry_id: bytes) -> None:
        self._queue(("xack", (stream, group, entry_id)))

    async def drained(self) -> None:
        """Wait until everything queued so far is in Redis."""
        await self._idle.wait()

    def _reply(self, job: Job, reply: Reply) -> None:
        reply.reader_id = self._reader_id
        reply.attempt = job.deliveries
        self._queue(("xadd", (job.item.reply_to, wire.encode(reply))))

    def _ack(self, job: Job) -> None:
        job.finished = True
        self.terminal_sent += 1
        self._queue(("xack", (job.stream, job.group, job.entry_id)))
        self._queue(("xdel", (job.stream, job.entry_id)))
        counter = "cancelled" if job.cancelled else ("failed" if job.failed else "completed")
        self._queue(("incr", (self._keys.stat(counter),)))

    def _queue(self, op: tuple[str, Any]) -> None:
        self._ops.append(op)
        self._idle.clear()
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        attempt = 0
        try:
            while self._ops:
                ops, self._ops = self._ops, []
                while True:
                    try:
                        await self._send(ops)
                        attempt = 0
                        break
                    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                        # Replies are kept and re-sent when Redis is back; the gateway bounds how long it waits.
                        delay = compute_backoff(attempt, base_s=0.1, cap_s=5.0)
                        log.warning("reply flush failed (%s); retrying in %.1fs", exc, delay)
                        attempt += 1
                        await asyncio.sleep(delay)
        finally:
            self._flushing = None
            if not self._ops:
                self._idle.set()

    async def _send(self, ops: list[tuple[str, Any]]) -> None:
        pipe = self._redis.pipeline(transaction=True)
        for name, args in ops:
            if name == "xadd":
                stream, fields = args
                pipe.xadd(stream, fields, maxlen=REPLY_STREAM_MAXLEN, approximate=True)
            else:
                getattr(pipe, name)(*args)
        await pipe.execute()
