"""Measured memory and speed of readers that actually ran, kept in one Redis hash per node.

The peer tool's users mostly complain that estimates are off (VRAM mis-detected, speed off by 3x). Liftoff runs the
models itself, so a reader reports what it used after loading and the tokens/s it reached; those figures replace
the estimate for that model on this node and are reported with `basis: measured`.

Hash layout (the key name comes from the caller, so that `liftoff.core.keys` stays the one place that names keys):
field = model name, lower-cased; value = Measurement JSON.
"""

from __future__ import annotations

import time
from typing import Protocol

import orjson
from pydantic import BaseModel, Field
from redis.asyncio import Redis


class Measurement(BaseModel):
    model_name: str
    load_memory_bytes: int = Field(ge=0)
    tokens_per_s: float | None = Field(default=None, ge=0)
    device: str | None = None  # "cpu", "cuda", "cuda:N"; None: applies whatever the device
    dtype: str | None = None  # the quantisation label the reader loaded, e.g. "F32", "BF16"
    recorded_at_s: float = Field(default_factory=time.time)

    @property
    def load_memory_gb(self) -> float:
        return self.load_memory_bytes / 1024**3

    def applies_to(self, run_mode: str) -> bool:
        """A CPU measurement says nothing about a GPU run and the other way round."""
        if self.device is None:
            return True
        on_cpu = self.device == "cpu"
        return on_cpu == (run_mode == "cpu_only")


class MeasurementSource(Protocol):
    async def all(self) -> dict[str, Measurement]: ...


class NoMeasurements:
    """The source for nodes (and tests) that keep no measurements."""

    async def all(self) -> dict[str, Measurement]:
        return {}


class MeasurementStore:
    """Measurements in a Redis hash."""

    def __init__(self, redis: Redis, key: str) -> None:
        self.redis = redis
        self.key = key

    async def put(self, measurement: Measurement) -> None:
        await self.redis.hset(self.key, measurement.model_name.lower(), orjson.dumps(measurement.model_dump()))

    async def get(self, model_name: str) -> Measurement | None:
        raw = await self.redis.hget(self.key, model_name.lower())
        return None if raw is None else Measurement.model_validate(orjson.loads(raw))

    async def all(self) -> dict[str, Measurement]:
        raw = await self.redis.hgetall(self.key)
        found: dict[str, Measurement] = {}
        for field, value in raw.items():
            name = field.decode() if isinstance(field, bytes) else field
            try:
                found[name] = Measurement.model_validate(orjson.loads(value))
            except ValueError:
                continue  # a value written by an older or foreign version must not break the fit report
        return found

    async def forget(self, model_name: str) -> None:
        await self.redis.hdel(self.key, model_name.lower())


async def record_measurement(store: MeasurementStore, model_name: str, load_memory_bytes: int,
                             tokens_per_s: float | None, device: str | None = None,
                             dtype: str | None = None) -> Measurement:
    """Record what a reader of `model_name` used after loading and the decode speed it reached."""
    measurement = Measurement(model_name=model_name, load_memory_bytes=load_memory_bytes,
                              tokens_per_s=tokens_per_s, device=device, dtype=dtype)
    await store.put(measurement)
    return measurement
