"""Pure-ASGI middleware shared by the ports: the body size limit, and error answers in a port's own shape."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from liftoff.core.errors import PayloadTooLarge, takeoff_error_body
from liftoff.http.asgi import HttpMiddleware, send_json
from liftoff.http.types import ASGIApp, Message, Receive, Scope, Send


class BodySizeLimit(HttpMiddleware):
    """413 for a body over `limit` bytes, before the body is read in full.

    A declared Content-Length over the limit is refused without reading a byte; a chunked body is counted as it
    arrives and the read that crosses the limit raises `PayloadTooLarge`, which the error handlers answer.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        super().__init__(app)
        self.limit = limit

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            body = takeoff_error_body(413, too_large_message(declared, self.limit))
            await send_json(send, 413, body, [(b"connection", b"close")])
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise PayloadTooLarge(too_large_message(received, self.limit, at_least=True))
            return message

        await self.app(scope, limited_receive, send)


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


ErrorBuilder = Callable[[int, str], dict[str, Any]]


class ReshapeErrors(HttpMiddleware):
    """Rewrites Takeoff-shaped JSON error answers (`{"error": str, "details", "code"}`) with a port's `builder`.

    The port machinery every port shares (no route, method not allowed, body too large) answers in Takeoff's shape;
    a port with another protocol (OpenAI, Vertex, Snowflake) is wrapped in this so that those answers speak its
    shape too. Only error statuses with a JSON body of that exact shape are touched (`message_of` says which; a
    subclass may take others), so the port's own answers, streams and health reports pass unchanged.
    """

    def __init__(self, app: ASGIApp, builder: ErrorBuilder) -> None:
        super().__init__(app)
        self.builder = builder

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        start: Message | None = None
        chunks: list[bytes] = []

        async def reshaping_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", []))
                if message["status"] >= 400 and headers.get(b"content-type", b"").startswith(b"application/json"):
                    start = message
                    return
                await send(message)
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                await self._send_reshaped(send, start, b"".join(chunks))

        await self.app(scope, receive, reshaping_send)

    def message_of(self, data: Any) -> str | None:
        """The message of an error body to reshape (a Takeoff-shaped one), or None to leave the body as it is."""
        if isinstance(data, dict) and isinstance(data.get("error"), str) and "details" in data:
            return data["error"]
        return None

    async def _send_reshaped(self, send: Send, start: Message, body: bytes) -> None:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        message = self.message_of(data)
        if message is not None:
            body = orjson.dumps(self.builder(start["status"], message))
        headers = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})
