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

`python -m management.auth hash|new` (management/auth.py) hashes or makes a key.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from liftoff.core.http.asgi import HttpMiddleware, send_json
from liftoff.core.http.errors import takeoff_error_body
from liftoff.core.http.types import ASGIApp, Receive, Scope, Send
from liftoff.core.settings import Settings, SettingsError

ADMIN, READ, INFERENCE = "admin", "read", "inference"
# What each role may do; a route asks for one permission.
GRANTS: dict[str, frozenset[str]] = {
    ADMIN: frozenset({ADMIN, READ}),
    READ: frozenset({READ}),
    INFERENCE: frozenset({INFERENCE}),
}
OPEN_PATHS = frozenset({"/healthz", "/health"})
READ_METHODS = frozenset({"GET", "HEAD"})
LOOPBACK_V4, LOOPBACK_V6 = "127.0.0.1", "::1"


class KeyEntry(Protocol):
    """A configured key as the settings hold it (`name`, `role`, `sha256` hex digest)."""

    @property
    def name(self) -> str: ...

    @property
    def role(self) -> str: ...

    @property
    def sha256(self) -> str: ...


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: str


class KeyRing:
    """The configured keys; `identify` finds the one a presented key matches."""

    def __init__(self, entries: Iterable[KeyEntry], role: str | None = None) -> None:
        # `role` overrides every entry's role (inference keys all carry the one inference permission).
        self._keys = [(bytes.fromhex(e.sha256), Principal(e.name, role or e.role)) for e in entries]

    def __bool__(self) -> bool:
        return bool(self._keys)

    def identify(self, presented: str) -> Principal | None:
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for stored, principal in self._keys:  # no early exit: every key is compared
            if hmac.compare_digest(digest, stored):
                found = principal
        return found


# A port's error body for a refusal: (status, message, details); Takeoff's is `errors.takeoff_error_body`.
ErrorBody = Callable[[int, str, Any], dict[str, Any]]


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
                 error_body: ErrorBody = takeoff_error_body) -> None:
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
            await self._refuse(send, 401, "Bearer token required", details)
            return
        principal = self.keys.identify(presented)
        if principal is None:
            await self._refuse(send, 401, "Invalid token: the key matches no configured API key", None)
            return
        if needed not in GRANTS.get(principal.role, frozenset()):
            message = f"Insufficient permissions. Required: [{needed}], resolved: [{principal.role}]"
            await self._refuse(send, 403, message, {"key": principal.name})
            return
        scope["api_key"] = principal
        await self.app(scope, receive, send)

    async def _refuse(self, send: Send, status: int, message: str, details: Any) -> None:
        challenge = [(b"www-authenticate", b'Bearer realm="liftoff"')] if status == 401 else []
        await send_json(send, status, self.error_body(status, message, details), challenge)


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


def inference_auth(app: ASGIApp, settings: Settings, error_body: ErrorBody = takeoff_error_body,
                   open_paths: frozenset[str] = frozenset()) -> ASGIApp:
    """An inference-facing port's app behind `inference_api_keys`; unchanged when none are configured.
    `open_paths` stay open beside `/healthz` and `/health` (health probes that send no key)."""
    keys = KeyRing(settings.inference_api_keys, role=INFERENCE)
    role_for = inference_role_for_paths(open_paths) if open_paths else inference_role_for
    return ApiKeyAuth(app, keys, role_for, error_body) if keys else app


# --- where the management port listens ------------------------------------------------------------------------------
class ManagementExposureError(SettingsError):
    """The management port would be reachable from other machines without any API key."""


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_management_exposure(settings: Settings) -> None:
    host = settings.management_host
    if host is not None and not settings.management_api_keys and not is_loopback(host):
        raise ManagementExposureError(
            f"invalid setting 'management_host': {host!r} would expose the management API without API keys; "
            "configure management_api_keys (or LIFTOFF_ADMIN_API_KEY), or bind it to 127.0.0.1"
        )


def management_bind(settings: Settings) -> tuple[str, str | None]:
    """The address the management port binds, and the line to log about it (None: nothing to say).

    With keys: `management_host`, else `host`. Without keys: loopback only (`host` when it is loopback already,
    else 127.0.0.1, or ::1 for an IPv6 `host`); an explicit non-loopback `management_host` raises.
    """
    check_management_exposure(settings)
    if settings.management_api_keys:
        return settings.management_host or settings.host, None
    host = settings.management_host or settings.host
    if not is_loopback(host):
        host = LOOPBACK_V6 if ":" in host else LOOPBACK_V4
    shown = f"[{host}]" if ":" in host else host
    return host, (
        f"no management API keys configured: the management API listens on {shown}:{settings.management_port} "
        "only (loopback); configure management_api_keys or LIFTOFF_ADMIN_API_KEY to serve it on other addresses"
    )


def gunicorn_bind(settings: Settings) -> list[str]:
    """The gateway's bind list: every port on `host`, the management port where `management_bind` says."""
    management_host, _ = management_bind(settings)
    binds = []
    for name, port in settings.ports().items():
        host = management_host if name == "management" else settings.host
        binds.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return binds
