"""Keys of groups that no longer exist: their request streams once they are empty, and their job counters.

A group exists while the directory knows it (`directory.Directory.known`, direct groups included). When its last
reader is deleted, its request stream stays behind (a reader's own direct stream is deleted when it deregisters,
see `liftoff.core.registry.deregister`); the supervisor calls `drop_orphan_streams` now and then, which deletes such
a stream, with its consumer group, only if it holds no entry: the length check and the delete are one script, so a
request queued in between is never lost. A stream with entries stays until they are answered, withdrawn or
dead-lettered. The group's job counters are folded into the totals of groups gone (GETDEL, then INCRBY: a count
written in between makes the counter anew, to be folded next time), so that the job totals never go down.
Dead letters stay: they are what is left of a group that failed.
"""

from __future__ import annotations

from collections.abc import Collection

from liftoff.core.keys import Keys
from liftoff.core.redis_client import RedisClient

# KEYS: a request stream. Deletes it when it holds no entry; 1 when it did.
DROP_IF_EMPTY = """
if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('XLEN', KEYS[1]) == 0 then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


async def request_stream_groups(redis: RedisClient, keys: Keys) -> dict[str, str]:
    """Group → request stream key, for every request stream in Redis (SCAN, on every master of a cluster: never
    blocks the server)."""
    head = keys.requests("")[:-1]  # `<ns>:requests:{`
    found = {}
    async for raw in redis.scan_iter(match=keys.requests("*"), count=1000, _type="stream"):
        key = raw.decode() if isinstance(raw, bytes) else raw
        if key.startswith(head) and key.endswith("}"):
            found[key[len(head):-1]] = key
    return found


async def drop_orphan_streams(redis: RedisClient, keys: Keys, known: Collection[str]) -> list[str]:
    """Delete the empty request streams of groups not in `known`, and fold their counters into the totals; the
    groups whose streams went. The set of groups ever served that older versions kept (`<ns>:groups`) goes too:
    nothing reads it any more."""
    orphans = {g: k for g, k in (await request_stream_groups(redis, keys)).items() if g not in known}
    pipe = redis.pipeline(transaction=False)
    pipe.delete(keys.groups)
    for key in orphans.values():
        pipe.eval(DROP_IF_EMPTY, 1, key)
    dropped = (await pipe.execute())[1:]
    await fold_counters(redis, keys, known)
    return sorted(g for g, gone in zip(orphans, dropped, strict=True) if gone)


async def fold_counters(redis: RedisClient, keys: Keys, known: Collection[str]) -> None:
    """Move the job counts of groups not in `known` into the totals of groups gone."""
    head = keys.stat("", "")[: -len("}:")]  # `<ns>:stats:{`
    counters: list[tuple[str, str]] = []  # (counter key, counter name)
    async for raw in redis.scan_iter(match=f"{head}*", count=1000, _type="string"):
        key = raw.decode() if isinstance(raw, bytes) else raw
        group, sep, counter = key[len(head):].rpartition("}:")
        if sep and group not in known:
            counters.append((key, counter))
    if not counters:
        return
    pipe = redis.pipeline(transaction=False)
    for key, _ in counters:
        pipe.getdel(key)
    values = await pipe.execute()
    pipe = redis.pipeline(transaction=False)
    for (_, counter), value in zip(counters, values, strict=True):
        if value:
            pipe.incrby(keys.total(counter), int(value))
    await pipe.execute()

