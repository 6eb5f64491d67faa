"""The internal port: backlog per consumer group for autoscalers."""

from __future__ import annotations

import asyncio
import threading

import httpx

from support.servers import ServerFactory, wait_for

WORDS = " ".join(f"w{i}" for i in range(4))  # five tokens


async def fire(url: str, texts: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=len(texts))) as c:
        return await asyncio.gather(*(c.post("/generate", json={"text": t}) for t in texts))


def test_consumer_groups_show_queued_and_in_progress_work(make_server: ServerFactory) -> None:
    server = make_server(readers=[{"model_name": "echo", "reader_id": "slow", "max_batch_size": 1,
                                   "echo_token_delay_ms": 100}], reserved_consumers="waiting")
    internal = server.port_url("internal_port")
    results: list[httpx.Response] = []
    worker = threading.Thread(target=lambda: results.extend(asyncio.run(fire(server.url, [f"i{n} {WORDS}"
                                                                                          for n in range(4)]))))
    worker.start()
    seen: dict[str, int] = {}

    def busy() -> bool:
        row = httpx.get(internal + "/consumer_groups/primary", timeout=5).json()
        seen.update(row)
        return row["in_progress"] == 1 and row["queued"] >= 1

    wait_for(busy, 10, "primary busy with a backlog", server)
    assert seen["live_readers"] == 1 and seen["reserved"] is False
    assert seen["backlog"] == seen["queued"] + seen["in_progress"]
    listing = httpx.get(internal + "/consumer_groups", timeout=5).json()["consumer_groups"]
    by_name = {row["name"]: row for row in listing}
    assert by_name["waiting"] == {"name": "waiting", "queued": 0, "in_progress": 0, "backlog": 0, "live_readers": 0,
                                  "loading_readers": 0, "reserved": True}
    assert not any(name.startswith("@") for name in by_name)  # direct reader groups are not for autoscalers
    missing = httpx.get(internal + "/consumer_groups/nope", timeout=5)
    assert missing.status_code == 404
    assert missing.json()["details"]["known_groups"] == ["primary", "waiting"]
    worker.join(60)
    assert [r.status_code for r in results] == [200] * 4
    wait_for(lambda: httpx.get(internal + "/consumer_groups/primary", timeout=5).json()["backlog"] == 0, 10,
             "primary drained", server)
