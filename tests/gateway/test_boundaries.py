"""Bad input and a broken Redis answer with a clear 4xx or 503, never a 500; fan-out is bounded before it is queued;
the health routes stay open and bounded.

All on real `liftoff serve` processes: the shared echo server, one whose Redis the test stops, and one with
inference keys in a Vertex container's environment.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from liftoff.control.embedded_redis import EmbeddedRedis

from support.servers import Server, ServerFactory, free_ports

INFERENCE_KEY = "test-inference-key"


# --- ids and numbers at the boundary -----------------------------------------------------------------------------
def test_dlq_retry_with_an_id_that_is_not_a_stream_id_is_a_4xx(echo_server: Server) -> None:
    r = httpx.post(echo_server.mgmt + "/dlq/retry", json={"ids": ["not-a-stream-id"]}, timeout=10)
    assert r.status_code == 422, r.text
    assert "ids" in r.json()["error"] and "not-a-stream-id" in r.json()["error"]
    r = httpx.post(echo_server.mgmt + "/dlq/retry", json={"ids": ["1-0"]}, timeout=10)
    assert r.status_code == 404 and "1-0" in r.json()["error"]


@pytest.mark.parametrize("count", ["²", "0", "1001", "-1", "abc"])
def test_dlq_count_must_be_a_small_integer(echo_server: Server, count: str) -> None:
    r = httpx.get(echo_server.mgmt + "/dlq", params={"count": count}, timeout=10)
    assert r.status_code == 400 and "count" in r.json()["error"]


def test_tokenizer_reader_id_is_checked(echo_server: Server) -> None:
    r = httpx.post(echo_server.url + "/tokenize/a{b}", json={"text": "hi"}, timeout=10)
    assert r.status_code == 400 and "reader_id" in r.json()["error"]


# --- Redis out of reach --------------------------------------------------------------------------------------------
@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "own-redis", appendonly=False)
    server.start()
    yield server
    server.stop()


def test_redis_stopped_is_503_on_every_route(make_server: ServerFactory, own_redis: EmbeddedRedis) -> None:
    server = make_server(redis_url=own_redis.url)
    assert httpx.get(server.mgmt + "/reader_groups", timeout=10).status_code == 200
    own_redis.stop()
    # (The management port's full /status answers 200 with `"status": null` and the reason: its own design.)
    urls = [server.mgmt + "/reader_groups", server.mgmt + "/config/primary-0", server.mgmt + "/dlq",
            server.url + "/status", server.port_url("internal_port") + "/consumer_groups"]
    for url in urls:
        r = httpx.get(url, timeout=30)
        assert r.status_code == 503, (url, r.status_code, r.text)
        assert "Redis" in r.json()["error"], (url, r.text)
    r = httpx.post(server.port_url("openai_port") + "/v1/models", timeout=30)  # a method the route lacks: 405
    assert r.status_code == 405
    r = httpx.get(server.port_url("openai_port") + "/v1/models", timeout=30)
    assert r.status_code == 503 and "Redis" in r.json()["error"]["message"]
    # /healthz?wait= while Redis is gone: unhealthy, after the wait and not before; never a hang.
    started = time.monotonic()
    r = httpx.get(server.mgmt + "/healthz", params={"wait": "1.5"}, timeout=30)
    assert r.status_code == 503 and "Redis" in r.json()["reason"]
    assert 1.4 <= time.monotonic() - started < 6


# --- fan-out bounded before anything is queued ---------------------------------------------------------------------
def openai(server: Server, path: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(server.port_url("openai_port") + path, json=body, timeout=30)


def test_n_times_a_large_prompt_is_refused_naming_the_limit(echo_server: Server) -> None:
    prompt = "x" * 70_000  # within max_prompt_string_bytes; 128 copies are over max_queued_bytes (8 MiB)
    r = openai(echo_server, "/v1/completions", {"model": "primary", "prompt": prompt, "n": 128, "max_tokens": 1})
    assert r.status_code == 413, r.text
    assert "max_queued_bytes" in r.json()["error"]["message"]
    chat = {"model": "primary", "messages": [{"role": "user", "content": prompt}], "n": 128, "max_tokens": 1}
    r = openai(echo_server, "/v1/chat/completions", chat)
    assert r.status_code == 413 and "max_queued_bytes" in r.json()["error"]["message"]
    r = openai(echo_server, "/v1/completions", {"model": "primary", "prompt": "hi", "n": 2, "max_tokens": 1})
    assert r.status_code == 200, r.text


def test_token_id_prompts_are_counted_before_any_detokenize(echo_server: Server) -> None:
    # A model nobody serves: had one detokenize run first, the answer would be model_not_found.
    body = {"model": "nobody-serves-this", "prompt": [[1, 2, 3]] * 600, "n": 2, "max_tokens": 1}
    r = openai(echo_server, "/v1/completions", body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert "max_user_batch_size" in error["message"] and "1200" in error["message"] and error["param"] == "n"


# --- health routes ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("wait", ["11", "600", "nan", "-1"])
def test_healthz_wait_is_capped_at_the_request_timeout(echo_server: Server, wait: str) -> None:
    r = httpx.get(echo_server.mgmt + "/healthz", params={"wait": wait}, timeout=10)
    assert r.status_code == 400, r.text
    assert "request_timeout_s" in r.json()["error"] or "number" in r.json()["error"]


def test_vertex_health_route_is_open_with_inference_keys(make_server: ServerFactory,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    health_route = "/vertex-ping"
    server = make_server(start=False, inference_api_key=INFERENCE_KEY)
    aip = {"AIP_HTTP_PORT": str(free_ports(1)[0]), "AIP_HEALTH_ROUTE": health_route}
    with monkeypatch.context() as env:  # the server's processes inherit it, as in a Vertex container
        for key, value in aip.items():
            env.setenv(key, value)
        server.start()
    vertex = f"http://127.0.0.1:{aip['AIP_HTTP_PORT']}"
    r = httpx.get(vertex + health_route, timeout=10)
    assert r.status_code == 200 and r.json()["status"] == "healthy"
    assert httpx.get(vertex + "/healthz", timeout=10).status_code == 200
    body = {"instances": [{"text": "hi"}]}
    assert httpx.post(vertex + "/generate_vertex", json=body, timeout=10).status_code == 401
    # The port's document is behind its keys, like the routes it describes.
    assert httpx.get(vertex + "/openapi.json", timeout=10).status_code == 401
    doc = httpx.get(vertex + "/openapi.json", headers={"Authorization": f"Bearer {INFERENCE_KEY}"}, timeout=10)
    assert doc.status_code == 200 and health_route in doc.json()["paths"]
    assert httpx.get(server.url + health_route, timeout=10).status_code == 401  # open on the Vertex port only
