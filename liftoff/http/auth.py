"""API keys: roles on the management port, optional keys on the inference-facing ports, and where the management
port may listen.

Keys are stored as SHA-256 hex digests (`management_api_keys`, `inference_api_keys`; the plaintext environment
forms `LIFTOFF_ADMIN_API_KEY`, `LIFTOFF_READ_API_KEY`, `LIFTOFF_INFERENCE_API_KEY` are hashed when the settings
load). A request presents its key as `Authorization: Bearer <key>` or `X-API-Key: <key>`; the key is hashed and
compared with every stored digest in constant time, so neither the answer nor its timing tells how close a guess was.

Roles on the management port: `admin` may do everything, `read` may use the GET routes (status, health, readers,
configs, DLQ, fit, metrics, `/openapi.json`). `/healthz` and `/health` stay open (probes), and on the Vertex port
its `AIP_HEALTH_ROUTE` (Vertex's probe sends no key). Each port's `/openapi.json` is behind the same keys as the
routes it describes. Missing or unknown key: 401; a key whose
role lacks the permission: 403; both in the port's error shape.

Without management keys the management port listens on loopback only; asking for another address without keys
refuses to start (`check_management_exposure`).

`python -m liftoff.entry.keys hash|new` (liftoff/entry/keys.py) hashes or makes a key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from liftoff.core.api_keys import ADMIN, GRANTS, INFERENCE, READ, KeyRing
from liftoff.core.settings import Settings
from liftoff.http.asgi import HttpMiddleware, send_json
from liftoff.http.errors import TAKEOFF, ErrorBody
from liftoff.http.types import ASGIApp, Receive, Scope, Send

OPEN_PATHS = frozenset({"/healthz", "/health"})
READ_METHODS = frozenset({"GET", "HEAD"})




# --- which permission a request needs ------------------------------------------------------------------------------
RoleFor = Callable[[Scope], str | None]


def management_role_for(scope: Scope) -> str | None:
    if scope["path"] in OPEN_PATHS:
        return None
    return READ if scope["method"] in READ_METHODS else ADMIN


def inference_role_for(scope: Scope) -> str | None:
    return None if scope["path"] in OPEN_PATHS else INFERENCE


def inference_role_for_paths(open_paths: frozenset[str]) -> RoleFor:
    """`inference_role_for` with more open paths (a platform's health probe, e.g. Vertex's AIP_HEALTH_ROUTE)."""
    paths = OPEN_PATHS | open_paths

    def role_for(scope: Scope) -> str | None:
        return None if scope["path"] in paths else INFERENCE

    return role_for


class ApiKeyAuth(HttpMiddleware):
    """Pure-ASGI middleware: 401 without a known key, 403 when the key's role lacks what `role_for` asks;
    `role_for` returning None leaves the route open. The caller's name and role go into `scope["api_key"]`."""

    def __init__(self, app: ASGIApp, keys: KeyRing, role_for: RoleFor = management_role_for,
                 error_body: ErrorBody = TAKEOFF.body) -> None:
        super().__init__(app)
        self.keys = keys
        self.role_for = role_for
        self.error_body = error_body

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        needed = self.role_for(scope)
        if needed is None:
            await self.app(scope, receive, send)
            return
        presented = _presented_key(scope)
        if presented is None:
            details = "send the key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"
            await self._refuse(scope, send, 401, "Bearer token required", details)
            return
        principal = self.keys.identify(presented)
        if principal is None:
            await self._refuse(scope, send, 401, "Invalid token: the key matches no configured API key", None)
            return
        if needed not in GRANTS.get(principal.role, frozenset()):
            message = f"Insufficient permissions. Required: [{needed}], resolved: [{principal.role}]"
            await self._refuse(scope, send, 403, message, {"key": principal.name})
            return
        scope["api_key"] = principal
        await self.app(scope, receive, send)

    async def _refuse(self, scope: Scope, send: Send, status: int, message: str, details: Any) -> None:
        challenge = [(b"www-authenticate", b'Bearer realm="liftoff"')] if status == 401 else []
        await send_json(send, status, self.error_body(scope["path"], status, message, details), challenge)


def _presented_key(scope: Scope) -> str | None:
    api_key: str | None = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            header: str = value.decode("latin-1")
            scheme, _, token = header.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key" and value.strip():
            api_key = value.decode("latin-1").strip()
    return api_key


def management_auth(app: ASGIApp, settings: Settings) -> ASGIApp:
    """The management app behind its keys; unchanged when none are configured (it then listens on loopback)."""
    keys = KeyRing(settings.management_api_keys)
    return ApiKeyAuth(app, keys, management_role_for) if keys else app


def inference_auth(app: ASGIApp, settings: Settings, error_body: ErrorBody = TAKEOFF.body,
                   open_paths: frozenset[str] = frozenset()) -> ASGIApp:
    """An inference-facing port's app behind `inference_api_keys`; unchanged when none are configured.
    `open_paths` stay open beside `/healthz` and `/health` (health probes that send no key)."""
    keys = KeyRing(settings.inference_api_keys, role=INFERENCE)
    role_for = inference_role_for_paths(open_paths) if open_paths else inference_role_for
    return ApiKeyAuth(app, keys, role_for, error_body) if keys else app
