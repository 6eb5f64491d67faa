"""The gateway's side of the streams: queue requests, withdraw them, read and trim its own reply stream.

A gateway worker XADDs requests to `<ns>:requests:{<group>}` (a burst in one pipeline, so one round trip), reads its
one reply stream `<ns>:replies:<worker>` with a blocking XREAD, and trims what it has read (XTRIM MINID) while
refreshing the stream's expiry, so that a dead worker's reply stream goes away on its own (whoever writes a reply
stream, and so may create it, sets the same expiry: readers in `consumer.send_replies`, `reclaim` for a dead
letter's error). A request nobody waits for
any more is withdrawn: its entry is deleted if no reader took it yet, and its id is published on the cancel channel
so that a reader that did take it drops it from its batch.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis

from liftoff.core.keys import Keys

Entry = tuple[bytes, dict[bytes, bytes]]  # a stream entry: (entry id, fields)

REPLY_STREAM_TTL_S = 120  # a reply stream expires this long after its last write or trim: a dead worker's goes away


async def submit(redis: Redis, requests: Sequence[tuple[str, dict[bytes, bytes]]]) -> list[bytes]:
    """XADD each (request stream, fields) in one pipeline; the entry ids, in order."""
    pipe = redis.pipeline(transaction=False)
    for stream, fields in requests:
        pipe.xadd(stream, fields)
    return list(await pipe.execute())


async def withdraw(redis: Redis, keys: Keys, stream: str, entry_id: bytes | None, request_id: str) -> None:
    """Delete a queued request's entry (when it was queued) and announce its id on the cancel channel."""
    pipe = redis.pipeline(transaction=False)
    if entry_id is not None:
        pipe.xdel(stream, entry_id)
    pipe.publish(keys.cancel_channel, request_id)
    await pipe.execute()


async def read_replies(redis: Redis, reply_stream: str, after: bytes, count: int, block_ms: int) -> list[Entry]:
    """Replies on `reply_stream` after entry id `after`, waiting up to `block_ms` for the first one."""
    resp = await redis.xread({reply_stream: after}, count=count, block=block_ms)
    return [entry for _, entries in resp or [] for entry in entries]


async def trim_replies(redis: Redis, reply_stream: str, read_up_to: bytes, ttl_s: int) -> None:
    """Drop the replies before `read_up_to` (the listener is done with them) and push the stream's expiry out."""
    pipe = redis.pipeline(transaction=False)
    pipe.xtrim(reply_stream, minid=read_up_to)
    pipe.expire(reply_stream, ttl_s)
    await pipe.execute()
