"""Which LoRA adapters a consumer group's live readers serve, read from the registry, where each reader publishes
its own (`ReaderInfo.loras`, updated before the management API's add or remove answers).

A request naming an adapter that none of the group's live readers has is answered 404 here, naming the ones they
have, before it is queued. A group with no live reader is left to the dispatcher (503, or a wait for a reserved
group). A read serves for REGISTRY_TTL_S; a name it does not know gets a fresh read before it is refused.
"""

from __future__ import annotations

import time
import weakref

from liftoff.core import registry
from liftoff.core.errors import NotFound
from liftoff.http.context import Gateway

REGISTRY_TTL_S = 1.0

_reads: weakref.WeakKeyDictionary[object, tuple[float, dict[str, set[str]]]] = weakref.WeakKeyDictionary()


async def served(gw: Gateway, fresh: bool = False) -> dict[str, set[str]]:
    """Consumer group → the adapters of its live readers (every live group, an empty set when none has any)."""
    d = gw.dispatcher
    now = time.monotonic()
    cached = _reads.get(d)
    if cached is not None and not fresh and now - cached[0] <= REGISTRY_TTL_S:
        return cached[1]
    groups: dict[str, set[str]] = {}
    for record in await registry.read_registry(d.redis, d.keys, gw.settings.heartbeat_check_interval):
        if record.status == "live":
            for group in record.info.consumer_groups:
                groups.setdefault(group, set()).update(a["name"] for a in record.info.loras)
    _reads[d] = (now, groups)
    return groups


async def require(gw: Gateway, group: str, adapter: str) -> None:
    """404 unless a live reader of `group` serves `adapter` (or the group has no live reader to ask)."""
    groups = await served(gw)
    if adapter in groups.get(group, ()):
        return
    groups = await served(gw, fresh=True)
    if group in groups and adapter not in groups[group]:
        known = sorted(groups[group])
        raise NotFound(f"lora_id: consumer group {group!r} has no LoRA adapter {adapter!r}; its adapters: {known}",
                       {"known_adapters": known})
