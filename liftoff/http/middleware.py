"""Pure-ASGI middleware shared by the ports: the body size limit, answered in the port's error shape."""

from __future__ import annotations

from liftoff.core.errors import PayloadTooLarge
from liftoff.http.asgi import HttpMiddleware, send_json
from liftoff.http.errors import TAKEOFF, ErrorBody
from liftoff.http.types import ASGIApp, Message, Receive, Scope, Send


class BodySizeLimit(HttpMiddleware):
    """413 for a body over `limit` bytes, before the body is read in full.

    A declared Content-Length over the limit is refused without reading a byte; a chunked body is counted as it
    arrives and the read that crosses the limit raises `PayloadTooLarge`, which the error handlers answer.
    """

    def __init__(self, app: ASGIApp, limit: int, error_body: ErrorBody = TAKEOFF.body) -> None:
        super().__init__(app)
        self.limit = limit
        self.error_body = error_body

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            body = self.error_body(scope["path"], 413, too_large_message(declared, self.limit), None)
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
