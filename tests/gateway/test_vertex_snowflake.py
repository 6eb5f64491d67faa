"""The Vertex AI and Snowflake ports end to end, with the payloads those platforms send.

The server runs with Vertex's container environment (`AIP_HTTP_PORT`, `AIP_PREDICT_ROUTE`, `AIP_HEALTH_ROUTE`):
an echo reader in `primary` and the bundled MiniLM in `embed`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from support.servers import Server, ServerFactory, free_ports

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
PREDICT_ROUTE = "/v1/endpoints/123/deployedModels/456:predict"
HEALTH_ROUTE = "/vertex/ping"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Server]:
    from support.servers import server_factory

    servers: list[Server] = []
    make: ServerFactory = server_factory(tmp_path_factory.mktemp("vertex"), redis_url, servers)
    readers = [
        {"model_name": "echo", "consumer_group": "primary", "reader_id": "echo-0"},
        {"model_name": MINILM, "consumer_group": "embed", "reader_id": "minilm", "max_batch_size": 32},
    ]
    srv = make(readers=readers, start=False, reserved_consumers="", request_timeout_s=60.0)
    aip = {"AIP_HTTP_PORT": str(free_ports(1)[0]), "AIP_PREDICT_ROUTE": PREDICT_ROUTE, "AIP_HEALTH_ROUTE": HEALTH_ROUTE}
    with environment(aip):  # the server's processes inherit it, as in a Vertex container
        srv.start()
    srv.ports["vertex_port"] = int(aip["AIP_HTTP_PORT"])
    yield srv
    srv.stop()


class environment:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        for key, value in self.values.items():
            self.saved[key] = os.environ.get(key)
            os.environ[key] = value

    def __exit__(self, *exc: object) -> None:
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def vertex(server: Server, path: str, body: Any) -> httpx.Response:
    return httpx.post(server.port_url("vertex_port") + path, json=body, timeout=60)


def snowflake(server: Server, path: str, body: Any) -> httpx.Response:
    return httpx.post(server.port_url("snowflake_port") + path, json=body, timeout=60)


# --- Vertex -------------------------------------------------------------------------------------------------------
def test_vertex_serves_on_aip_http_port(server: Server) -> None:
    assert server.status()["config"]["vertex_port"] == server.ports["vertex_port"]
    r = httpx.get(server.port_url("vertex_port") + "/healthz", timeout=10)
    assert r.status_code == 200


def test_generate_vertex_answers_each_instance_in_order(server: Server) -> None:
    instances = [{"text": f"instance number {i}"} for i in range(12)]
    instances[3] = {"text": "one two three four", "max_new_tokens": 2, "return_metadata": True}
    instances[5] = "a plain string instance"
    r = vertex(server, "/generate_vertex", {"instances": instances})
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    assert [p["text"] for p in predictions] == [
        "one two" if i == 3 else "a plain string instance" if i == 5 else f"instance number {i}" for i in range(12)]
    assert predictions[3]["metadata"]["generated_tokens"] == 2


def test_generate_vertex_parameters_apply_to_every_instance(server: Server) -> None:
    r = vertex(server, "/generate_vertex", {"instances": [{"text": "a b c"}, {"text": "d e f", "max_new_tokens": 3}],
                                            "parameters": {"max_new_tokens": 1}})
    assert [p["text"] for p in r.json()["predictions"]] == ["a", "d e f"]


def test_generate_vertex_bad_instance_is_400_naming_its_index(server: Server) -> None:
    r = vertex(server, "/generate_vertex", {"instances": [{"text": "fine"}, {"text": "x", "sampling_topp": 7}]})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == 400 and error["status"] == "INVALID_ARGUMENT"
    assert "instances[1]" in error["message"] and "sampling_topp" in error["message"]
    r = vertex(server, "/generate_vertex", {"instances": [{"text": "fine"}, {"text": "x", "consumer_group": "nope"}]})
    assert r.status_code == 404 and "instances[1]" in r.json()["error"]["message"]
    for body in ({"instances": []}, {"nothing": 1}, ["not", "an", "object"]):
        assert vertex(server, "/generate_vertex", body).status_code == 400


def test_embed_vertex(server: Server) -> None:
    texts = ["A man is playing a guitar.", "Someone plays the guitar."]
    direct = httpx.post(server.url + "/embed", json={"text": texts, "consumer_group": "embed"}, timeout=60).json()
    r = vertex(server, "/embed_vertex", {"instances": [{"text": t, "consumer_group": "embed"} for t in texts]})
    assert r.status_code == 200, r.text
    assert [p["result"] for p in r.json()["predictions"]] == direct["result"]


def test_aip_routes(server: Server) -> None:
    r = vertex(server, PREDICT_ROUTE, {"instances": [{"text": "via the predict route"}]})
    assert r.status_code == 200 and r.json() == {"predictions": [{"text": "via the predict route"}]}
    health = httpx.get(server.port_url("vertex_port") + HEALTH_ROUTE, timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "healthy"
    missing = httpx.get(server.port_url("vertex_port") + "/no/such/route", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["status"] == "NOT_FOUND"


# --- Snowflake ----------------------------------------------------------------------------------------------------
def test_generate_snowflake_rows_in_order(server: Server) -> None:
    rows = [[i, {"text": f"row {i} text"}] for i in range(20)]
    rows[7] = [7, "a plain string"]
    r = snowflake(server, "/generate_snowflake", {"data": rows})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [row[0] for row in data] == list(range(20))
    assert [row[1]["text"] for row in data] == ["a plain string" if i == 7 else f"row {i} text" for i in range(20)]


def test_generate_snowflake_bad_rows_get_error_values(server: Server) -> None:
    rows = [[0, {"text": "good"}], [1, {"text": "x", "sampling_topp": 9}], [2, {"text": "y", "consumer_group": "no"}],
            [3, 42], [4, {"text": "also good", "max_new_tokens": 1}]]
    r = snowflake(server, "/generate_snowflake", {"data": rows})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [row[0] for row in data] == [0, 1, 2, 3, 4]
    assert data[0][1] == {"text": "good"} and data[4][1] == {"text": "also"}
    assert "sampling_topp" in data[1][1]["error"]
    assert "no" in data[2][1]["error"] and "consumer group" in data[2][1]["error"]
    assert "error" in data[3][1]


def test_embed_snowflake(server: Server) -> None:
    text = "A man is playing a guitar."
    direct = httpx.post(server.url + "/embed", json={"text": text, "consumer_group": "embed"}, timeout=60).json()
    rows = [[5, {"text": text, "consumer_group": "embed"}], [9, {"text": text}]]  # `primary` is echo: no embeddings
    data = snowflake(server, "/embed_snowflake", {"data": rows}).json()["data"]
    assert data[0] == [5, {"result": direct["result"]}]
    assert data[1][0] == 9 and "embed" in data[1][1]["error"]


def test_snowflake_malformed_bodies(server: Server) -> None:
    for body in ({"rows": []}, {"data": [["not an index", {"text": "x"}]]}, {"data": [[1]]}):
        r = snowflake(server, "/generate_snowflake", body)
        assert r.status_code == 400 and isinstance(r.json()["error"], str)
    r = httpx.post(server.port_url("snowflake_port") + "/generate_snowflake", content=b"[oops", timeout=10)
    assert r.status_code == 400 and "JSON" in r.json()["error"]
