"""One error hierarchy for every port: routes (and the domain code under them) raise `ApiError`s, each port's
handlers (`liftoff.http.errors` for Takeoff's shape; the OpenAI and Anthropic shapes in the gateway) turn them into
its error body. Nothing here knows HTTP frameworks, so the supervisor's side can raise and read them too.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from liftoff.core.wire import Reply


class ApiError(Exception):
    status = 500

    def __init__(self, message: str, details: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return takeoff_error_body(self.status, self.message, self.details)


def takeoff_error_body(status: int, message: str, details: Any = None) -> dict[str, Any]:
    """The one Takeoff error body."""
    return {"error": message, "details": details, "code": status}


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


def internal_error(exc: BaseException) -> ApiError:
    """What a client is told of a bug: its kind, nothing more (the log has the traceback)."""
    return ApiError(f"internal error: {type(exc).__name__}")


def validation_details(exc: ValidationError, prefix: str = "") -> list[dict[str, Any]]:
    """Each problem with the field it is about: `prefix` + its location; a rule across fields names the object
    (`prefix` without its dot, or `body`)."""
    return [
        {"field": _field(e["loc"], prefix), "message": e["msg"].removeprefix("Value error, ")}
        for e in exc.errors(include_url=False, include_input=False)
    ]


def _field(loc: tuple[int | str, ...], prefix: str) -> str:
    path = ".".join(str(p) for p in loc)
    return prefix + path if path else prefix.removesuffix(".") or "body"


def from_validation(exc: ValidationError, prefix: str = "") -> Unprocessable:
    """422 naming each field, under `prefix` when the validated object sits inside the body (`input.`)."""
    details = validation_details(exc, prefix)
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
    return Unprocessable(f"invalid request: {summary}", details)


def unreachable(exc: BaseException) -> Unavailable:
    """Redis out of reach, as every route answers it: 503 saying so (the client may retry)."""
    return Unavailable(f"the request queue (Redis) is unreachable: {exc}", headers={"Retry-After": "1"})


def raise_for_reply(reply: Reply) -> None:
    """A reader's error reply as the ApiError its status names."""
    if reply.kind == "error":
        raise error_for_status(reply.status or 500, reply.message or "the reader reported an error")
