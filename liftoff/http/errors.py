"""One error shape per port: how every failure on that port is answered.

Routes raise (`ApiError`s, a protocol's own errors, validation errors, Redis out of reach, bugs); the port's
`ErrorShape` turns each into its protocol's body, through the exception handlers `port_app` installs
(`exception_handlers`), and builds the answers the port machinery gives before any route runs (no route, method not
allowed, body too large, a missing or refused key) with `body`. So a port has one place that says what its errors
look like, no middleware re-reads an answer to reshape it, and a route needs no wrapper of its own.

`TakeoffShape` is Takeoff's `{"error": <message>, "details": <detail or null>, "code": <status>}` (an `ApiError`
subclass may give its own body: the deployments API's); `SimpleShape` is a protocol's body built from the status and
message alone (Vertex, Snowflake); `PathShape` lets one port speak two protocols. Redis out of reach is a 503 on
every port, a bug a 500 naming only its kind.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from liftoff.core.broker.errors import TRANSIENT
from liftoff.core.errors import ApiError, from_validation, internal_error, takeoff_error_body, unreachable
from liftoff.http.openapi import TAKEOFF_ERROR, Schema
from liftoff.http.responses import json_response

log = logging.getLogger(__name__)


class ErrorShape:
    """A port's errors: `answer` for a failure raised while serving a request, `body` for the machinery's answers
    (`path` lets one port speak two protocols: the OpenAI port's `/v1/messages` is Anthropic's), `schema` for its
    OpenAPI document, `error_types` for the exceptions of its own that routes raise."""

    schema: Schema = TAKEOFF_ERROR
    error_types: tuple[type[Exception], ...] = ()

    def body(self, path: str, status: int, message: str, details: Any = None) -> dict[str, Any]:
        return takeoff_error_body(status, message, details)

    def answer(self, request: Request, exc: Exception) -> Response:
        err = as_api_error(request, exc)
        return json_response(self.api_error_body(request.url.path, err), err.status, err.headers)

    def api_error_body(self, path: str, err: ApiError) -> dict[str, Any]:
        return err.body()


def as_api_error(request: Request, exc: Exception) -> ApiError:
    """Any failure on a request as the `ApiError` it is answered as."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, HTTPException):
        message = exc.detail
        if exc.status_code == 404:
            message = f"no route for {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} not allowed on {request.url.path}"
        err = ApiError(message, headers=exc.headers)
        err.status = exc.status_code
        return err
    if isinstance(exc, ValidationError):
        return from_validation(exc)
    if isinstance(exc, TRANSIENT):  # a route that read or wrote Redis while it was out of reach: 503, never a 500
        return unreachable(exc)
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return internal_error(exc)


class TakeoffShape(ErrorShape):
    """Takeoff's error body, on the inference, management and internal ports."""


class SimpleShape(ErrorShape):
    """A protocol whose error body is built from the status and message alone."""

    def __init__(self, builder: Callable[[int, str], dict[str, Any]], schema: Schema) -> None:
        self.builder = builder
        self.schema = schema

    def body(self, path: str, status: int, message: str, details: Any = None) -> dict[str, Any]:
        return self.builder(status, message)

    def api_error_body(self, path: str, err: ApiError) -> dict[str, Any]:
        return self.builder(err.status, err.message)


class ProtocolShape(SimpleShape):
    """A protocol with error types of its own: `convert` makes any failure one of them (it answers itself with
    `response()`); `builder(status, message)` is its body for the machinery's answers (an unknown route, a refused
    key, ...)."""

    def __init__(self, builder: Callable[[int, str], dict[str, Any]], schema: Schema,
                 convert: Callable[[Exception], Any], error_types: tuple[type[Exception], ...]) -> None:
        super().__init__(builder, schema)
        self.convert = convert
        self.error_types = error_types

    def answer(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):  # no route, method not allowed: the framework's, not a route's
            return super().answer(request, exc)
        response: Response = self.convert(exc).response()
        return response


class PathShape(ErrorShape):
    """One port, two protocols: the paths under a prefix answer in that prefix's shape, the rest in `default`'s (the
    OpenAI port's `/v1/messages` speaks Anthropic)."""

    def __init__(self, default: ErrorShape, by_prefix: dict[str, ErrorShape]) -> None:
        self.default = default
        self.by_prefix = by_prefix
        self.schema = default.schema
        self.error_types = tuple({t: None for s in (default, *by_prefix.values()) for t in s.error_types})

    def pick(self, path: str) -> ErrorShape:
        for prefix, shape in self.by_prefix.items():
            if path == prefix or path.startswith(prefix + "/"):
                return shape
        return self.default

    def body(self, path: str, status: int, message: str, details: Any = None) -> dict[str, Any]:
        return self.pick(path).body(path, status, message, details)

    def answer(self, request: Request, exc: Exception) -> Response:
        return self.pick(request.url.path).answer(request, exc)


TAKEOFF = TakeoffShape()
# A port's error body for an answer given before any route runs (`ErrorShape.body`): (path, status, message, details)
ErrorBody = Callable[[str, int, str, Any], dict[str, Any]]
Handler = Callable[[Request, Exception], Awaitable[Response]]


def exception_handlers(shape: ErrorShape) -> dict[type[Exception], Handler]:
    """Starlette's handlers for `shape`: every failure a route may raise is answered by it."""

    async def handle(request: Request, exc: Exception) -> Response:
        return shape.answer(request, exc)

    # Exception's handler runs in Starlette's outermost middleware (which logs and re-raises after answering): the
    # kinds a route raises on purpose are named, so that they are answered without that.
    expected = (ApiError, HTTPException, ValidationError, *TRANSIENT, *shape.error_types)
    return {**dict.fromkeys(expected, handle), Exception: handle}
