"""Replies from a reader to gateway workers, coalesced into one pipeline per event-loop turn.

Engines call `token`, `done` and `error` synchronously (the reader's liveness task, `alive`); the sink queues token
and beat XADDs and, for terminal replies, one call of the `FINISH` script, and flushes them together in one
MULTI/EXEC. The script writes the terminal reply,
acknowledges and deletes the request entry and counts the outcome, but only while this reader's consumer still owns
the entry: a reader that was taken for dead and whose work was reclaimed by another (a long pause, a partition)
drops its late answer instead of answering twice. A reader killed mid-flush leaves the entry pending, to be
reclaimed. Acknowledged entries are deleted, which keeps each request stream's length equal to its backlog. Under
load one round trip carries a whole batch's replies.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import redis.exceptions
from redis.asyncio import Redis

from liftoff.core import wire
from liftoff.core.keys import Keys
from liftoff.core.process import compute_backoff
from liftoff.core.wire import Reply
from readers.jobs import Job

log = logging.getLogger(__name__)

REPLY_STREAM_MAXLEN = 100_000  # approximate cap; gateway workers trim what they have read long before this

# KEYS: request stream, reply stream, outcome counter.
# ARGV: group, consumer, entry id, reply payload (the `d` field), reply stream MAXLEN.
FINISH = """
local owned = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if #owned == 0 then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*', 'd', ARGV[4])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
redis.call('INCR', KEYS[3])
return 1
"""


class ReplySink:
    def __init__(self, redis: Redis, reader_id: str, keys: Keys, consumer: str) -> None:
        self._redis = redis
        self._reader_id = reader_id
        self._keys = keys
        self._consumer = consumer
        self.dropped = 0  # terminal replies not written: another reader had taken the request over
        self._ops: list[tuple[str, Any]] = []
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
        """A sign of life for a stream that is being worked on but has nothing to send (see readers.liveness)."""
        self._reply(job, Reply(id=job.item.id, kind="alive"))

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
        job.last_reply_s = time.monotonic()
        self._queue(("xadd", (job.item.reply_to, wire.encode(reply))))

    def _finish_job(self, job: Job, reply: Reply) -> None:
        job.finished = True
        self.terminal_sent += 1
        reply.reader_id = self._reader_id
        reply.attempt = job.deliveries
        counter = "cancelled" if job.cancelled else ("failed" if job.failed else "completed")
        keys = [job.stream, job.item.reply_to, self._keys.stat(counter)]
        args = [job.group, self._consumer, job.entry_id, wire.encode(reply)[wire.FIELD], REPLY_STREAM_MAXLEN]
        self._queue(("finish", (keys, args)))

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
                        self.stalled = False
                        break
                    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                        # Replies are kept and re-sent when Redis is back; the gateway bounds how long it waits.
                        self.stalled = True
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
        finishes = []
        for index, (name, args) in enumerate(ops):
            if name == "xadd":
                stream, fields = args
                pipe.xadd(stream, fields, maxlen=REPLY_STREAM_MAXLEN, approximate=True)
            elif name == "finish":
                # EVAL rather than EVALSHA: Redis caches the compiled script by its hash anyway, and EVAL needs
                # neither the SCRIPT EXISTS round trip a pipeline makes before EVALSHA nor a reload after a restart.
                keys, argv = args
                pipe.eval(FINISH, len(keys), *keys, *argv)
                finishes.append(index)
            else:
                getattr(pipe, name)(*args)
        results = await pipe.execute()
        dropped = sum(1 for index in finishes if results[index] == 0)
        if dropped:
            self.dropped += dropped
            log.warning("dropped %d late answer(s): another reader had taken those requests over", dropped)
