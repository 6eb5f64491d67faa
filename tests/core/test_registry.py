"""Reader status from the registry entry and the heartbeat key, announced readers included."""

from __future__ import annotations

import time

from liftoff.core.registry import STARTING_GRACE_S, classify
from liftoff.core.wire import ReaderInfo


def info(**fields: object) -> ReaderInfo:
    base = {"consumer_groups": ["primary"], "consumer_name": "primary-0", "device": "cpu", "model_name": "echo",
            "model_type": "generation", "pids": []}
    return ReaderInfo.model_validate({**base, **fields})


def test_an_announced_reader_is_loading_until_it_beats_then_as_it_says() -> None:
    announced = info(state="loading")
    assert classify(announced, None, never_dead=False) == "loading"
    assert classify(info(state="loading", registered_s=time.time() - STARTING_GRACE_S - 1), None, False) == "dead"
    beating = info(state="live", last_heartbeat_s=time.time())
    assert classify(beating, b"1", never_dead=False) == "live"
    assert classify(info(state="loading", last_heartbeat_s=time.time()), None, never_dead=False) == "dead"
    assert classify(info(state="failed"), b"1", never_dead=False) == "dead"


def test_announce_lists_a_reader_as_loading_until_it_registers(redis_url: str) -> None:
    import asyncio

    from liftoff.core.keys import Keys
    from liftoff.core.redis_client import connect
    from liftoff.core.registry import announce_starting, read_registry, write_heartbeat

    async def scenario() -> list[str]:
        redis, keys = connect(redis_url), Keys("announce-test")
        try:
            await announce_starting(redis, keys, info(reader_id="r"))
            seen = [r.status for r in await read_registry(redis, keys, 1)]
            await write_heartbeat(redis, keys, "r", info(reader_id="r", state="live"), 1)
            seen += [r.status for r in await read_registry(redis, keys, 1)]
            await announce_starting(redis, keys, info(reader_id="r"))  # beating: its own entry stands
            seen += [r.status for r in await read_registry(redis, keys, 1)]
            return seen
        finally:
            await redis.aclose()

    assert asyncio.run(scenario()) == ["loading", "live", "live"]
