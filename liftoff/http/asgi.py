"""What the pure-ASGI pieces share: a middleware base that acts on HTTP only, and a JSON answer sent on raw messages.

The gateway's middleware (body limit, API keys, error reshaping, and metrics) and `/generate`'s fast path work on ASGI
messages rather than through a framework's request objects, because every layer of a framework stack costs each
request something (see `liftoff.gateway.takeoff.generate_asgi`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from liftoff.http.types import ASGIApp, Receive, Scope, Send

Headers = Iterable[tuple[bytes, bytes]]


class HttpMiddleware:
    """Pure-ASGI middleware for HTTP requests: other scopes (lifespan, websockets) go to `app` untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A coroutine function, as ASGI servers and test clients require to take it for ASGI 3 (they inspect it).
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.http(scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


async def send_json(send: Send, status: int, content: Any, headers: Headers = ()) -> None:
    """A whole JSON answer: content type and length, then `headers` (lower-case names)."""
    body = orjson.dumps(content)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def header_list(headers: dict[str, str] | None) -> list[tuple[bytes, bytes]]:
    """An ApiError's extra headers (`Retry-After`, ...) as ASGI header pairs."""
    if not headers:
        return []
    return [(k.lower().encode(), v.encode()) for k, v in headers.items()]
