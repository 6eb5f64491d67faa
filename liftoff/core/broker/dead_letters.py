"""The dead-letter stream `<ns>:dlq`: requests that exhausted their deliveries, each a `DeadLetter` with its reason.

Letters are written by the reclaim sweep (`broker.reclaim`), in the same transaction that answers the client and
removes the request entry; the management API lists, retries (back onto the group's request stream, in one
MULTI/EXEC with the letter's deletion) and purges them. The stream is capped at about `DLQ_MAXLEN` letters.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from liftoff.core import wire
from liftoff.core.keys import Keys
from liftoff.core.wire import DeadLetter, WorkItem

DLQ_MAXLEN = 100_000

Letter = tuple[str, DeadLetter]  # (letter id, letter)


def add_letter(pipe: Pipeline, keys: Keys, letter: DeadLetter) -> None:
    """Queue the XADD of `letter` on `pipe` (the caller's transaction)."""
    pipe.xadd(keys.dlq, wire.encode(letter), maxlen=DLQ_MAXLEN, approximate=True)


async def dlq_length(redis: Redis, keys: Keys) -> int:
    return int(await redis.xlen(keys.dlq))


async def read_letters(redis: Redis, keys: Keys, count: int | None = None) -> list[Letter]:
    """The oldest `count` letters (every letter when None)."""
    return _decode(await redis.xrange(keys.dlq, count=count))


async def letters_by_id(redis: Redis, keys: Keys, ids: list[str]) -> list[Letter]:
    """The letters of `ids` that exist, in the order asked."""
    return [letter for i in ids for letter in _decode(await redis.xrange(keys.dlq, min=i, max=i))]


async def requeue(redis: Redis, keys: Keys, letter_id: str, group: str, item: WorkItem) -> None:
    """Put `item` back on `group`'s request stream and delete its letter, both or neither."""
    pipe = redis.pipeline(transaction=True)
    pipe.xadd(keys.requests(group), wire.encode(item))
    pipe.xdel(keys.dlq, letter_id)
    await pipe.execute()


async def purge(redis: Redis, keys: Keys) -> int:
    """Delete every letter; how many there were."""
    pipe = redis.pipeline(transaction=True)
    pipe.xlen(keys.dlq)
    pipe.delete(keys.dlq)
    total, _ = await pipe.execute()
    return int(total)


def _decode(entries: list[tuple[bytes, dict[bytes, bytes]]]) -> list[Letter]:
    return [(entry_id.decode(), DeadLetter.model_validate_json(fields[wire.FIELD])) for entry_id, fields in entries]
