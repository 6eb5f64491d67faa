"""The deployment controller: keeps each live deployment's replicas running, and scales them with the backlog.

The supervisor calls `reconcile()` on every turn of its loop; the work runs at most every `RECONCILE_EVERY_S`.
A supervisor controls only the deployments created through its own gateway (`Deployment.supervisor`), so that two
`liftoff serve` sharing one Redis never both start replicas of one deployment. Replicas are reader configs written
into this supervisor's reader store; the supervisor's own reconcile starts and restarts their processes.

Scaling, per deployment (`scalingConfiguration`; defaults threshold 0.75, up after 5 s, down after 30 s):

* utilisation = backlog (queued + in progress) / (live replicas x the replica's `max_batch_size`);
* at or over `scaleUpLoadThreshold` for `scaleUpDelay`, with every wanted replica live: one replica more, up to
  `maxReplicas` and to what the node holds (`cpu`, `memory`);
* when the backlog would fit under the threshold with one live replica fewer for `scaleDownDelay`: one fewer, down
  to `minReplicas`.

A change of `threadCount` (or of `readerConfig`) replaces replicas blue/green: the new ones start, and the old ones
drain once as many new ones are live as wanted.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from liftoff.core import reader_store, registry
from liftoff.core.broker import Backlog, read_backlogs
from liftoff.core.keys import Keys
from liftoff.core.reader_config import ReaderConfig
from liftoff.core.registry import ReaderRecord
from liftoff.core.settings import Settings
from liftoff.deployments import store as store
from liftoff.deployments.model import Deployment, node_replica_cap
from liftoff.deployments.store import ScaleState

log = logging.getLogger("liftoff.deployments")

RECONCILE_EVERY_S = 0.5
REPLICA_ID = re.compile(r"^ld-[0-9a-f]{8}-r\d+$")


@dataclass
class Pressure:
    high_since: float | None = None
    low_since: float | None = None


class DeploymentController:
    def __init__(self, redis: Redis, keys: Keys, supervisor_id: str, settings: Settings) -> None:
        self.redis = redis
        self.keys = keys
        self.supervisor = supervisor_id
        self.check_interval_s = settings.heartbeat_check_interval
        self._pressure: dict[str, Pressure] = {}
        self._next_run_s = 0.0

    async def reconcile(self) -> None:
        now = time.monotonic()
        if now < self._next_run_s:
            return
        self._next_run_s = now + RECONCILE_EVERY_S
        deployments = [d for d in await store.load_all(self.redis, self.keys) if d.supervisor == self.supervisor]
        configs = await reader_store.load(self.redis, self.keys, self.supervisor)
        records = {r.reader_id: r for r in await registry.read_registry(self.redis, self.keys,
                                                                        self.check_interval_s)}
        scale = await store.load_scale(self.redis, self.keys)
        backlogs = await read_backlogs(self.redis, self.keys, sorted({d.consumer_group for d in deployments}))
        for deployment in deployments:
            await self._reconcile_one(deployment, configs, records, scale.get(deployment.rid),
                                      backlogs[deployment.consumer_group], now)
        await self._stop_orphans(deployments, configs)
        for rid in set(self._pressure) - {d.rid for d in deployments}:
            del self._pressure[rid]

    async def _reconcile_one(self, d: Deployment, configs: dict[str, ReaderConfig],
                             records: dict[str, ReaderRecord], state: ScaleState | None, backlog: Backlog,
                             now: float) -> None:
        runtime = d.runtime
        old = state.model_copy() if state else None
        state = state or ScaleState(target=runtime.min_replicas)
        mine = {rid: c for rid, c in configs.items() if rid.startswith(d.reader_prefix)}
        live = sum(1 for rid in mine if rid in records and records[rid].status == "live")
        cap = node_replica_cap(runtime)
        state.target = min(max(state.target, runtime.min_replicas), cap)
        if d.disabled:
            wanted = 0
        else:
            state.target = self._autoscale(d, state.target, live, backlog, cap, now, _slots(d, mine, records))
            wanted = state.target

        desired = d.reader_config("").model_dump(exclude={"reader_id"})
        fresh = [rid for rid, c in mine.items() if c.model_dump(exclude={"reader_id"}) == desired]
        stale = [rid for rid in mine if rid not in fresh]
        # Keep the live ones and the oldest; drop the newest not-yet-live first.
        fresh.sort(key=lambda rid: (not _is_live(records, rid), store.replica_index(rid, d.reader_prefix)))
        remove = fresh[wanted:]
        for _ in range(wanted - len(fresh)):
            reader_id = f"{d.reader_prefix}{state.next_index}"
            state.next_index += 1
            await reader_store.put(self.redis, self.keys, self.supervisor, d.reader_config(reader_id))
            log.info("deployment %s: starting replica %s", d.rid, reader_id)
        live_fresh = sum(_is_live(records, rid) for rid in fresh[:wanted])
        if stale and live_fresh >= wanted:
            remove += stale
        if remove:
            log.info("deployment %s: stopping replicas %s", d.rid, remove)
            await store.stop_replicas(self.redis, self.keys, self.supervisor, remove)
        if state != old:
            await store.save_scale(self.redis, self.keys, d.rid, state)

    def _autoscale(self, d: Deployment, target: int, live: int, backlog: Backlog, cap: int, now: float,
                   slots: int) -> int:
        scaling = d.runtime.scaling
        threshold = scaling.scale_up_load_threshold
        up_delay_s, down_delay_s = scaling.delays_s()
        pressure = self._pressure.setdefault(d.rid, Pressure())
        load = backlog.total / (live * slots) if live else (float("inf") if backlog.total else 0.0)
        if load >= threshold and target < cap and live >= target:
            pressure.low_since = None
            pressure.high_since = pressure.high_since or now
            if now - pressure.high_since >= up_delay_s:
                pressure.high_since = None
                log.info("deployment %s: backlog %d (load %.2f) → %d replicas", d.rid, backlog.total, load,
                         target + 1)
                return target + 1
        elif target > d.runtime.min_replicas and backlog.total < threshold * max(0, live - 1) * slots:
            pressure.high_since = None
            pressure.low_since = pressure.low_since or now
            if now - pressure.low_since >= down_delay_s:
                pressure.low_since = None
                log.info("deployment %s: backlog %d → %d replicas", d.rid, backlog.total, target - 1)
                return target - 1
        else:
            pressure.high_since = pressure.low_since = None
        return target

    async def _stop_orphans(self, deployments: list[Deployment], configs: dict[str, ReaderConfig]) -> None:
        """Replicas whose deployment was deleted (the API stops them itself; this covers a failure midway)."""
        prefixes = tuple(d.reader_prefix for d in deployments)
        orphans = [rid for rid in configs if REPLICA_ID.match(rid) and not (prefixes and rid.startswith(prefixes))]
        if orphans:
            log.info("stopping replicas of deleted deployments: %s", orphans)
            await store.stop_replicas(self.redis, self.keys, self.supervisor, orphans)


def _is_live(records: dict[str, ReaderRecord], reader_id: str) -> bool:
    record = records.get(reader_id)
    return record is not None and record.status == "live"


def _slots(d: Deployment, mine: dict[str, ReaderConfig], records: dict[str, ReaderRecord]) -> int:
    """Batch slots per replica: the configured max_batch_size, or where it is "auto", what the live replicas
    resolved it to at load (they publish it in their registry entry)."""
    config = d.reader_config("")
    if config.max_batch_size != "auto":
        return config.batch_slots()
    resolved = [int(records[rid].info.config.get("max_batch_size", 0)) for rid in mine
                if rid in records and records[rid].status == "live"
                and isinstance(records[rid].info.config.get("max_batch_size"), int)]
    return max(1, round(sum(resolved) / len(resolved))) if resolved else config.batch_slots()
