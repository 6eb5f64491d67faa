"""Prometheus metrics: route-template labels, the reader hooks, and `GET /metrics` summing two gateway workers and a
reader on a running server."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from liftoff.core import metrics
from liftoff.deployments.model import DEPLOYMENT_TYPE, mint_rid
from liftoff.http.metrics_middleware import HttpMetrics, starlette_routes
from liftoff.http.types import Receive, Scope, Send

from support.servers import Server


def count(path: str, status: str) -> float:
    return REGISTRY.get_sample_value("http_requests_total", {"path": path, "status": status}) or 0.0


def test_requests_are_labelled_by_route_template() -> None:
    async def item(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.path_params["item_id"])

    async def boom(request: Request) -> PlainTextResponse:
        raise RuntimeError("a bug")

    inner = Starlette(routes=[Route("/items/{item_id}", item), Route("/boom", boom),
                              Mount("/shelf", routes=[Route("/{item_id}", item)])])

    async def front(scope: Scope, receive: Receive, send: Send) -> None:  # a pure-ASGI app before the router
        if scope["path"] == "/fast":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        await inner(scope, receive, send)

    client = TestClient(HttpMetrics(front, starlette_routes(inner), paths=["/fast"]), raise_server_exceptions=False)
    before = {k: count(*k) for k in [("/items/{item_id}", "200"), ("/fast", "200"), ("unmatched", "404"),
                                     ("/items/{item_id}", "405"), ("/boom", "500"), ("/shelf/{item_id}", "200"),
                                     ("/shelf", "404")]}
    for n in range(3):
        assert client.get(f"/items/{n}").text == str(n)
    client.get("/fast")
    client.get("/nothing/here")
    client.post("/items/1")
    client.get("/boom")
    client.get("/shelf/7")
    client.get("/shelf/7/8")
    after = {k: count(*k) - v for k, v in before.items()}
    assert after == {("/items/{item_id}", "200"): 3, ("/fast", "200"): 1, ("unmatched", "404"): 1,
                     ("/items/{item_id}", "405"): 1, ("/boom", "500"): 1, ("/shelf/{item_id}", "200"): 1,
                     ("/shelf", "404"): 1}
    assert count("/items/0", "200") == 0  # raw paths never become labels
    assert REGISTRY.get_sample_value("http_requests_duration_seconds_count",
                                     {"path": "/fast", "status": "200"}) is not None


def test_reader_hooks() -> None:
    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(name, {"consumer_group": "hooks"}) or 0.0

    metrics.observe_batch("hooks", 5)
    metrics.observe_job_metadata("hooks", [
        {"queue_ms": 30, "time_to_first_token_ms": 12, "generated_tokens": 4},
        {"queue_ms": 30, "time_to_first_token_ms": 9, "generated_tokens": 6},
    ])
    metrics.observe_job("hooks", 0.5, batch_size=3)  # an embedding: nothing generated
    assert sample("generate_batch_size_sum") == 5
    assert sample("queue_time_seconds_count") == 2 and sample("queue_time_seconds_sum") == pytest.approx(0.53)
    assert sample("user_batch_size_sum") == 5
    assert sample("time_to_first_token_seconds_count") == 1
    assert sample("time_to_first_token_seconds_sum") == pytest.approx(0.009)
    assert sample("generate_tokens_total") == 10


# --- on a running server with two gateway workers --------------------------------------------------------------------
def scrape(server: Server) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = httpx.get(server.mgmt + "/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def per_process_generate_counts(metrics_dir: Path) -> dict[int, float]:
    """/generate 200s as each process's own file holds them."""
    counts = {}
    for path in metrics_dir.glob("counter_*.db"):
        pid = int(re.sub(r"\D", "", path.stem))
        for family in MultiProcessCollector.merge([str(path)]):
            for s in family.samples:
                if s.name == "http_requests_total" and s.labels == {"path": "/generate", "status": "200"}:
                    counts[pid] = s.value
    return counts


def test_metrics_sum_every_gateway_worker_and_reader(make_server: Any) -> None:
    server = make_server(workers=2, readers=[{"model_name": "echo", "consumer_group": "primary",
                                              "reader_id": "primary-0", "echo_token_delay_ms": 100}])
    metrics_dir = Path(server.settings["state_dir"]) / "metrics"
    assert metrics_dir.is_dir()

    def generate(_: int) -> int:
        # One connection per request, all at once: the two workers accept them between them.
        return httpx.post(server.url + "/generate", json={"text": "one two three"}, timeout=30).status_code

    rounds = 0
    while rounds < 20:  # a worker may win every accept of one round; the next round gives the other its turn
        with ThreadPoolExecutor(7) as pool:
            assert list(pool.map(generate, range(7))) == [200] * 7
        rounds += 1
        if len(per_process_generate_counts(metrics_dir)) >= 2:
            break
    per_process = per_process_generate_counts(metrics_dir)
    sent = 7 * rounds
    assert len(per_process) >= 2, f"one worker served every request: {per_process}"
    assert sum(per_process.values()) == sent
    assert httpx.post(server.url + "/generate", json={"text": 5}, timeout=10).status_code == 422
    assert httpx.post(server.url + "/generate", json={}, timeout=10).status_code == 422
    assert httpx.get(server.mgmt + "/config/primary-0", timeout=10).status_code == 200
    rid = mint_rid(DEPLOYMENT_TYPE)
    r = httpx.get(f"{server.mgmt}/api/v2/models/liveDeployments/{rid}", params={"preview": "true"}, timeout=10)
    assert r.status_code == 404

    samples = scrape(server)
    assert value(samples, "http_requests_total", path="/generate", status="200") == sent
    assert value(samples, "http_requests_total", path="/generate", status="422") == 2
    assert value(samples, "http_requests_total", path="/config/{reader_id}", status="200") == 1
    assert value(samples, "http_requests_total", path="/api/v2/models/liveDeployments/{rid}", status="404") == 1
    assert value(samples, "http_requests_duration_seconds_count", path="/generate", status="200") == sent
    assert value(samples, "http_requests_duration_seconds_sum", path="/generate", status="200") >= sent * 0.2
    assert not any(dict(labels).get("path") == "/config/primary-0" for _, labels in samples)
    # The reader's own file: queue time, batch sizes, time to first token, tokens (3 per request).
    assert value(samples, "queue_time_seconds_count", consumer_group="primary") == sent
    assert value(samples, "user_batch_size_count", consumer_group="primary") == sent
    assert value(samples, "generate_batch_size_sum", consumer_group="primary") == sent
    assert value(samples, "time_to_first_token_seconds_count", consumer_group="primary") == sent
    assert value(samples, "generate_tokens_total", consumer_group="primary") == 3 * sent
    # Read from Redis at scrape time.
    assert value(samples, "liftoff_redis_up") == 1
    assert value(samples, "liftoff_readers", state="live") == 1
    assert value(samples, "liftoff_readers", state="dead") == 0
    assert value(samples, "liftoff_stream_backlog", consumer_group="primary") == 0
    assert value(samples, "liftoff_dlq_size") == 0


def test_metrics_off(make_server: Any) -> None:
    server = make_server(enable_metrics=False)
    assert httpx.get(server.mgmt + "/metrics", timeout=10).status_code == 404
    assert not (Path(server.settings["state_dir"]) / "metrics").exists()
