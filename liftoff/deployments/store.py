"""Where live deployments live in Redis, and how a deployment's state is read from its replicas.

| key                           | type                         | written by          | meaning                         |
|-------------------------------|------------------------------|---------------------|---------------------------------|
| `keys.deployments`            | hash rid → Deployment JSON   | the management API  | the deployments and their specs |
| `keys.deployment_models`      | hash model rid → model name  | the management API  | which Liftoff model a rid means |
| `keys.deployment_scale`       | hash rid → ScaleState JSON   | the controller only | replica target, next replica no.|

Specs and scale are apart so that an update through the API and the autoscaler never overwrite each other.
Replicas are reader configs in the owning supervisor's reader store, with ids `<short>-r<n>`; `n` only grows, so a
replica being drained never shares its id with its replacement.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel
from redis.asyncio import Redis

from liftoff.core import reader_store, registry
from liftoff.core.keys import Keys
from liftoff.core.registry import ReaderRecord
from liftoff.deployments.model import Deployment


class ScaleState(BaseModel):
    target: int
    next_index: int = 0


async def load_all(redis: Redis, keys: Keys) -> list[Deployment]:
    raw = await redis.hgetall(keys.deployments)
    return sorted((Deployment.model_validate_json(v) for v in raw.values()), key=lambda d: d.rid)


async def get(redis: Redis, keys: Keys, rid: str) -> Deployment | None:
    raw = await redis.hget(keys.deployments, rid)
    return Deployment.model_validate_json(raw) if raw is not None else None


async def save(redis: Redis, keys: Keys, deployment: Deployment) -> None:
    await redis.hset(keys.deployments, deployment.rid, deployment.model_dump_json())


async def model_name(redis: Redis, keys: Keys, model_rid: str) -> str | None:
    raw = await redis.hget(keys.deployment_models, model_rid)
    return raw.decode() if raw is not None else None


async def register_model(redis: Redis, keys: Keys, model_rid: str, name: str) -> None:
    await redis.hset(keys.deployment_models, model_rid, name)


async def load_scale(redis: Redis, keys: Keys) -> dict[str, ScaleState]:
    raw = await redis.hgetall(keys.deployment_scale)
    return {k.decode(): ScaleState.model_validate_json(v) for k, v in raw.items()}


async def save_scale(redis: Redis, keys: Keys, rid: str, state: ScaleState) -> None:
    await redis.hset(keys.deployment_scale, rid, state.model_dump_json())


def replica_index(reader_id: str, prefix: str) -> int:
    tail = reader_id.removeprefix(prefix)
    return int(tail) if tail.isdigit() else -1


async def stop_replicas(redis: Redis, keys: Keys, supervisor: str, reader_ids: list[str]) -> None:
    """The removal sequence of `DELETE /reader`: forget the config (no restart), then ask the reader to drain."""
    for reader_id in reader_ids:
        await reader_store.remove(redis, keys, supervisor, reader_id)
        await registry.request_stop(redis, keys, reader_id)


async def delete(redis: Redis, keys: Keys, deployment: Deployment) -> list[str]:
    """Remove the deployment and stop its replicas now (the controller would too, a turn later)."""
    configs = await reader_store.load(redis, keys, deployment.supervisor)
    mine = sorted(r for r in configs if r.startswith(deployment.reader_prefix))
    pipe = redis.pipeline(transaction=True)
    pipe.hdel(keys.deployments, deployment.rid)
    pipe.hdel(keys.deployment_scale, deployment.rid)
    await pipe.execute()
    await stop_replicas(redis, keys, deployment.supervisor, mine)
    return mine


@dataclass(frozen=True, slots=True)
class Health:
    state: str  # STARTING, ACTIVE, DEGRADED, FAILED, DISABLED
    ready: bool  # at least one replica can serve
    reason: str | None
    live: int


def replicas_of(deployment: Deployment, records: list[ReaderRecord]) -> list[ReaderRecord]:
    return [r for r in records if r.reader_id.startswith(deployment.reader_prefix)]


def health(deployment: Deployment, target: int | None, replicas: list[ReaderRecord]) -> Health:
    """The deployment's state from its replicas' registry entries.

    ACTIVE: a replica is live and none is dead, or it scaled to zero on purpose. DEGRADED: some live, some dead.
    FAILED: none live or loading, and some dead (the reason is the first one's error). STARTING: otherwise.
    """
    live = sum(r.status == "live" for r in replicas)
    loading = sum(r.status == "loading" for r in replicas)
    dead = [r for r in replicas if r.status == "dead"]
    if deployment.disabled:
        return Health("DISABLED", live > 0, None, live)
    if live:
        return Health("DEGRADED" if dead else "ACTIVE", True, None, live)
    if dead and not loading:
        reason = dead[0].info.error or "its replicas stopped"
        return Health("FAILED", False, f"replica {dead[0].reader_id}: {reason}", 0)
    if target == 0:
        return Health("ACTIVE", False, None, 0)
    return Health("STARTING", False, None, 0)
