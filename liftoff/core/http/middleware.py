"""Pure-ASGI middleware shared by the ports."""

from __future__ import annotations

import orjson

from liftoff.core.http.errors import PayloadTooLarge
from liftoff.core.http.types import ASGIApp, Message, Receive, Scope, Send


class BodySizeLimit:
    """413 for a body over `limit` bytes, before the body is read in full.

    A declared Content-Length over the limit is refused without reading a byte; a chunked body is counted as it
    arrives and the read that crosses the limit raises `PayloadTooLarge`, which the error handlers answer.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await self._refuse(send, declared)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise PayloadTooLarge(self._message(received, at_least=True))
            return message

        await self.app(scope, limited_receive, send)

    def _message(self, size: int, at_least: bool = False) -> str:
        return too_large_message(size, self.limit, at_least)

    async def _refuse(self, send: Send, size: int) -> None:
        body = orjson.dumps({"error": self._message(size), "details": None, "code": 413})
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def too_large_message(size: int, limit: int, at_least: bool = False) -> str:
    size_text = f"at least {size}" if at_least else str(size)
    return f"request body is {size_text} bytes; the limit (body_size_limit_bytes) is {limit}"
