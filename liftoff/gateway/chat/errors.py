"""Errors of the OpenAI-compatible port, in OpenAI's envelope: `{"error": {"message", "type", "param", "code"}}`.

`openai_error_body` is the one builder of that body: route errors, validation errors, service, dispatcher and reader
errors (`ApiError`s, whose statuses are mapped to OpenAI's: a reader's 422 is a 400 here) and SSE error events all
go through it. `OPENAI_SHAPE` is the port's error shape (liftoff.http.errors): the exception handlers answer with it,
and the shared port machinery (no route, method not allowed, body too large, a refused key) builds its answers
with it.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.responses import Response

from liftoff.core.broker import TRANSIENT
from liftoff.core.errors import ApiError, internal_error, unreachable
from liftoff.http.errors import ProtocolShape
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


def openai_shape(status: int, message: str) -> dict[str, Any]:
    """An answer of the port machinery in OpenAI's shape: an unknown route is `not_found`."""
    code = "not_found" if status == 404 else None
    return openai_error_body(status, message, None, code)


# The OpenAI port's errors: whatever a route raises, as `as_openai_error` makes it (the machinery's own answers, an
# unknown route or a refused key, through `openai_shape`).
OPENAI_SHAPE = ProtocolShape(openai_shape, OPENAI_ERROR, as_openai_error, (OpenAIError,))
