"""Server-sent events, written in one place: event framing, error events, the end of a stream.

Framing follows the SSE specification: a value with line breaks becomes one `data:` line per line (clients join
them with "\n"), and every `data:` is followed by one space, which spec-compliant clients strip, so a token that
starts with a space keeps it. A stream never raises after its first byte: failures become an `error` event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.responses import StreamingResponse

from liftoff.core.errors import ApiError

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def event(data: str, name: str | None = None) -> bytes:
    lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    head = f"event: {name}\n" if name else ""
    return (head + "".join(f"data: {line}\n" for line in lines) + "\n").encode()


def json_event(payload: Any, name: str | None = None) -> bytes:
    """One event of JSON: compact JSON text has no line break (orjson escapes them in strings), so it is one
    `data:` line as it comes, without the framing's split and join (this runs once per streamed token)."""
    head = b"event: " + name.encode() + b"\ndata: " if name else b"data: "
    return head + orjson.dumps(payload) + b"\n\n"


def error_event(err: ApiError) -> bytes:
    return json_event(err.body(), "error")


def response(events: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers=HEADERS)
