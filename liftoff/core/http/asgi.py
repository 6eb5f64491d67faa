"""What the pure-ASGI pieces share: a middleware base that acts on HTTP only, and a JSON answer sent on raw messages.

The gateway's middleware (body limit, API keys, error reshaping, metrics) and `/generate`'s fast path work on ASGI
messages rather than through a framework's request objects, because every layer of a framework stack costs each
request something (see `gateway.generate_asgi`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from typing import Any

import orjson

from liftoff.core.http.types import ASGIApp, Receive, Scope, Send

Headers = Iterable[tuple[bytes, bytes]]


class HttpMiddleware:
    """Pure-ASGI middleware for HTTP requests: other scopes (lifespan, websockets) go to `app` untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Returns the coroutine to await rather than awaiting it: a middleware adds no frame that every await of
        # the request must resume through.
        if scope["type"] != "http":
            return self.app(scope, receive, send)
        return self.http(scope, receive, send)

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
