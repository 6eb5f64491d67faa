"""The supervisor's hardware facts: detected by a real child process, published with a TTL, refreshed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import IO

import pytest
from redis.asyncio import Redis

from liftoff.control import facts_publisher
from liftoff.control.facts_publisher import FactsPublisher
from liftoff.core.keys import Keys
from liftoff.fit.facts import FACTS_TTL_S, HardwareFacts
from liftoff.fit.hardware import node_name


def test_start_detects_in_a_child_and_publishes(redis_url: str, namespace: str) -> None:
    async def go() -> None:
        redis = Redis.from_url(redis_url)
        keys = Keys(namespace)
        try:
            publisher = FactsPublisher(redis, keys, "sup-1")
            assert not publisher.due()  # nothing to refresh before the first detection
            specs = await publisher.start(dict(os.environ))
            assert specs.cpu_cores >= 1 and specs.total_ram_gb > 0 and not specs.gpus  # no GPU on this machine
            key = keys.hardware_facts(node_name())
            facts = HardwareFacts.model_validate_json(await redis.get(key))
            assert facts.node == specs and facts.publisher == "sup-1"
            await redis.pexpire(key, 1000)
            await publisher.refresh()  # the TTL is renewed and RAM read again
            assert await redis.pttl(key) > 1000
            assert HardwareFacts.model_validate_json(await redis.get(key)).published_s >= facts.published_s
        finally:
            await redis.aclose()

    asyncio.run(go())


def test_a_failed_detection_publishes_the_node_without_gpus(redis_url: str, namespace: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def garbage(env: dict[str, str], out: IO[bytes]) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", "print('no json here')"], stdout=out)

    monkeypatch.setattr(facts_publisher, "_spawn_detector", garbage)

    async def go() -> None:
        redis = Redis.from_url(redis_url)
        try:
            specs = await FactsPublisher(redis, Keys(namespace), "sup-2").start(dict(os.environ))
            assert specs.gpus == () and specs.cpu_cores >= 1
            pttl = await redis.pttl(Keys(namespace).hardware_facts(node_name()))
            assert 0 < pttl <= FACTS_TTL_S * 1000
        finally:
            await redis.aclose()

    asyncio.run(go())
