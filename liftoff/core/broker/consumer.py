"""The reader's side of the streams: read a group's new entries, answer them, hear about cancelled requests.

A reader consumes each of its groups under its own consumer name: XREADGROUP `>` hands it entries no one has had
yet (they stay pending for it until acknowledged). Its replies go out in one MULTI/EXEC per flush: tokens and beats
as plain XADDs on the gateway worker's reply stream (approximately capped), and each terminal reply through the
`FINISH` script, which writes the reply, acknowledges and deletes the request entry and counts the outcome, but only
while this consumer still owns the entry. A reader that was taken for dead and whose work another reader reclaimed
(a long pause, a partition) so drops its late answer instead of answering twice; deleting acknowledged entries keeps
each request stream's length equal to its backlog. Cancelled request ids arrive on the cancel pub/sub channel.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from liftoff.core.broker.producer import REPLY_STREAM_TTL_S, Entry
from liftoff.core.keys import Keys

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


async def ensure_group(redis: Redis, stream: str, group: str) -> None:
    """Create consumer group `group` on `stream` (and the stream) unless it exists."""
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def read_new(redis: Redis, stream: str, group: str, consumer: str, count: int, block_ms: int) -> list[Entry]:
    """Up to `count` entries of `stream` never delivered before, now pending for `consumer`; waits up to
    `block_ms` for the first. Raises what `errors.group_gone` recognises when the group is gone."""
    resp = await redis.xreadgroup(group, consumer, {stream: ">"}, count=count, block=block_ms)
    return [entry for _, entries in resp or [] for entry in entries]


@dataclass(frozen=True, slots=True)
class PostReply:
    """A reply that does not end its request (a token, a beat), or an answer to an entry that is not a request."""

    reply_stream: str
    fields: dict[bytes, bytes]


@dataclass(frozen=True, slots=True)
class Finish:
    """The terminal reply of a request, written only while `consumer` owns its entry (see `FINISH`)."""

    stream: str
    group: str
    consumer: str
    entry_id: bytes
    reply_stream: str
    payload: bytes  # the reply's `d` field
    counter: str  # the outcome counter's key


@dataclass(frozen=True, slots=True)
class Ack:
    """Acknowledge and delete an entry with no terminal reply (one that could not be decoded): acknowledged alone,
    it would stay in the stream and count as backlog for ever."""

    stream: str
    group: str
    entry_id: bytes


ReplyOp = PostReply | Finish | Ack


async def send_replies(redis: Redis, ops: Sequence[ReplyOp]) -> int:
    """Send `ops` in one MULTI/EXEC, in order; how many `Finish`es were dropped because another consumer owned
    their entry by then. Every reply stream written gets its expiry (the write may have created the stream anew,
    say after its gateway worker died and the stream expired)."""
    pipe = redis.pipeline(transaction=True)
    finishes = []  # where each Finish's result is among the pipeline's results
    reply_streams: dict[str, None] = {}
    for op in ops:
        if isinstance(op, PostReply):
            pipe.xadd(op.reply_stream, op.fields, maxlen=REPLY_STREAM_MAXLEN, approximate=True)
            reply_streams[op.reply_stream] = None
        elif isinstance(op, Finish):
            # EVAL rather than EVALSHA: Redis caches the compiled script by its hash anyway, and EVAL needs
            # neither the SCRIPT EXISTS round trip a pipeline makes before EVALSHA nor a reload after a restart.
            pipe.eval(FINISH, 3, op.stream, op.reply_stream, op.counter,
                      op.group, op.consumer, op.entry_id, op.payload, REPLY_STREAM_MAXLEN)
            finishes.append(len(pipe.command_stack) - 1)
            reply_streams[op.reply_stream] = None
        else:
            pipe.xack(op.stream, op.group, op.entry_id)
            pipe.xdel(op.stream, op.entry_id)
    for stream in reply_streams:
        pipe.expire(stream, REPLY_STREAM_TTL_S)
    results = await pipe.execute()
    return sum(1 for position in finishes if results[position] == 0)


class CancelFeed:
    """Request ids published on the cancel channel, from the moment `subscribe` returns."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._pubsub = redis.pubsub()
        self._channel = keys.cancel_channel

    async def subscribe(self) -> None:
        await self._pubsub.subscribe(self._channel)

    async def ids(self) -> AsyncIterator[str]:
        async for message in self._pubsub.listen():
            if message["type"] == "message":
                yield message["data"].decode()
