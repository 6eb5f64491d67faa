"""The dead-letter streams `<ns>:dlq:{<group>}`: requests that exhausted their deliveries, each a `DeadLetter` with its
reason, kept in their group's hash slot.

Letters are written by the reclaim sweep (`broker.reclaim`), in the same transaction that answers the client and
removes the request entry; the management API lists, retries (back onto the group's request stream, in one
MULTI/EXEC with the letter's deletion: one slot) and purges them. Each stream is capped at about `DLQ_MAXLEN`
letters. The streams are found by SCAN (on every master of a cluster), as letters outlive their group; the one
stream of older versions, `<ns>:dlq`, is listed, retried and purged with them until it is empty.

A letter's id is its entry id in its group's stream, `<ms>-<seq>`: unique within the group, and the same in two
groups only for letters written in the same millisecond, which `letters_by_id` both returns.
"""

from __future__ import annotations

from redis.asyncio.client import Pipeline

from liftoff.core import wire
from liftoff.core.keys import Keys
from liftoff.core.redis_client import RedisClient, is_cluster
from liftoff.core.wire import DeadLetter, WorkItem

DLQ_MAXLEN = 100_000

Letter = tuple[str, DeadLetter]  # (letter id, letter)

# KEYS: a dead-letter stream. Deletes it; how many letters it held.
PURGE = """
local n = redis.call('XLEN', KEYS[1])
redis.call('DEL', KEYS[1])
return n
"""


def add_letter(pipe: Pipeline, keys: Keys, letter: DeadLetter) -> None:
    """Queue the XADD of `letter` on `pipe` (the caller's transaction, in the letter's group's slot)."""
    pipe.xadd(keys.dlq(letter.group), wire.encode(letter), maxlen=DLQ_MAXLEN, approximate=True)


async def dlq_streams(redis: RedisClient, keys: Keys) -> list[str]:
    """Every dead-letter stream in Redis, sorted."""
    group_head = keys.dlq("")[:-1]  # `<ns>:dlq:{`
    found = set()
    async for raw in redis.scan_iter(match=f"{keys.legacy_dlq}*", count=1000, _type="stream"):
        key = raw.decode() if isinstance(raw, bytes) else raw
        if key == keys.legacy_dlq or (key.startswith(group_head) and key.endswith("}")):
            found.add(key)
    return sorted(found)


async def dlq_length(redis: RedisClient, keys: Keys) -> int:
    return sum(await _lengths(redis, await dlq_streams(redis, keys)))


async def read_letters(redis: RedisClient, keys: Keys, count: int | None = None) -> list[Letter]:
    """The oldest `count` letters of all groups (every letter when None)."""
    streams = await dlq_streams(redis, keys)
    pipe = redis.pipeline(transaction=False)
    for stream in streams:
        pipe.xrange(stream, count=count)
    letters = [letter for entries in await pipe.execute() for letter in _decode(entries)]
    return sorted(letters, key=lambda letter: _stream_id(letter[0]))[:count]


async def letters_by_id(redis: RedisClient, keys: Keys, ids: list[str]) -> list[Letter]:
    """The letters of `ids` that exist, in the order asked (each in every group that has a letter of that id)."""
    streams = await dlq_streams(redis, keys)
    pipe = redis.pipeline(transaction=False)
    for i in ids:
        for stream in streams:
            pipe.xrange(stream, min=i, max=i)
    found = await pipe.execute()
    return [letter for entries in found for letter in _decode(entries)]


async def requeue(redis: RedisClient, keys: Keys, letter_id: str, group: str, item: WorkItem) -> None:
    """Put `item` back on `group`'s request stream and delete its letter, both or neither."""
    pipe = redis.pipeline(transaction=True)
    pipe.xadd(keys.requests(group), wire.encode(item))
    pipe.xdel(keys.dlq(group), letter_id)
    if not is_cluster(redis):  # older versions' letters (a cluster never had that stream)
        pipe.xdel(keys.legacy_dlq, letter_id)
    await pipe.execute()


async def purge(redis: RedisClient, keys: Keys) -> int:
    """Delete every letter; how many there were."""
    streams = await dlq_streams(redis, keys)
    pipe = redis.pipeline(transaction=False)
    for stream in streams:
        pipe.eval(PURGE, 1, stream)
    return sum(int(n) for n in await pipe.execute())


async def _lengths(redis: RedisClient, streams: list[str]) -> list[int]:
    pipe = redis.pipeline(transaction=False)
    for stream in streams:
        pipe.xlen(stream)
    return [int(n) for n in await pipe.execute()]


def _stream_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


def _decode(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> list[Letter]:
    return [(entry_id.decode(), DeadLetter.model_validate_json(fields[wire.FIELD])) for entry_id, fields in entries]
