"""Errors of the OpenAI-compatible port, in OpenAI's envelope: `{"error": {"message", "type", "param", "code"}}`.

`openai_error_body` is the one builder of that body: route errors, validation errors, dispatcher and reader errors
(`ApiError`s, whose statuses are mapped to OpenAI's: a reader's 422 is a 400 here) and SSE error events all go
through it. `ReshapeErrors` is a small pure-ASGI wrapper that turns the Takeoff-shaped error answers of the shared
port machinery (no route, method not allowed, body too large) into a port's own shape.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from liftoff.core.http.errors import ApiError
from liftoff.core.http.responses import json_response
from liftoff.core.http.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",  # what OpenAI answers for a missing or wrong key (code invalid_api_key)
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}
_CODES = {401: "invalid_api_key", 413: "request_too_large", 429: "rate_limit_exceeded", 503: "service_unavailable",
          504: "timeout"}
# Statuses a client of OpenAI's API knows; anything else a reader reports is folded into the nearest.
_STATUS = {422: 400, 499: 400}


def openai_error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The one OpenAI error body: `type` follows the status (server_error from 500 on)."""
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code or _CODES.get(status)}}


def openai_auth_error_body(status: int, message: str, details: Any) -> dict[str, Any]:
    """The OpenAI port's body for a missing or refused key (`liftoff.core.http.auth.ErrorBody`)."""
    return openai_error_body(status, message)


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers

    def body(self) -> dict[str, Any]:
        return openai_error_body(self.status, self.message, self.param, self.code)

    def response(self) -> Response:
        return json_response(self.body(), self.status, self.headers)


def invalid(message: str, param: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param)


def model_not_found(model: str, known: list[str]) -> OpenAIError:
    return OpenAIError(404, f"The model {model!r} does not exist; models (consumer groups) with a live reader: "
                       f"{known}", "model", "model_not_found")


def from_api_error(err: ApiError, model: str | None = None) -> OpenAIError:
    """A dispatcher or reader error in OpenAI's terms: an unknown consumer group is OpenAI's model_not_found."""
    status = _STATUS.get(err.status, err.status)
    if err.status == 404 and isinstance(err.details, dict) and "known_groups" in err.details:
        return OpenAIError(404, err.message, "model", "model_not_found")
    param = "model" if err.status == 503 and model is not None else None
    return OpenAIError(status, err.message, param, headers=err.headers)


def from_validation(exc: ValidationError) -> OpenAIError:
    """The first problem, naming its parameter (`messages.0.content`, `stop`, ...)."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = [str(p) for p in first["loc"] if not (isinstance(p, str) and ("[" in p or p in _TYPE_TAGS))]
    param = ".".join(loc) or None
    text = first["msg"].removeprefix("Value error, ")
    if first["type"] != "value_error":
        given = orjson.dumps(first.get("input"), default=str).decode()
        text = f"{text}; given {given[:200]}"
    return invalid(f"Invalid value for '{param}': {text}" if param else text, param)


# Tags pydantic puts into an error's location for the member of a union that failed.
_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "function-after", "function-before", "function-plain"}


def as_openai_error(exc: BaseException, model: str | None = None) -> OpenAIError:
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, ApiError):
        return from_api_error(exc, model)
    if isinstance(exc, ValidationError):
        return from_validation(exc)
    log.error("unhandled error on the OpenAI port", exc_info=exc)
    return OpenAIError(500, f"internal error: {type(exc).__name__}")


Endpoint = Callable[[Request], Awaitable[Response]]


def openai_endpoint(handler: Endpoint) -> Endpoint:
    """A route whose every failure answers in OpenAI's envelope (the port's shared handlers speak Takeoff)."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:  # noqa: BLE001 — every failure is an answer in the port's error shape
            return as_openai_error(exc).response()

    endpoint.__name__ = handler.__name__
    return endpoint


ErrorBuilder = Callable[[int, str], dict[str, Any]]


class ReshapeErrors:
    """Rewrites Takeoff-shaped JSON error answers (`{"error": str, "details", "code"}`) with `builder`.

    Only error statuses with a JSON body of that exact shape are touched, so the port's own answers, streams and
    health reports pass unchanged.
    """

    def __init__(self, app: ASGIApp, builder: ErrorBuilder) -> None:
        self.app = app
        self.builder = builder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
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

    async def _send_reshaped(self, send: Send, start: Message, body: bytes) -> None:
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("error"), str) and "details" in data:
            body = orjson.dumps(self.builder(start["status"], data["error"]))
        headers = [(k, v) for k, v in start.get("headers", []) if k != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def openai_shape(status: int, message: str) -> dict[str, Any]:
    code = "not_found" if status == 404 else None
    return openai_error_body(status, message, None, code)
