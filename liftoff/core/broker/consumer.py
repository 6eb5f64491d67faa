"""The reader's side of the streams: read a group's new entries, answer them, hear about cancelled requests.

A reader consumes each of its groups under its own consumer name: XREADGROUP `>` hands it entries no one has had
yet (they stay pending for it until acknowledged). Its replies go out in one MULTI/EXEC per flush (on a cluster,
one per hash slot the flush touches, sent together): tokens and beats as plain XADDs on the gateway worker's reply
stream for the group (approximately capped), and each terminal reply through the `FINISH` script, which writes the
reply, acknowledges and deletes the request entry and counts the outcome, but only while this consumer still owns
the entry. All three keys are in the group's hash slot (see `liftoff.core.keys`). A reader that was taken for dead
and whose work another reader reclaimed (a long pause, a partition) so drops its late answer instead of answering
twice; deleting acknowledged entries keeps each request stream's length equal to its backlog. Cancelled request ids
arrive on the groups' cancel channels: plain pub/sub on one Redis, sharded pub/sub (SSUBSCRIBE) on a cluster, where
each channel lives on the master of its group's slot.

"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from redis.asyncio.client import Pipeline, PubSub
from redis.exceptions import ResponseError

from liftoff.core.broker.errors import TRANSIENT
from liftoff.core.broker.producer import REPLY_STREAM_TTL_S, Entry
from liftoff.core.keys import Keys
from liftoff.core.redis_client import RedisClient, is_cluster, node_for, refresh_topology, slot_of

REPLY_STREAM_MAXLEN = 100_000  # approximate cap; gateway workers trim what they have read long before this

# Within this many seconds of pushing a reply stream's expiry out, a reader does not push it out again.
EXPIRY_REFRESH_S = REPLY_STREAM_TTL_S / 4

# KEYS: request stream, reply stream, outcome counter (one hash slot: the group's).
# ARGV: group, consumer, entry id, reply payload (the `d` field).
# The reply stream's cap is a constant of the script: no argument of its own to send with every reply.
FINISH = f"""
local owned = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if #owned == 0 then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', {REPLY_STREAM_MAXLEN}, '*', 'd', ARGV[4])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
redis.call('INCR', KEYS[3])
return 1
"""


async def ensure_group(redis: RedisClient, stream: str, group: str) -> None:
    """Create consumer group `group` on `stream` (and the stream) unless it exists."""
    try:
        await redis.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def read_new(
    redis: RedisClient, stream: str, group: str, consumer: str, count: int, block_ms: int
) -> list[Entry]:
    """Up to `count` entries of `stream` never delivered before, now pending for `consumer`; waits up to
    `block_ms` for the first (on a cluster, straight from the master of the stream's slot). Raises what
    `errors.group_gone` recognises when the group is gone."""
    try:
        client = await node_for(redis, stream) if is_cluster(redis) else redis
        resp = await client.xreadgroup(group, consumer, {stream: ">"}, count=count, block=block_ms)
    except TRANSIENT:
        await refresh_topology(redis)
        raise
    return resp[0][1] if resp else []  # one stream read: [[stream, entries]]


# Not frozen: one of these is built per reply, and a frozen dataclass's __init__ costs twice as much.
@dataclass(slots=True)
class PostReply:
    """A reply that does not end its request (a token, a beat), or an answer to an entry that is not a request."""

    reply_stream: str
    fields: dict[bytes, bytes]

    @property
    def key(self) -> str:
        return self.reply_stream


@dataclass(slots=True)
class Finish:
    """The terminal reply of a request, written only while `consumer` owns its entry (see `FINISH`)."""

    stream: str
    group: str
    consumer: str
    entry_id: bytes
    reply_stream: str
    payload: bytes  # the reply's `d` field
    counter: str  # the outcome counter's key

    @property
    def key(self) -> str:
        return self.stream


@dataclass(slots=True)
class Ack:
    """Acknowledge and delete an entry with no terminal reply (one that could not be decoded): acknowledged alone,
    it would stay in the stream and count as backlog for ever."""

    stream: str
    group: str
    entry_id: bytes

    @property
    def key(self) -> str:
        return self.stream


ReplyOp = PostReply | Finish | Ack


@dataclass(slots=True)
class Sent:
    """What `send_replies` did: Finishes dropped (another consumer owned their entry by then), and the ops that did
    not reach Redis (to be sent again, in order), with the error that stopped them."""

    dropped: int = 0
    unsent: list[ReplyOp] | tuple[()] = ()  # (an empty tuple: no factory to run for every flush)
    error: BaseException | None = None


class ExpiryClock:
    """When this process last pushed out each reply stream's expiry. Once every EXPIRY_REFRESH_S per stream is
    enough: a stream written to expires REPLY_STREAM_TTL_S after its last refresh, so one refreshed at most
    EXPIRY_REFRESH_S ago cannot have expired, and one that did (its gateway worker died, nobody wrote it for the
    TTL) was refreshed longer ago and gets its EXPIRE with the write that creates it anew. (A stream deleted outright
    and written again within EXPIRY_REFRESH_S gets its expiry at the next refresh.)"""

    def __init__(self) -> None:
        self._at: dict[str, float] = {}

    def due(self, stream: str, now: float) -> bool:
        at = self._at.get(stream)
        return at is None or now - at >= EXPIRY_REFRESH_S

    def refreshed(self, streams: Sequence[str], now: float) -> None:
        for stream in streams:
            self._at[stream] = now
        if len(self._at) > 4096:  # streams of gateway workers long gone
            self._at = {s: at for s, at in self._at.items() if now - at < EXPIRY_REFRESH_S}


async def send_replies(redis: RedisClient, ops: Sequence[ReplyOp], clock: ExpiryClock | None = None) -> Sent:
    """Send `ops` in order, in one MULTI/EXEC per hash slot (one in all on a single Redis). Every reply stream
    written gets its expiry (the write may have created the stream anew, say after its gateway worker died and the
    stream expired), once every EXPIRY_REFRESH_S per stream with a `clock`, else with every write. A slot whose
    master is out of reach leaves its ops unsent; the others go through."""
    clock = clock or ExpiryClock()
    if not is_cluster(redis):
        return await _send_slot(redis, list(ops), clock)
    by_slot: dict[int, list[ReplyOp]] = {}
    for op in ops:
        by_slot.setdefault(slot_of(op.key), []).append(op)
    parts = await asyncio.gather(*(_send_slot(redis, part, clock) for part in by_slot.values()))
    sent = Sent()
    for part in parts:
        sent.dropped += part.dropped
        sent.unsent = [*sent.unsent, *part.unsent]
        sent.error = sent.error or part.error
    return sent


async def _send_slot(redis: RedisClient, ops: list[ReplyOp], clock: ExpiryClock) -> Sent:
    pipe = redis.pipeline(transaction=True)
    now = time.monotonic()
    finishes, expired = _queue(pipe, ops, clock, now)
    try:
        results = await pipe.execute()
    except TRANSIENT as exc:
        return Sent(unsent=ops, error=exc)
    if expired:
        clock.refreshed(expired, now)
    return Sent(dropped=sum(1 for position in finishes if results[position] == 0))


def _queue(pipe: Pipeline, ops: list[ReplyOp], clock: ExpiryClock, now: float) -> tuple[list[int], list[str]]:
    """Queue `ops` on `pipe`; where each Finish's result is among the pipeline's results, and the reply streams
    whose expiry it pushes out."""
    finishes = []
    reply_streams: dict[str, None] = {}
    for op in ops:
        if isinstance(op, PostReply):
            pipe.xadd(op.reply_stream, op.fields, maxlen=REPLY_STREAM_MAXLEN, approximate=True)
            reply_streams[op.reply_stream] = None
        elif isinstance(op, Finish):
            # EVAL rather than EVALSHA: Redis caches the compiled script by its hash anyway, and EVAL needs
            # neither the SCRIPT EXISTS round trip a pipeline makes before EVALSHA nor a reload after a restart.
            pipe.eval(FINISH, 3, op.stream, op.reply_stream, op.counter, op.group, op.consumer, op.entry_id,
                      op.payload)
            finishes.append(len(pipe) - 1)
            reply_streams[op.reply_stream] = None
        else:
            pipe.xack(op.stream, op.group, op.entry_id)
            pipe.xdel(op.stream, op.entry_id)
    expired = [stream for stream in reply_streams if clock.due(stream, now)]
    for stream in expired:
        pipe.expire(stream, REPLY_STREAM_TTL_S)
    return finishes, expired


class CancelFeed:
    """Request ids published on the cancel channels of `groups`, from the moment `subscribe` returns. On a cluster,
    one subscription per master serving some of the channels, each channel subscribed on its own (SSUBSCRIBE takes
    channels of one slot)."""

    def __init__(self, redis: RedisClient, keys: Keys, groups: Sequence[str]) -> None:
        self._redis = redis
        self._channels = [keys.cancel(group) for group in groups]
        self._sharded = is_cluster(redis)
        self._pubsubs: list[PubSub] = []

    async def subscribe(self) -> None:
        if not self._sharded:
            pubsub = self._redis.pubsub()
            self._pubsubs.append(pubsub)
            await pubsub.subscribe(*self._channels)
            return
        await refresh_topology(self._redis)  # a replica may have taken over a channel's slot since last time
        by_master: dict[int, tuple[PubSub, list[str]]] = {}
        for channel in self._channels:
            client = await node_for(self._redis, channel)
            if id(client) not in by_master:
                by_master[id(client)] = (client.pubsub(), [])
            by_master[id(client)][1].append(channel)
        for pubsub, channels in by_master.values():
            self._pubsubs.append(pubsub)
            for channel in channels:
                await pubsub.ssubscribe(channel)

    async def ids(self) -> AsyncIterator[str]:
        """Cancelled request ids until the connection to a channel's Redis is lost (raised as that error)."""
        queue: asyncio.Queue[str] = asyncio.Queue()
        kind = "smessage" if self._sharded else "message"
        pumps = [asyncio.create_task(_pump(pubsub, kind, queue)) for pubsub in self._pubsubs]
        try:
            while True:
                getter = asyncio.create_task(queue.get())
                done, _ = await asyncio.wait([getter, *pumps], return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    ended = next(task for task in pumps if task.done())
                    raise ended.exception() or ConnectionError("a cancel subscription ended")
                yield getter.result()
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def close(self) -> None:
        for pubsub in self._pubsubs:
            with contextlib.suppress(Exception):  # its connection may be gone already
                await pubsub.aclose()


async def _pump(pubsub: PubSub, kind: str, queue: asyncio.Queue[str]) -> None:
    async for message in pubsub.listen():
        if message["type"] == kind:
            queue.put_nowait(message["data"].decode())
