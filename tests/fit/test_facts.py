"""The fit routes rank on the hardware facts a supervisor published in Redis, and say so when there are none."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from types import SimpleNamespace

import pytest
import redis
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.testclient import TestClient

from liftoff.core.keys import Keys
from liftoff.core.reader_config import ReaderConfig
from liftoff.fit.auto_device import place_reader
from liftoff.fit.facts import FACTS_TTL_S, FactsUnavailable, FixedFacts, HardwareFacts, PublishedFacts, publish
from liftoff.fit.hardware import SystemSpecs, node_name, node_os
from liftoff.management.fit_api import fit_health_route, fit_routes

from support.fit import CPU_NODE, H100_NODE

FIT_ROUTES = ["/api/v1/system", "/api/v1/models", "/api/v1/models/top", "/api/v1/models/llama"]


def seed(redis_url: str, namespace: str, specs: SystemSpecs) -> None:
    async def go() -> None:
        client = Redis.from_url(redis_url)
        try:
            await publish(client, Keys(namespace), specs, "test-supervisor")
        finally:
            await client.aclose()

    asyncio.run(go())


def published_app(redis_url: str, namespace: str, node: str) -> TestClient:
    """The fit routes as a gateway worker mounts them: facts from the worker's Redis, for its node."""
    dispatcher = SimpleNamespace(redis=Redis.from_url(redis_url), keys=Keys(namespace))
    gw = SimpleNamespace(settings=SimpleNamespace(repository_path="/nonexistent"), dispatcher=dispatcher)
    routes = [*fit_routes(gw, overlay_path=""), fit_health_route(lambda: node)]  # type: ignore[arg-type]
    return TestClient(Starlette(routes=routes))


def test_ranking_runs_on_published_facts(redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSTNAME", "gpu-node")  # this process plays a gateway worker on the published node
    seed(redis_url, namespace, H100_NODE)
    params = {"use_case": "chat", "limit": "10"}
    with TestClient(Starlette(routes=fit_routes(SimpleNamespace(  # type: ignore[arg-type]
            settings=SimpleNamespace(repository_path="/nonexistent")), facts=FixedFacts(H100_NODE),
            overlay_path=""))) as fixed:
        expected = fixed.get("/api/v1/models/top", params=params).json()
    with published_app(redis_url, namespace, "gpu-node") as client:
        system = client.get("/api/v1/system").json()
        assert system["node"]["name"] == "gpu-node"
        assert system["system"]["gpu_name"] == "NVIDIA H100 80GB HBM3" and system["system"]["gpu_count"] == 2
        top = client.get("/api/v1/models/top", params=params).json()
        # This machine has no GPU: GPU run modes can only come from the published facts.
        assert top == expected and {m["run_mode"] for m in top["models"]} <= {"gpu", "tensor_parallel"}
        # The supervisor's next refresh is what the next request ranks on; no worker restart, no detection.
        seed(redis_url, namespace, replace(CPU_NODE, node_name="gpu-node"))
        again = client.get("/api/v1/models/top", params=params).json()
        assert {m["run_mode"] for m in again["models"]} == {"cpu_only"}
        assert client.get("/api/v1/system").json()["system"]["has_gpu"] is False


def test_fit_routes_answer_503_until_facts_are_published(redis_url: str, namespace: str) -> None:
    with published_app(redis_url, namespace, "lonely-node") as client:
        for path in FIT_ROUTES:
            r = client.get(path)
            assert r.status_code == 503, (path, r.text)
            assert r.headers["retry-after"].isdigit()
            body = r.json()
            assert set(body) == {"error"} and "not yet published" in body["error"] and "liftoff serve" in body["error"]
        # Liveness needs no facts, and a bad query is still the caller's mistake first.
        assert client.get("/health").json() == {"status": "ok", "node": {"name": "lonely-node", "os": node_os()}}
        assert client.get("/api/v1/models", params={"min_fit": "great"}).status_code == 400


def test_unreadable_facts_are_a_503_too(redis_url: str, namespace: str) -> None:
    redis.Redis.from_url(redis_url).set(Keys(namespace).hardware_facts(node_name()), b'{"node": 1}')
    with published_app(redis_url, namespace, "odd-node") as client:
        r = client.get("/api/v1/models")
        assert r.status_code == 503 and "unreadable" in r.json()["error"]


def test_published_facts_round_trip_and_expire(redis_url: str, namespace: str) -> None:
    seed(redis_url, namespace, H100_NODE)
    sync = redis.Redis.from_url(redis_url)
    key = Keys(namespace).hardware_facts("gpu-node")
    facts = HardwareFacts.model_validate_json(sync.get(key))  # type: ignore[arg-type]
    assert facts.node == H100_NODE and facts.publisher == "test-supervisor" and facts.published_s > 0
    assert 0 < sync.pttl(key) <= FACTS_TTL_S * 1000


def test_auto_placement_reads_the_facts_only_when_it_places(redis_url: str, namespace: str) -> None:
    async def go() -> None:
        client = Redis.from_url(redis_url)
        missing = PublishedFacts(client, Keys(namespace), "no-such-node")
        try:
            fixed = ReaderConfig(model_name="Qwen/Qwen2.5-0.5B-Instruct", device="cpu")
            assert await place_reader(fixed, [], "/nonexistent", facts=missing) == fixed
            auto = fixed.model_copy(update={"device": "auto"})
            with pytest.raises(FactsUnavailable):
                await place_reader(auto, [], "/nonexistent", facts=missing)
            placed = await place_reader(auto, [], "/nonexistent", facts=FixedFacts(H100_NODE))
            assert placed.device.startswith("cuda")
        finally:
            await client.aclose()

    asyncio.run(go())
