"""API keys: the management route-by-role matrix on a running server, optional inference keys, and where the
management port listens without keys."""

from __future__ import annotations

import hashlib
import subprocess
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.testclient import TestClient

from liftoff.core.api_keys import (
    KeyRing,
    ManagementExposureError,
    check_management_exposure,
    gunicorn_bind,
    management_bind,
)
from liftoff.core.settings import Settings
from liftoff.deployments.model import DEPLOYMENT_TYPE, mint_rid
from liftoff.gateway.chat.errors import OPENAI_SHAPE
from liftoff.gateway.takeoff.requests import generate_for_group
from liftoff.http.auth import ApiKeyAuth
from liftoff.http.context import Gateway
from liftoff.http.dispatch import Dispatcher
from liftoff.management.api import create_management_app

from support.servers import LIFTOFF, Server

ADMIN_KEY, READ_KEY, INFERENCE_KEY = "admin-key-0123456789", "read-key-0123456789", "inference-key-0123456789"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def keyed(**fields: Any) -> Settings:
    keys = [{"name": "ops", "role": "admin", "sha256": digest(ADMIN_KEY)}]
    return Settings(readers=[], management_api_keys=keys, **fields)


# --- where the management port listens ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("host", "management_host", "with_keys", "expected_host", "warns"),
    [
        ("0.0.0.0", None, False, "127.0.0.1", True),  # the default: keyless management stays on loopback
        ("127.0.0.1", None, False, "127.0.0.1", True),
        ("::", None, False, "::1", True),
        ("0.0.0.0", "localhost", False, "localhost", True),
        ("0.0.0.0", None, True, "0.0.0.0", False),
        ("0.0.0.0", "10.1.2.3", True, "10.1.2.3", False),
    ],
)
def test_management_bind(host: str, management_host: str | None, with_keys: bool, expected_host: str,
                         warns: bool) -> None:
    fields: dict[str, Any] = {"host": host, "management_host": management_host}
    settings = keyed(**fields) if with_keys else Settings(readers=[], **fields)
    bound, line = management_bind(settings)
    assert bound == expected_host
    assert (line is not None) == warns
    if line:
        assert "no management API keys" in line and "loopback" in line


def test_exposed_management_without_keys_is_refused() -> None:
    settings = Settings(readers=[], management_host="0.0.0.0")
    with pytest.raises(ManagementExposureError, match="management_host"):
        check_management_exposure(settings)
    check_management_exposure(keyed(management_host="0.0.0.0"))


def test_gunicorn_bind_puts_only_the_management_port_on_loopback() -> None:
    binds = gunicorn_bind(Settings(readers=[], host="0.0.0.0"))
    assert binds == ["0.0.0.0:3000", "127.0.0.1:3001", "0.0.0.0:3002", "0.0.0.0:3003", "0.0.0.0:3004",
                     "0.0.0.0:3005"]
    assert gunicorn_bind(Settings(readers=[], host="::"))[1] == "[::1]:3001"


def test_plaintext_keys_are_hashed_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFTOFF_ADMIN_API_KEY", ADMIN_KEY)
    monkeypatch.setenv("LIFTOFF_INFERENCE_API_KEY", INFERENCE_KEY)
    settings = Settings(readers=[])
    assert [(k.role, k.sha256) for k in settings.management_api_keys] == [("admin", digest(ADMIN_KEY))]
    assert [k.sha256 for k in settings.inference_api_keys] == [digest(INFERENCE_KEY)]
    dumped = settings.model_dump_json()
    assert ADMIN_KEY not in dumped and INFERENCE_KEY not in dumped
    assert Settings.model_validate_json(dumped).management_api_keys == settings.management_api_keys


def test_a_plaintext_key_in_the_digest_field_is_refused() -> None:
    with pytest.raises(ValueError, match="sha256"):
        Settings(readers=[], management_api_keys=[{"name": "x", "role": "admin", "sha256": ADMIN_KEY}])


# --- the middleware alone -------------------------------------------------------------------------------------------
def test_middleware_headers_roles_and_shapes() -> None:
    async def ok(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.scope["api_key"].name)

    inner = Starlette(routes=[Route("/thing", ok, methods=["GET", "POST"])])

    class Entry:
        def __init__(self, name: str, role: str, key: str) -> None:
            self.name, self.role, self.sha256 = name, role, digest(key)

    ring = KeyRing([Entry("ops", "admin", ADMIN_KEY), Entry("dash", "read", READ_KEY)])
    client = TestClient(ApiKeyAuth(inner, ring))
    assert client.get("/thing", headers={"Authorization": f"Bearer {READ_KEY}"}).text == "dash"
    assert client.get("/thing", headers={"authorization": f"bearer {ADMIN_KEY}"}).text == "ops"
    assert client.post("/thing", headers={"X-API-Key": ADMIN_KEY}).text == "ops"
    r = client.post("/thing", headers={"X-API-Key": READ_KEY})
    assert r.status_code == 403
    assert r.json() == {"error": "Insufficient permissions. Required: [admin], resolved: [read]",
                        "details": {"key": "dash"}, "code": 403}
    r = client.get("/thing", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401 and r.json()["error"] == "Bearer token required"
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = client.get("/thing", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and r.json()["error"].startswith("Invalid token")

    openai = TestClient(ApiKeyAuth(inner, ring, error_body=OPENAI_SHAPE.body))
    r = openai.get("/thing")
    assert r.status_code == 401
    assert r.json() == {"error": {"message": "Bearer token required", "type": "invalid_request_error",
                                  "param": None, "code": "invalid_api_key"}}


# --- on a running server ---------------------------------------------------------------------------------------------
# Every route of the assembled management app, with what a read key and an admin key get (None: anything but
# 401/403; the mutating routes are sent requests that change nothing). Without a key every route but the probes is 401.
PARAMS = {"reader_id": "no-such-reader", "name": "echo", "rid": mint_rid(DEPLOYMENT_TYPE)}
OPEN = {("GET", "/healthz"), ("GET", "/health")}
READ_ROUTES: dict[tuple[str, str], int] = {  # what a read-only key gets from each GET route
    **{("GET", path): 200 for path in (
        "/status", "/reader_groups", "/dlq", "/api/v1/system", "/api/v1/models", "/api/v1/models/top",
        "/api/v1/models/{name:path}", "/metrics", "/api/health/status", "/api/v2/models/liveDeployments",
        "/openapi.json")},
    **{("GET", path): 404 for path in ("/config/{reader_id}", "/api/v2/models/liveDeployments/{rid}")},
}
ADMIN_ROUTES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/reader"): {"json": {"model_name": "echo", "device": "tpu"}},  # invalid: starts nothing
    ("DELETE", "/reader/{reader_id}"): {},
    ("POST", "/reader/{reader_id}/loras"): {"json": {"source": "nowhere"}},  # no such reader: loads nothing
    ("DELETE", "/reader/{reader_id}/loras/{name}"): {},
    ("POST", "/dlq/retry"): {"json": {"ids": []}},
    ("DELETE", "/dlq"): {},
    ("POST", "/api/v2/models/liveDeployments"): {"json": {}},  # invalid: creates nothing
    ("PUT", "/api/v2/models/liveDeployments"): {},
    ("DELETE", "/api/v2/models/liveDeployments"): {},
    ("PATCH", "/api/v2/models/liveDeployments"): {},
    ("PUT", "/api/v2/models/liveDeployments/{rid}"): {"json": {}},
    ("DELETE", "/api/v2/models/liveDeployments/{rid}"): {},
    ("POST", "/api/v2/models/liveDeployments/{rid}/start"): {},
    ("POST", "/api/v2/models/liveDeployments/{rid}/disable"): {},
    ("POST", "/api/v2/models/liveDeployments/{rid}/transformJson"): {"json": {}},
}


def flatten(routes: list[BaseRoute], prefix: str = "") -> set[tuple[str, str]]:
    found = set()
    for route in routes:
        if isinstance(route, Mount):
            inner = route.app
            while not hasattr(inner, "routes") and hasattr(inner, "app"):  # pure-ASGI wrappers of a Router
                inner = inner.app
            found |= flatten(getattr(inner, "routes", []), prefix + route.path)
        elif isinstance(route, Route):
            found |= {(m, prefix + route.path) for m in route.methods or () if m != "HEAD"}
    return found


def management_routes(redis_url: str) -> set[tuple[str, str]]:
    settings = Settings(readers=[], redis_url=redis_url)
    gw = Gateway(settings=settings, dispatcher=Dispatcher(settings))
    app = create_management_app(gw, partial(generate_for_group, gw))
    return flatten(app.routes)  # type: ignore[attr-defined]


def test_the_matrix_covers_every_management_route(redis_url: str) -> None:
    assert management_routes(redis_url) == OPEN | set(READ_ROUTES) | set(ADMIN_ROUTES)


def listening(server: Server) -> set[str]:
    """The addresses the gateway bound, as its start-up log lists them (no traffic leaves loopback in tests)."""
    line = next(line for line in server.log().splitlines() if "Listening at:" in line)
    return {url.removeprefix("http://") for url in line.split("Listening at: ")[1].split(" (")[0].split(",")}


def keyed_server(make_server: Any, monkeypatch: pytest.MonkeyPatch, **settings: Any) -> Server:
    """Management keys from config.toml tables (digests), the inference key from the environment (plaintext)."""
    monkeypatch.setenv("LIFTOFF_INFERENCE_API_KEY", INFERENCE_KEY)
    server: Server = make_server(start=False, **settings)
    tables = "".join(
        f'\n[[management_api_keys]]\nname = "{name}"\nrole = "{role}"\nsha256 = "{digest(key)}"\n'
        for name, role, key in (("ops", "admin", ADMIN_KEY), ("dash", "read", READ_KEY))
    )
    with server.config.open("a") as f:
        f.write(tables)
    return server.start()


def call(base: str, method: str, template: str, key: str | None, **kwargs: Any) -> httpx.Response:
    path = template.replace("{name:path}", PARAMS["name"])
    for name in ("reader_id", "rid"):
        path = path.replace("{" + name + "}", PARAMS[name])
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.request(method, base + path, headers=headers, params={"preview": "true"}, timeout=30, **kwargs)


def test_management_route_matrix(make_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    server = keyed_server(make_server, monkeypatch, management_host="0.0.0.0")
    failures = []
    for method, path in sorted(OPEN):
        for key in (None, READ_KEY, ADMIN_KEY):
            if (status := call(server.mgmt, method, path, key).status_code) != 200:
                failures.append((method, path, key, status))
    for (method, path), ok in READ_ROUTES.items():
        for key, expected in ((None, 401), (READ_KEY, ok), (ADMIN_KEY, ok)):
            if (status := call(server.mgmt, method, path, key).status_code) != expected:
                failures.append((method, path, key, status))
    for (method, path), kwargs in ADMIN_ROUTES.items():
        for key, expected in ((None, 401), (READ_KEY, 403), (ADMIN_KEY, None)):
            status = call(server.mgmt, method, path, key, **kwargs).status_code
            if status != expected and (expected is not None or status in (401, 403)):
                failures.append((method, path, key, status))
    assert not failures, failures

    r = call(server.mgmt, "GET", "/status", "not-a-key")
    assert r.status_code == 401 and r.json()["error"].startswith("Invalid token") and r.json()["code"] == 401
    r = call(server.mgmt, "DELETE", "/dlq", READ_KEY)
    assert r.json()["error"] == "Insufficient permissions. Required: [admin], resolved: [read]"
    r = httpx.get(server.mgmt + "/status", headers={"X-API-Key": READ_KEY}, timeout=10)
    assert r.status_code == 200

    # With keys, an explicit management_host is honoured.
    assert f"{server.settings['management_host']}:{server.ports['management_port']}" in listening(server)


def test_inference_keys(make_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    server = keyed_server(make_server, monkeypatch)
    r = httpx.post(server.url + "/generate", json={"text": "hi there"}, timeout=10)
    assert r.status_code == 401
    assert r.json() == {"error": "Bearer token required", "details": r.json()["details"], "code": 401}
    r = httpx.post(server.url + "/generate", json={"text": "hi there"}, timeout=10,
                   headers={"Authorization": f"Bearer {ADMIN_KEY}"})  # a management key is not an inference key
    assert r.status_code == 401
    r = httpx.post(server.url + "/generate", json={"text": "hi there"}, timeout=10,
                   headers={"Authorization": f"Bearer {INFERENCE_KEY}"})
    assert r.status_code == 200 and r.json() == {"text": "hi there"}
    r = httpx.get(server.port_url("openai_port") + "/v1/models", timeout=10)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    for name in ("port", "vertex_port", "openai_port", "snowflake_port", "internal_port"):
        assert httpx.get(server.port_url(name) + "/healthz", timeout=10).status_code == 200


def test_without_keys_management_listens_on_loopback_only(make_server: Any) -> None:
    server = make_server(host="0.0.0.0")
    assert "no management API keys configured" in server.log()
    assert httpx.get(server.mgmt + "/status", timeout=10).status_code == 200  # loopback: open, as before
    binds = listening(server)
    assert f"0.0.0.0:{server.ports['port']}" in binds
    assert f"127.0.0.1:{server.ports['management_port']}" in binds
    assert f"0.0.0.0:{server.ports['management_port']}" not in binds


def test_exposed_management_without_keys_refuses_to_start(make_server: Any, tmp_path: Path) -> None:
    server = make_server(start=False, management_host="0.0.0.0")
    done = subprocess.run([*LIFTOFF, "serve", "--config", str(server.config)], cwd=server.workdir,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "management_host" in lines[0] and "without API keys" in lines[0], done.stderr
