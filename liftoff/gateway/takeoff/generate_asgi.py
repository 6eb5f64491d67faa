"""`/generate` as a pure-ASGI app: the inference port's hot path, without the router and middleware stack.

Every layer of a framework stack is resumed on each await of the request, and for the echo path that overhead was
as large as Liftoff's own work; this app does the same job as a Starlette route (body limit, parsing, validation,
dispatch, one JSON answer, errors in the one error shape) directly on the ASGI messages. Everything else on the
port goes to `fallback`.
"""

from __future__ import annotations

import logging

from liftoff.core.broker import TRANSIENT
from liftoff.core.errors import ApiError, PayloadTooLarge, internal_error, unreachable
from liftoff.gateway.services import generate
from liftoff.gateway.takeoff.protocol import GenerateRequest
from liftoff.gateway.takeoff.requests import generate_answer, generation
from liftoff.http.asgi import header_list, send_json
from liftoff.http.context import Gateway
from liftoff.http.middleware import too_large_message
from liftoff.http.parsing import parse_json_object, validate
from liftoff.http.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

PATH = "/generate"


class GenerateApp:
    def __init__(self, gw: Gateway, fallback: ASGIApp | None) -> None:
        self.gw = gw
        self.fallback = fallback
        self.limit = gw.settings.body_size_limit_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH:
            assert self.fallback is not None, "GenerateApp serves only /generate until its fallback is set"
            await self.fallback(scope, receive, send)
            return
        try:
            if scope["method"] != "POST":
                raise MethodNotAllowed(f"method {scope['method']} not allowed on {PATH}")
            body = await self._read_body(scope, receive)
            req = validate(GenerateRequest, parse_json_object(body))  # parse, the service, shape: no frame between
            status, answer, headers = 200, generate_answer(req, await generate.generate(self.gw, generation(req))), None
        except ApiError as err:
            status, answer, headers = err.status, err.body(), err.headers
        except TRANSIENT as exc:
            err = unreachable(exc)
            status, answer, headers = err.status, err.body(), err.headers
        except Exception as exc:  # a bug must still answer, in the usual shape
            log.exception("unhandled error on %s %s", scope["method"], PATH)
            err = internal_error(exc)
            status, answer, headers = err.status, err.body(), None
        await send_json(send, status, answer, header_list(headers))

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        for name, value in scope["headers"]:  # a declared length over the limit: 413 before any body is read
            if name == b"content-length":
                if value.isdigit() and int(value) > self.limit:
                    raise PayloadTooLarge(self._too_large(int(value)))
                break
        message = await receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            body: bytes = message.get("body", b"")
            if len(body) <= self.limit:
                return body  # the whole body in one message, within the limit: most requests
        chunks, size = [], 0
        while True:
            if message["type"] == "http.disconnect":
                raise ClientGone("the client went away before sending its body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise PayloadTooLarge(self._too_large(size, at_least=True))
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
            message = await receive()

    def _too_large(self, size: int, at_least: bool = False) -> str:
        return too_large_message(size, self.limit, at_least)


class MethodNotAllowed(ApiError):
    status = 405


class ClientGone(ApiError):
    status = 499
