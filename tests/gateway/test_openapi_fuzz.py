"""Every port's OpenAPI document, and schemathesis over every operation of all six ports of a running server.

Positive (schema-valid) and negative (schema-violating) cases per operation, a few examples each so that the run
stays bounded; every answer must be no 5xx, with a status, content type and (where the document declares one) body
schema that the document declares.
"""

from __future__ import annotations

import contextlib
from typing import Any

import httpx
import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from support.servers import Server

PORTS = ["port", "management_port", "vertex_port", "openai_port", "snowflake_port", "internal_port"]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 6  # per operation and mode: ~60 operations x 2 modes x 6 takes about 45 s here
# Routes that change the server's own set-up: fuzzing them would add readers or drain the one echo reader.
SKIP = {("POST", "/reader"), ("DELETE", "/reader/{reader_id}")}


@pytest.mark.parametrize("port", PORTS)
def test_openapi_document_lists_every_route(echo_server: Server, port: str) -> None:
    doc = httpx.get(echo_server.port_url(port) + "/openapi.json", timeout=10).json()
    assert doc["openapi"].startswith("3.1")
    assert {"/healthz", "/health", "/openapi.json"} <= set(doc["paths"])
    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            assert {"400", "503"} <= set(op["responses"]), (method, path)
            if method in ("post", "put") and not path.endswith(("/start", "/disable", "/cancel")):  # no body
                assert "requestBody" in op, (method, path)


def test_openapi_bodies_come_from_the_request_models(echo_server: Server) -> None:
    doc = httpx.get(echo_server.port_url("openai_port") + "/openapi.json", timeout=10).json()
    body = doc["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ChatCompletionRequest"}
    chat = doc["components"]["schemas"]["ChatCompletionRequest"]
    assert {"model", "messages", "n"} <= set(chat["properties"]) and "ChatMessage" in doc["components"]["schemas"]
    mgmt = httpx.get(echo_server.mgmt + "/openapi.json", timeout=10).json()
    retry = mgmt["paths"]["/dlq/retry"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert retry == {"$ref": "#/components/schemas/RetryRequest"}


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("port", PORTS)
def test_schemathesis_finds_no_5xx(echo_server: Server, port: str) -> None:
    base = echo_server.port_url(port)
    schema = schemathesis.openapi.from_url(base + "/openapi.json")
    failures: list[str] = []
    ran = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in SKIP:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            ran += _fuzz(operation, mode, base, failures)
    assert ran > 0
    assert not failures, "\n\n".join(failures[:10])


def _fuzz(operation: Any, mode: GenerationMode, base: str, failures: list[str]) -> int:
    calls = 0

    @hypothesis.settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                         phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        nonlocal calls
        calls += 1
        try:
            case.call_and_validate(base_url=base, checks=CHECKS, timeout=30)
        except Exception as exc:  # noqa: BLE001 — collected, so that one run reports every operation's failures
            failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): {exc}"[:3000])

    with contextlib.suppress(hypothesis.errors.Unsatisfiable):
        run()  # Unsatisfiable: nothing to negate (no parameters, no body); the positive run covers the operation
    return calls
