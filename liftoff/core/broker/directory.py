"""The group directory: which consumer groups exist, and which of them a live reader serves.

A group is known when it was ever served (the `<ns>:groups` set, which readers and the supervisor add their groups
to), when a registered reader (loading, live or dead) names it, or when it is reserved (`reserved_consumers`: its
requests wait for a reader). Each reader is also reachable alone through its direct group `@<reader_id>`
(tokenizer endpoints); `direct=True` counts those in, while the views of consumer groups (the internal port, the
health report) leave every `@…` name out. A group is live when a live reader serves it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from redis.asyncio import Redis

from liftoff.core import registry
from liftoff.core.keys import Keys
from liftoff.core.registry import ReaderRecord


@dataclass(frozen=True, slots=True)
class Directory:
    records: list[ReaderRecord]  # the registry, as `registry.read_registry` classifies it
    served: frozenset[str]  # groups ever served
    reserved: frozenset[str]

    def known(self, direct: bool = False) -> frozenset[str]:
        """Served, registered and reserved groups; with `direct`, every registered reader's direct group too."""
        known = self.served | {g for r in self.records for g in r.info.consumer_groups} | self.reserved
        if direct:
            return known | {Keys.direct_group(r.reader_id) for r in self.records}
        return frozenset(g for g in known if not g.startswith("@"))

    def live(self, direct: bool = False) -> frozenset[str]:
        """Groups with a live reader; with `direct`, the direct groups of live readers too."""
        readers = [r for r in self.records if r.status == "live"]
        live = {g for r in readers for g in r.info.consumer_groups}
        if direct:
            live |= {Keys.direct_group(r.reader_id) for r in readers}
        return frozenset(live)


async def served_groups(redis: Redis, keys: Keys) -> list[str]:
    """The groups ever served, sorted."""
    return sorted(g.decode() if isinstance(g, bytes) else g for g in await redis.smembers(keys.groups))


async def read_directory(redis: Redis, keys: Keys, check_interval_s: int, reserved: Iterable[str]) -> Directory:
    """The registry and the served groups, read now."""
    records = await registry.read_registry(redis, keys, check_interval_s)
    return Directory(records, frozenset(await served_groups(redis, keys)), frozenset(reserved))
