"""The gateway's side of the streams: queue requests, withdraw them, read and trim its own reply streams.

A gateway worker XADDs requests to `<ns>:requests:{<group>}` (a burst in one pipeline, so one round trip; on a
cluster one per master the burst touches, sent together), reads each group's reply stream for it,
`<ns>:replies:{<group>}:<worker>`, with a blocking XREAD, and trims what it has read (XTRIM MINID) while refreshing
the streams' expiry, so that a dead worker's reply streams go away on its own (whoever writes a reply stream, and so
may create it, sets the same expiry: readers in `consumer.send_replies`, at most every `EXPIRY_REFRESH_S` per stream,
`reclaim` for a dead letter's error). A
request nobody waits for any more is withdrawn: its entry is deleted if no reader took it yet, and its id is
published on its group's cancel channel (sharded pub/sub on a cluster) so that a reader that did take it drops it
from its batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from typing import Any

from liftoff.core.broker.errors import TRANSIENT
from liftoff.core.keys import Keys
from liftoff.core.redis_client import RedisClient, is_cluster, node_for, refresh_topology, slot_of

Entry = tuple[bytes, dict[bytes, bytes]]  # a stream entry: (entry id, fields)
Requests = Sequence[tuple[str, dict[bytes, bytes]]]  # (request stream, fields) of each request to queue

REPLY_STREAM_TTL_S = 120  # a reply stream expires this long after its last write or trim: a dead worker's goes away


def submit(redis: RedisClient, requests: Requests) -> Awaitable[list[bytes | Exception]]:
    """XADD each (request stream, fields) in one pipeline; await the entry ids, in order, or for a request that
    could not be queued the error. On a cluster, one pipeline per hash slot the burst touches, sent together, so
    that a master out of reach fails its own requests only; on one Redis a failure fails them all, raised."""
    if not is_cluster(redis):
        return _xadds(redis, requests)  # the ids, or the pipeline's error raised
    return _submit_by_slot(redis, requests)


async def _submit_by_slot(redis: RedisClient, requests: Requests) -> list[bytes | Exception]:
    by_slot: dict[int, list[int]] = {}
    for index, (stream, _) in enumerate(requests):
        by_slot.setdefault(slot_of(stream), []).append(index)
    parts = await asyncio.gather(*(_xadds(redis, [requests[i] for i in indexes]) for indexes in by_slot.values()),
                                 return_exceptions=True)
    out: list[bytes | Exception] = [b""] * len(requests)
    for indexes, part in zip(by_slot.values(), parts, strict=True):
        for position, index in enumerate(indexes):
            out[index] = part if isinstance(part, Exception) else part[position]
    return out


def _xadds(redis: RedisClient, requests: Requests) -> Awaitable[list[Any]]:
    """The pipeline's execution, to await (a plain function: one coroutine fewer per burst)."""
    pipe = redis.pipeline(transaction=False)
    for stream, fields in requests:
        pipe.xadd(stream, fields)
    return pipe.execute()


async def withdraw(redis: RedisClient, keys: Keys, group: str, entry_id: bytes | None, request_id: str) -> None:
    """Delete a queued request's entry (when it was queued) and announce its id on its group's cancel channel."""
    pipe = redis.pipeline(transaction=False)
    if entry_id is not None:
        pipe.xdel(keys.requests(group), entry_id)
    if is_cluster(redis):
        pipe.spublish(keys.cancel(group), request_id)
    else:
        pipe.publish(keys.cancel(group), request_id)
    await pipe.execute()


async def read_replies(redis: RedisClient, reply_stream: str, after: bytes, count: int, block_ms: int) -> list[Entry]:
    """Replies on `reply_stream` after entry id `after`, waiting up to `block_ms` for the first one (on a cluster,
    straight from the master of the stream's slot: see `redis_client.node_for`)."""
    try:
        node = await node_for(redis, reply_stream) if is_cluster(redis) else redis
        resp = await node.xread({reply_stream: after}, count=count, block=block_ms)
    except TRANSIENT:
        await refresh_topology(redis)
        raise
    return resp[0][1] if resp else []  # one stream read: [[stream, entries]]


async def trim_replies(redis: RedisClient, read_up_to: Mapping[str, bytes], ttl_s: int) -> None:
    """Drop the replies before `read_up_to[stream]` on each stream (the listener is done with them) and push the
    streams' expiry out."""
    pipe = redis.pipeline(transaction=False)
    for stream, entry_id in read_up_to.items():
        pipe.xtrim(stream, minid=entry_id)
        pipe.expire(stream, ttl_s)
    await pipe.execute()
