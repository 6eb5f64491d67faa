"""One error hierarchy for every port, and the Takeoff-shaped error body.

Routes raise `ApiError`s; the exception handlers installed by `install_error_handlers` turn them (and framework and
validation errors) into `{"error": <message>, "details": <detail or null>, "code": <status>}`. Streaming routes
send the same body as an SSE error event through `gateway.sse`.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from liftoff.core.http.responses import json_response
from liftoff.core.wire import Reply

log = logging.getLogger(__name__)


class ApiError(Exception):
    status = 500

    def __init__(self, message: str, details: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {"error": self.message, "details": self.details, "code": self.status}


class BadRequest(ApiError):
    status = 400


class NotFound(ApiError):
    status = 404


class PayloadTooLarge(ApiError):
    status = 413


class Unprocessable(ApiError):
    status = 422


class TooManyRequests(ApiError):
    status = 429


class Unavailable(ApiError):
    status = 503


class GatewayTimeout(ApiError):
    status = 504


_BY_STATUS: dict[int, type[ApiError]] = {
    cls.status: cls for cls in (BadRequest, NotFound, PayloadTooLarge, Unprocessable, TooManyRequests, Unavailable,
                                GatewayTimeout)
}


def error_for_status(status: int, message: str) -> ApiError:
    """The ApiError for a status a reader reported."""
    err = _BY_STATUS.get(status, ApiError)(message)
    if err.status != status:
        err.status = status
    return err


def validation_details(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"].removeprefix("Value error, ")}
        for e in exc.errors(include_url=False, include_input=False)
    ]


def from_validation(exc: ValidationError) -> Unprocessable:
    details = validation_details(exc)
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
    return Unprocessable(f"invalid request: {summary}", details)


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return json_response(exc.body(), exc.status, exc.headers)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = exc.detail if exc.status_code != 404 else f"no route for {request.method} {request.url.path}"
    if exc.status_code == 405:
        message = f"method {request.method} not allowed on {request.url.path}"
    return json_response({"error": message, "details": None, "code": exc.status_code}, exc.status_code, exc.headers)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return json_response({"error": f"internal error: {type(exc).__name__}", "details": None, "code": 500}, 500)


def raise_for_reply(reply: Reply) -> None:
    """A reader's error reply as the ApiError its status names."""
    if reply.kind == "error":
        raise error_for_status(reply.status or 500, reply.message or "the reader reported an error")


EXCEPTION_HANDLERS = {
    ApiError: handle_api_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
