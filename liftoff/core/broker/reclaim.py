"""Work left behind: by dead readers, handed to a live reader of the group or dead-lettered when exhausted; and by
a failover, taken back by the reader that owns it.

A consumer is dead when no live or loading reader in the registry carries its consumer name (each reader process
consumes under its own name, so a restarted reader does not inherit its predecessor's pending entries by
accident: they are reclaimed like any other). Its pending entries (XPENDING) are

* claimed (XCLAIM, which counts the delivery) by a live reader with free slots, while they have been delivered
  fewer than `max_deliveries` times, or
* moved to the dead-letter stream with the reason, and their client answered with an error, once they have.

Claims use a minimum idle time so that two sweepers racing for one entry cannot both win it. Dead consumers with
nothing pending are deleted from the group. Readers run `sweep` for their groups; the supervisor runs it with no
free slots, which dead-letters exhausted entries and tidies consumers even when no reader of a group is live.
A dead-lettered request's client gets a 503 naming the letter, written straight onto its reply stream; the letter,
the request entry, the reply stream and the counter are all in the group's hash slot, so this is one MULTI/EXEC on
a cluster too.

A failover can lose writes the old master acknowledged but had not yet passed to its replica, among them the
`FINISH` of an entry: the promoted replica still has the entry pending for the reader that answered it. That reader
is live, so nothing above would ever reclaim it; after losing its connection the reader therefore lists what is
pending for it (`own_pending`) and takes back (`take_back`) what it is not working on, to serve it again. Its
client was answered already, or was told 503 when the connection dropped: a second answer finds no request
waiting at the gateway and is ignored.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from liftoff.core import registry, wire
from liftoff.core.broker.dead_letters import add_letter
from liftoff.core.broker.producer import REPLY_STREAM_TTL_S
from liftoff.core.keys import Keys
from liftoff.core.redis_client import RedisClient, same_slot
from liftoff.core.wire import DeadLetter, Reply

log = logging.getLogger(__name__)

CLAIM_MIN_IDLE_MS = 1000


@dataclass(slots=True)
class Claimed:
    entry_id: bytes
    fields: dict[bytes, bytes]
    deliveries: int  # including this one


async def live_consumers(redis: RedisClient, keys: Keys, check_interval_s: int) -> set[str]:
    records = await registry.read_registry(redis, keys, check_interval_s)
    return {r.info.consumer_name for r in records if r.status != "dead"}


async def sweep(
    redis: RedisClient,
    keys: Keys,
    group: str,
    claimer: str,
    max_deliveries: int,
    free_slots: int,
    live: set[str],
) -> list[Claimed]:
    stream = keys.requests(group)
    try:
        consumers = await redis.xinfo_consumers(stream, group)
    except Exception as exc:  # noqa: BLE001 — no stream or no group yet: nothing to sweep
        log.debug("sweep of %s skipped: %s", group, exc)
        return []
    claimed: list[Claimed] = []
    for consumer in consumers:
        name = _text(consumer["name"])
        if name in live or name == claimer:
            continue
        if consumer["pending"] == 0:
            await redis.xgroup_delconsumer(stream, group, name)
            continue
        pending = await redis.xpending_range(stream, group, min="-", max="+", count=100, consumername=name)
        exhausted = [p["message_id"] for p in pending if p["times_delivered"] >= max_deliveries]
        if exhausted:
            await _dead_letter(redis, keys, group, claimer, exhausted, max_deliveries, name)
        retry = {p["message_id"]: p["times_delivered"] for p in pending if p["times_delivered"] < max_deliveries}
        retry = dict(list(retry.items())[: max(0, free_slots)])
        if retry:
            got = await _claim(redis, stream, group, claimer, retry)
            claimed += got
            free_slots -= len(got)
    return claimed


async def own_pending(redis: RedisClient, stream: str, group: str, consumer: str, count: int) -> dict[bytes, int]:
    """The entries of `stream` pending for `consumer` (the first `count`): entry id → deliveries so far."""
    pending = await redis.xpending_range(stream, group, min="-", max="+", count=count, consumername=consumer)
    return {p["message_id"]: int(p["times_delivered"]) for p in pending}


async def take_back(
    redis: RedisClient, stream: str, group: str, consumer: str, delivered: dict[bytes, int]
) -> list[Claimed]:
    """Claim `consumer`'s own pending entries (from `own_pending`) again, to serve them once more; those deleted in
    the meantime (withdrawn by their gateway) are acknowledged instead."""
    return await _claim(redis, stream, group, consumer, delivered, min_idle_ms=0)


async def _claim(redis: RedisClient, stream: str, group: str, claimer: str, delivered: dict[bytes, int],
                 min_idle_ms: int = CLAIM_MIN_IDLE_MS) -> list[Claimed]:
    ids = list(delivered)
    res = await redis.xclaim(stream, group, claimer, min_idle_time=min_idle_ms, message_ids=ids)
    out, gone = [], []
    for requested, (entry_id, fields) in zip(ids, res, strict=False):
        if entry_id is None:
            # Deleted while pending (its request was abandoned); Redis 6.2 still returns its slot, in order.
            if len(res) == len(ids):
                gone.append(requested)
            continue
        out.append(Claimed(entry_id, fields, delivered.get(entry_id, 1) + 1))  # XCLAIM counted one more
    if gone:
        await redis.xack(stream, group, *gone)
    return out


async def _dead_letter(
    redis: RedisClient, keys: Keys, group: str, claimer: str, ids: list[bytes], max_deliveries: int, dead_consumer: str
) -> None:
    stream = keys.requests(group)
    res = await redis.xclaim(stream, group, claimer, min_idle_time=CLAIM_MIN_IDLE_MS, message_ids=ids)
    pipe = redis.pipeline(transaction=True)
    for requested, (entry_id, fields) in zip(ids, res, strict=False):
        if entry_id is None:
            if len(res) == len(ids):
                pipe.xack(stream, group, requested)
            continue
        reason = (f"its reader ({dead_consumer}) stopped while serving it, and it has been delivered "
                  f"{max_deliveries} time(s), the limit (max_deliveries)")
        letter = DeadLetter(group=group, entry_id=entry_id.decode(), reason=reason, failed_s=time.time(),
                            payload=(fields or {}).get(wire.FIELD, b"").decode())
        add_letter(pipe, keys, letter)
        request_id, reply_to = wire.peek_ids(fields or {})
        if request_id and reply_to and same_slot(redis, stream, reply_to):  # else not a reply stream of this group
            message = f"the request failed: {reason}; it is kept in the dead-letter queue as {entry_id.decode()}"
            pipe.xadd(reply_to, wire.encode(Reply(id=request_id, kind="error", status=503, message=message)))
            pipe.expire(reply_to, REPLY_STREAM_TTL_S)  # its worker may be gone: the stream must not outlive it
        pipe.xack(stream, group, entry_id)
        pipe.xdel(stream, entry_id)
        pipe.incr(keys.stat(group, "dead_lettered"))
        log.warning("dead-lettered %s of %s: %s", entry_id.decode(), group, reason)
    await pipe.execute()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
