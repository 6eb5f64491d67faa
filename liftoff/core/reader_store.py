"""The reader configurations one supervisor keeps running, shared between it and the management API.

The supervisor writes the readers of config.toml at start; `POST /reader` adds one, `DELETE /reader/{id}` removes
one. The supervisor reconciles its processes with this hash on every turn of its loop: a new entry starts a reader,
a removed entry is not restarted once its reader has drained and exited.
"""

from __future__ import annotations

import os

from redis.asyncio import Redis

from liftoff.core.keys import Keys
from liftoff.core.reader_config import REVEAL, ReaderConfig

SUPERVISOR_ENV = "LIFTOFF_SUPERVISOR_ID"  # set by the supervisor for its gateway workers


def supervisor_id() -> str | None:
    return os.environ.get(SUPERVISOR_ENV)


async def load(redis: Redis, keys: Keys, sup: str) -> dict[str, ReaderConfig]:
    raw = await redis.hgetall(keys.reader_configs(sup))
    return {k.decode(): ReaderConfig.model_validate_json(v) for k, v in raw.items()}


async def present(redis: Redis, keys: Keys, sup: str) -> bool:
    """Whether the supervisor's set is in Redis at all (a Redis that lost its data has none)."""
    return bool(await redis.exists(keys.reader_configs(sup)))


async def put(redis: Redis, keys: Keys, sup: str, config: ReaderConfig) -> bool:
    """Add a reader config under its reader_id; False when that id is taken."""
    assert config.reader_id
    return bool(await redis.hsetnx(keys.reader_configs(sup), config.reader_id, config.model_dump_json(context=REVEAL)))


async def replace_all(redis: Redis, keys: Keys, sup: str, configs: list[ReaderConfig]) -> None:
    pipe = redis.pipeline(transaction=True)
    pipe.delete(keys.reader_configs(sup))
    for config in configs:
        assert config.reader_id
        pipe.hset(keys.reader_configs(sup), config.reader_id, config.model_dump_json(context=REVEAL))
    await pipe.execute()


async def remove(redis: Redis, keys: Keys, sup: str, reader_id: str) -> bool:
    return bool(await redis.hdel(keys.reader_configs(sup), reader_id))
