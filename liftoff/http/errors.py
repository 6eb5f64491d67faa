"""One error hierarchy for every port, and the Takeoff-shaped error body.

Routes raise `ApiError`s; the exception handlers of `EXCEPTION_HANDLERS` turn them (and framework and validation
errors) into `{"error": <message>, "details": <detail or null>, "code": <status>}`, built by `takeoff_error_body`
alone: the pure-ASGI answers (body too large, a refused key, `/generate`'s fast path, no port) and the SSE error
events of `liftoff.gateway.sse` use it too. Redis out of reach (the broker's `TRANSIENT` errors, raised from any route)
is
a 503 by `handle_transient`, so no route needs a guard of its own for it.
Ports with another protocol have their own builder and translate `ApiError`s.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from liftoff.core.broker.errors import TRANSIENT
from liftoff.core.errors import ApiError, internal_error, takeoff_error_body, unreachable
from liftoff.http.responses import json_response

log = logging.getLogger(__name__)


async def handle_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return json_response(exc.body(), exc.status, exc.headers)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = exc.detail if exc.status_code != 404 else f"no route for {request.method} {request.url.path}"
    if exc.status_code == 405:
        message = f"method {request.method} not allowed on {request.url.path}"
    return json_response(takeoff_error_body(exc.status_code, message), exc.status_code, exc.headers)


async def handle_transient(request: Request, exc: Exception) -> Response:
    """A route that read or wrote Redis while it was out of reach: 503, never a 500."""
    err = unreachable(exc)
    return json_response(err.body(), err.status, err.headers)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    err = internal_error(exc)
    return json_response(err.body(), err.status)


EXCEPTION_HANDLERS = {
    ApiError: handle_api_error,
    HTTPException: handle_http_exception,
    **{cls: handle_transient for cls in TRANSIENT},
    Exception: handle_unexpected,
}
