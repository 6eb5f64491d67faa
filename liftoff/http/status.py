"""The `/status` document (management port, reference schema) and the reader maps it shares with port 3000."""

from __future__ import annotations

from typing import Any

from liftoff.core import registry
from liftoff.core.redis_state import unreachable_reason
from liftoff.http.context import Gateway


async def reader_maps(gw: Gateway) -> dict[str, Any]:
    """`live_readers`, `loading_readers`, `dead_readers` (reader id → ReaderInfo) and `last_heartbeat`.

    Every reader of every host sharing the Redis is listed; each ReaderInfo carries, beside the reference's fields
    (which the schema leaves open to more), the `hostname` of the host that runs it (its `host_name` setting)."""
    d = gw.dispatcher
    records = await registry.read_registry(d.redis, d.keys, gw.settings.heartbeat_check_interval)
    maps: dict[str, Any] = {"live_readers": {}, "loading_readers": {}, "dead_readers": {}, "last_heartbeat": {}}
    for record in records:
        view = {**record.info.reference_view(), "hostname": record.info.hostname}
        if record.info.loras:
            view["loras"] = record.info.loras
        maps[f"{record.status}_readers"][record.reader_id] = view
        maps["last_heartbeat"][record.reader_id] = record.heartbeat_view()
    return maps


async def full_status(gw: Gateway) -> dict[str, Any]:
    """`status` is null when the registry cannot be read: the server runs, but cannot say what its readers do;
    `error` then says why (for the embedded Redis, the supervisor's account: restarting, crash-looping)."""
    try:
        maps = await reader_maps(gw)
    except Exception as exc:  # noqa: BLE001 — any failure to read Redis means "status unknown", never a 500
        return {"config": gw.settings.reference_config(), "status": None,
                "error": unreachable_reason(gw.settings.state_dir, exc)}
    status = {**maps, "reserved_consumers": gw.settings.reserved_groups()}
    return {"config": gw.settings.reference_config(), "status": status}
