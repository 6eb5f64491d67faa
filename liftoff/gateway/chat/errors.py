"""Errors of the OpenAI-compatible port, in OpenAI's envelope: `{"error": {"message", "type", "param", "code"}}`.

`openai_error_body` is the one builder of that body: route errors, validation errors, service, dispatcher and reader
errors (`ApiError`s, whose statuses are mapped to OpenAI's: a reader's 422 is a 400 here) and SSE error events all
go through it; `openai_shape` is it for `liftoff.http.middleware.ReshapeErrors`, which turns the Takeoff-shaped
answers of the shared port machinery (no route, method not allowed, body too large) into this shape, and
`openai_auth_error_body` for the API-key middleware.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from liftoff.core.broker import TRANSIENT
from liftoff.core.errors import ApiError, internal_error, unreachable
from liftoff.http.responses import json_response

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


OPENAI_ERROR = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["message", "type"],
                             "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                                            "param": {"type": ["string", "null"]},
                                            "code": {"type": ["string", "null"]}}}},
}


def openai_error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The one OpenAI error body: `type` follows the status (server_error from 500 on)."""
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code or _CODES.get(status)}}


def openai_auth_error_body(status: int, message: str, details: Any) -> dict[str, Any]:
    """The OpenAI port's body for a missing or refused key (`liftoff.http.auth.ErrorBody`)."""
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
    if err.status == 404 and isinstance(err.details, dict) and \
            ("known_groups" in err.details or "known_adapters" in err.details):
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
    if isinstance(exc, TRANSIENT):
        return from_api_error(unreachable(exc))
    log.error("unhandled error on the OpenAI port", exc_info=exc)
    return from_api_error(internal_error(exc))


Endpoint = Callable[[Request], Awaitable[Response]]


class _Answerable(Protocol):
    def response(self) -> Response: ...


def shaped_endpoint(handler: Endpoint, as_error: Callable[[BaseException], _Answerable]) -> Endpoint:
    """A route whose every failure is answered by `as_error`'s error (a protocol's own envelope)."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request)
        except Exception as exc:  # noqa: BLE001 — every failure is an answer in the API's error shape
            return as_error(exc).response()

    endpoint.__name__ = handler.__name__
    return endpoint


def openai_endpoint(handler: Endpoint) -> Endpoint:
    """A route whose every failure answers in OpenAI's envelope (the port's shared handlers speak Takeoff)."""
    return shaped_endpoint(handler, as_openai_error)


def openai_shape(status: int, message: str) -> dict[str, Any]:
    """The port machinery's answers (`ReshapeErrors`) in OpenAI's shape: an unknown route is `not_found`."""
    code = "not_found" if status == 404 else None
    return openai_error_body(status, message, None, code)
