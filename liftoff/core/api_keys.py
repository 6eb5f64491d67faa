"""API keys and where the management port may listen: the part of authentication that needs no HTTP.

Keys are stored as SHA-256 hex digests (`management_api_keys`, `inference_api_keys`); `KeyRing.identify` compares a
presented key's digest with every stored one in constant time. The supervisor checks `check_management_exposure`
before it starts anything, gunicorn binds `gunicorn_bind`; the middleware that asks for a key is
`liftoff.http.auth`. `python -m liftoff.entry.keys hash|new` hashes or makes a key.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from liftoff.core.settings import Settings, SettingsError

ADMIN, READ, INFERENCE = "admin", "read", "inference"
# What each role may do; a route asks for one permission.
GRANTS: dict[str, frozenset[str]] = {
    ADMIN: frozenset({ADMIN, READ}),
    READ: frozenset({READ}),
    INFERENCE: frozenset({INFERENCE}),
}
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
