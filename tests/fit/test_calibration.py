"""Measurements in a real Redis replace the estimates for that model on this node."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from liftoff.core.calibration import MeasurementStore, record_measurement

from support.fit import (
    CPU_NODE,
    AppFactory,
    fit_app_fixture,  # noqa: F401 - the `fit_app` fixture
)

NAME = "Qwen/Qwen2.5-0.5B-Instruct"


def store(redis_url: str, key: str) -> MeasurementStore:
    return MeasurementStore(Redis.from_url(redis_url), key)


def test_record_and_read_back(redis_url: str, namespace: str) -> None:
    async def scenario() -> None:
        s = store(redis_url, f"{namespace}:fit:measurements")
        try:
            m = await record_measurement(s, NAME, 3 * 1024**3, 12.5, device="cpu", dtype="F32")
            assert m.load_memory_gb == 3.0
            got = await s.get(NAME.upper())  # names are case-insensitive
            assert got is not None and got.tokens_per_s == 12.5 and got.device == "cpu"
            assert set(await s.all()) == {NAME.lower()}
            await s.forget(NAME)
            assert await s.get(NAME) is None
        finally:
            await s.redis.aclose()

    asyncio.run(scenario())


def test_rejects_nonsense(redis_url: str, namespace: str) -> None:
    async def scenario() -> None:
        s = store(redis_url, f"{namespace}:fit:measurements")
        try:
            with pytest.raises(ValueError):
                await record_measurement(s, NAME, -1, 10.0)
        finally:
            await s.redis.aclose()

    asyncio.run(scenario())


def test_measured_values_replace_the_estimate(fit_app: AppFactory, redis_url: str, namespace: str) -> None:
    key = f"{namespace}:fit:measurements"

    async def record() -> None:
        s = store(redis_url, key)
        await record_measurement(s, NAME, 2 * 1024**3, 31.0, device="cpu", dtype="F32")
        # A GPU measurement says nothing about this CPU-only node.
        await record_measurement(s, "Qwen/Qwen2.5-1.5B-Instruct", 1024**3, 200.0, device="cuda:0")
        await s.redis.aclose()

    asyncio.run(record())
    client = fit_app(CPU_NODE, store=store(redis_url, key))
    (row,) = client.get(f"/api/v1/models/{NAME}").json()["models"]
    assert row["basis"] == {"memory": "measured", "tps": "measured"}
    assert row["memory_required_gb"] == 2.0 and row["estimated_tps"] == 31.0 and row["best_quant"] == "F32"
    assert "measured on this node" in row["notes"]
    (other,) = client.get("/api/v1/models/Qwen/Qwen2.5-1.5B-Instruct").json()["models"]
    assert other["basis"] == {"memory": "estimated", "tps": "estimated"}
    # The same GPU measurement applies when the node (here: what-if) has a GPU.
    gpu_row = client.get("/api/v1/models/Qwen/Qwen2.5-1.5B-Instruct", params={"vram_gb": 24}).json()["models"][0]
    assert gpu_row["basis"]["tps"] == "measured" and gpu_row["estimated_tps"] == 200.0


def test_redis_outage_falls_back_to_estimates(fit_app: AppFactory) -> None:
    dead = MeasurementStore(Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2), "x")
    response = fit_app(CPU_NODE, store=dead).get(f"/api/v1/models/{NAME}")
    assert response.status_code == 200
    assert response.json()["models"][0]["basis"]["memory"] == "estimated"
