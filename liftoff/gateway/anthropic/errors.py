"""Errors of the Anthropic Messages API (`/v1/messages*` on the OpenAI port), in Anthropic's envelope:
`{"type": "error", "error": {"type": <kind>, "message": ...}}`, the kind following the status as Anthropic's does.

Route errors, validation errors, service and reader errors (through the OpenAI port's translation of `ApiError`s,
which folds a reader's 422 into a 400) and SSE error events all go through `anthropic_error_body`. `ANTHROPIC_SHAPE`
is the error shape of these paths on the OpenAI port, so the answers the port's shared machinery gives on them (no
route, method not allowed, body too large, a missing or refused key) speak it too.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError
from starlette.responses import Response

from liftoff.gateway import sse
from liftoff.gateway.chat.errors import OpenAIError, as_openai_error
from liftoff.http.errors import ProtocolShape
from liftoff.http.responses import json_response

PATH = "/v1/messages"
_KINDS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}

ANTHROPIC_ERROR = {
    "type": "object", "required": ["type", "error"],
    "properties": {"type": {"const": "error"},
                   "error": {"type": "object", "required": ["type", "message"],
                             "properties": {"type": {"type": "string"}, "message": {"type": "string"}}}},
}


def anthropic_error_body(status: int, message: str) -> dict[str, Any]:
    """The one Anthropic error body: the kind follows the status (api_error for an unlisted 5xx)."""
    kind = _KINDS.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


class AnthropicError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers

    def response(self) -> Response:
        return json_response(anthropic_error_body(self.status, self.message), self.status, self.headers)


def invalid(message: str) -> AnthropicError:
    return AnthropicError(400, message)


def from_validation(exc: ValidationError) -> AnthropicError:
    """One problem, by its place in the body (`messages.0.content.1.input`, `max_tokens`): the deepest, which for a
    value that may be a string or a list of blocks is the block's rather than "not a string"."""
    first = max(exc.errors(include_url=False), key=lambda e: len(e["loc"]))
    where = ".".join(str(p) for p in first["loc"] if not _type_tag(p))
    text = first["msg"].removeprefix("Value error, ")
    if first["type"] not in ("value_error", "missing", "extra_forbidden"):
        text = f"{text}; given {orjson.dumps(first.get('input'), default=str).decode()[:200]}"
    if first["type"] == "extra_forbidden":
        text = "unknown field: this server does not support it"
    return invalid(f"{where}: {text}" if where else text)


def _type_tag(part: int | str) -> bool:
    """A part of an error's location that names a union member rather than a field (`str`, `list[...]`, a tag)."""
    return isinstance(part, str) and ("[" in part or part.endswith("-") or part.startswith("function-")
                                      or part in ("str", "int", "float", "bool", "list", "dict"))


def as_anthropic_error(exc: BaseException) -> AnthropicError:
    """Any failure as an answer: our own, a validation error, or whatever the OpenAI port makes of it (an
    `ApiError`'s status mapped, Redis out of reach a 503, a bug logged and answered as its kind only)."""
    if isinstance(exc, AnthropicError):
        return exc
    if isinstance(exc, ValidationError):
        return from_validation(exc)
    err = as_openai_error(exc)
    return AnthropicError(err.status, err.message, err.headers)


def error_event(exc: BaseException) -> bytes:
    err = as_anthropic_error(exc)
    return sse.json_event(anthropic_error_body(err.status, err.message), "error")


# Anthropic's errors, for the `/v1/messages*` paths of the OpenAI port (a `PathShape` there picks it by `PATH`).
ANTHROPIC_SHAPE = ProtocolShape(anthropic_error_body, ANTHROPIC_ERROR, as_anthropic_error,
                                (AnthropicError, OpenAIError))
