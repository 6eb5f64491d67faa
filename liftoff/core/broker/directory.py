"""The group directory: which consumer groups exist, and which of them a live reader serves.

A group is known while a reader in the registry (loading, live or dead, until it deregisters or is pruned) names it,
or while it is reserved (`reserved_consumers`: its requests wait for a reader). Configured and deployed readers are
in the registry from the moment their supervisor announces them, so their groups are known too; nothing else keeps
a group alive, so a group whose last reader was deleted stops being listed (there is no set of groups ever served
to grow for ever). Each reader is also reachable alone through its direct group `@<reader_id>` (tokenizer
endpoints); `direct=True` counts those in, while the views of consumer groups (the internal port, the health
report) leave every `@…` name out. A group is live when a live reader serves it.
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
    reserved: frozenset[str]

    def known(self, direct: bool = False) -> frozenset[str]:
        """Registered and reserved groups; with `direct`, every registered reader's direct group too."""
        known = {g for r in self.records for g in r.info.consumer_groups} | self.reserved
        if direct:
            return frozenset(known | {Keys.direct_group(r.reader_id) for r in self.records})
        return frozenset(g for g in known if not g.startswith("@"))

    def live(self, direct: bool = False) -> frozenset[str]:
        """Groups with a live reader; with `direct`, the direct groups of live readers too."""
        readers = [r for r in self.records if r.status == "live"]
        live = {g for r in readers for g in r.info.consumer_groups}
        if direct:
            live |= {Keys.direct_group(r.reader_id) for r in readers}
        return frozenset(live)


async def read_directory(redis: Redis, keys: Keys, check_interval_s: int, reserved: Iterable[str]) -> Directory:
    """The registry, read now, and the reserved groups."""
    return Directory(await registry.read_registry(redis, keys, check_interval_s), frozenset(reserved))
