"""`GET /api/health/status`: components, jobs, consumers and processes, under load, with a reader killed and
with Redis down."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from pathlib import Path
from typing import Any

import httpx
import orjson

from liftoff.control.embedded_redis import EmbeddedRedis

from support.servers import Server, ServerFactory, start_reader, wait_for

WORDS = " ".join(f"w{i}" for i in range(9))  # ten tokens
REPORT = "/api/health/status?refresh=true"


def report(server: Server) -> tuple[int, dict[str, Any]]:
    r = httpx.get(server.mgmt + REPORT, timeout=10)
    return r.status_code, r.json()


def reader(server: Server, redis_url: str, tmp: Path, reader_id: str, delay_ms: int) -> Any:
    config = orjson.dumps({"model_name": "echo", "echo_token_delay_ms": delay_ms, "max_batch_size": 4}).decode()
    return start_reader(redis_url, server.settings["redis_namespace"], tmp, "--config-json", config,
                        "--reader-id", reader_id, env={"LIFTOFF_MAX_DELIVERIES": "1"})


async def fire(url: str, texts: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=len(texts))) as c:
        return await asyncio.gather(*(c.post("/generate", json={"text": t}) for t in texts))


def test_report_under_load_with_a_reader_killed(make_server: ServerFactory, redis_url: str, tmp_path: Path) -> None:
    server = make_server(readers=[], wait_healthy=False, reserved_consumers="primary", max_deliveries=1,
                         request_timeout_s=60.0)
    first = reader(server, redis_url, tmp_path, "doomed", delay_ms=300)
    server.wait_healthy(30)
    results: list[httpx.Response] = []
    worker = threading.Thread(target=lambda: results.extend(asyncio.run(fire(server.url, [f"h{i} {WORDS}"
                                                                                          for i in range(6)]))))
    worker.start()
    seen: dict[str, Any] = {}

    def busy() -> bool:  # one report in which every collector has seen all six requests arrive
        seen.clear()
        seen.update(report(server)[1])
        row = next((c for c in seen.get("consumers", {}).get("consumers", []) if c["name"] == "primary"), None)
        stream = next((s for s in seen.get("streams", []) if s["name"].endswith("{primary}")), None)
        return (row is not None and (row["ack_pending"], row["pending"]) == (4, 2)
                and stream is not None and stream["messages"] == 6)

    wait_for(busy, 15, "four in progress, two queued", server)
    assert seen["status"] == "ok" and seen["jobs"]["processing"] == 4 and seen["jobs"]["unprocessed"] == 2
    assert seen["agents"]["total"] == 1 and seen["agents"]["ready"] == 1
    agent = seen["agents"]["agents"][0]
    assert "reader=doomed" in agent["labels"] and agent["registered"].endswith(" ago")
    primary = next(c for c in seen["consumers"]["consumers"] if c["name"] == "primary")
    assert primary["redelivered"] == 0 and [m["ack_pending"] for m in primary["readers"]] == [4]
    stream = next(s for s in seen["streams"] if s["name"].endswith("{primary}"))
    assert stream["messages"] == 6 and stream["consumers"] == 1 and stream["bytes"] > 0

    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    # The four it held were delivered once, the limit: dead-lettered. The two queued wait (reserved group).
    wait_for(lambda: report(server)[1].get("jobs", {}).get("dlq") == 4, 30, "four dead letters", server)
    code, body = report(server)
    assert code == 503 and body["status"] == "degraded"  # no reader can serve
    assert body["components"]["readers"]["status"] == "error" and body["components"]["redis"]["status"] == "ok"
    assert body["jobs"]["unprocessed"] == 2 and body["jobs"]["processing"] == 0
    assert body["agents"] == {**body["agents"], "total": 1, "ready": 0}

    second = reader(server, redis_url, tmp_path, "fresh", delay_ms=1)
    try:
        worker.join(60)
        assert sorted(r.status_code for r in results) == [200, 200, 503, 503, 503, 503]
        wait_for(lambda: report(server)[0] == 200, 15, "report ok again", server)
        code, body = report(server)
        assert body["status"] == "ok"
        assert body["jobs"] == {"total": 6, "unprocessed": 0, "processing": 0, "completed": 2, "failed": 0, "dlq": 4}
        assert body["agents"]["total"] == 2 and body["agents"]["ready"] == 1
        rows = {(r["type"], r.get("name")): r for r in body["registry"]}
        fresh = rows[("reader", "fresh")]
        assert fresh["status"] == "Ready" and fresh["mem_bytes"] > 0 and fresh["cpu_percent"] is not None
        assert rows[("reader", "doomed")]["status"] == "Dead"
        kinds = {r["type"] for r in body["registry"]}
        assert {"gateway", "gateway-worker", "supervisor", "reader"} <= kinds
        assert all(set(r["conditions"]) <= {"MemoryPressure", "HighLoad", "DiskPressure"} for r in body["registry"])
        buckets = {b["name"]: b for b in body["kv_buckets"]}
        assert buckets[f"{server.settings['redis_namespace']}:readers"]["keys"] == 2
    finally:
        second.terminate()
        second.wait(20)


def test_report_is_503_while_redis_is_down(make_server: ServerFactory, tmp_path: Path) -> None:
    own = EmbeddedRedis(tmp_path / "own-redis", appendonly=True)
    own.start()
    try:
        server = make_server(redis_url=own.url, reserved_consumers="")
        code, body = report(server)
        assert code == 200, body
        assert body["status"] == "ok" and body["version"] and body["uptime"]
        assert {k: c["status"] for k, c in body["components"].items()} == {
            "gateway": "ok", "redis": "ok", "readers": "ok", "supervisor": "ok"}
        assert body["redis"]["version"].count(".") == 2 and body["redis"]["url"] == own.url
        assert {"streams", "kv_buckets", "jobs", "agents", "consumers", "registry"} <= set(body)
        own.kill()
        wait_for(lambda: report(server)[0] == 503, 15, "503 while Redis is down", server)
        code, body = report(server)
        assert body["status"] == "degraded" and body["components"]["redis"]["status"] == "error"
        assert body["components"]["redis"]["error"] and body["components"]["gateway"]["status"] == "ok"
        assert "jobs" not in body and body["version"] and body["uptime"]  # failed collectors are left out
        own.start()
        wait_for(lambda: report(server)[0] == 200, 30, "200 after Redis is back", server)
        assert report(server)[1]["jobs"]["total"] >= 0
    finally:
        own.stop()
