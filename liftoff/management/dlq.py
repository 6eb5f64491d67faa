"""The dead-letter queue on the management port: list, retry (one, some or all), purge.

A retried request goes back to its group's stream with a fresh deadline. Its original client has long been
answered with an error, so the new result is written to the original reply stream and read by nobody: retrying is
for the work's side effects and for proving that a repaired reader serves it.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator
from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from liftoff.core import broker, wire
from liftoff.core.errors import BadRequest, NotFound
from liftoff.core.keys import Keys
from liftoff.core.wire import DeadLetter, WorkItem
from liftoff.http.context import Gateway
from liftoff.http.openapi import Doc, documented
from liftoff.http.parsing import read_json_object, validate
from liftoff.http.responses import json_response

MAX_LIST = 1000
STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")  # a dead letter's id: its DLQ stream entry id, `<ms>-<seq>`


class RetryRequest(BaseModel):
    ids: list[str] | None = Field(default=None, max_length=MAX_LIST)  # None with all=true retries every one
    all: bool = False

    @field_validator("ids")
    @classmethod
    def _stream_ids(cls, ids: list[str] | None) -> list[str] | None:
        bad = [i for i in ids or [] if not STREAM_ID.fullmatch(i)]
        if bad:
            raise ValueError(f"each id must be a dead letter's stream id like '1718000000000-0'; given {bad[:5]}")
        return ids


async def list_letters(redis: Redis, keys: Keys, count: int) -> list[dict[str, Any]]:
    return [{"id": letter_id, **letter.model_dump(exclude={"payload", "v"}), "request": _request_view(letter)}
            for letter_id, letter in await broker.read_letters(redis, keys, count)]


def _request_view(letter: DeadLetter) -> dict[str, Any] | None:
    try:
        item = WorkItem.model_validate_json(letter.payload)
    except ValidationError:
        return None
    return {"id": item.id, "kind": item.kind, "texts": item.texts, "stream": item.stream}


async def retry(redis: Redis, keys: Keys, ids: list[str] | None, timeout_s: float) -> list[str]:
    letters = await broker.read_letters(redis, keys) if ids is None else await broker.letters_by_id(redis, keys, ids)
    if ids is not None and len(letters) != len(ids):
        found = {letter_id for letter_id, _ in letters}
        raise NotFound(f"no dead letter {sorted(set(ids) - found)}")
    retried = []
    for letter_id, letter in letters:
        item = WorkItem.model_validate_json(letter.payload)
        now = wire.now_ms()
        item = item.model_copy(update={"enqueued_ms": now, "deadline_ms": now + int(timeout_s * 1000)})
        await broker.requeue(redis, keys, letter_id, letter.group, item)
        retried.append(letter_id)
    return retried


def dlq_routes(gw: Gateway) -> list[Route]:
    d = gw.dispatcher

    async def show(request: Request) -> Response:
        raw = request.query_params.get("count", "100")
        if not re.fullmatch(r"[0-9]{1,6}", raw) or not 1 <= int(raw) <= MAX_LIST:
            raise BadRequest(f"count must be an integer between 1 and {MAX_LIST}; given {raw!r}")
        total = await broker.dlq_length(d.redis, d.keys)
        return json_response({"total": total, "entries": await list_letters(d.redis, d.keys, int(raw))})

    async def retry_letters(request: Request) -> Response:
        body = validate(RetryRequest, await read_json_object(request))
        if body.ids is None and not body.all:
            raise BadRequest('name the dead letters to retry with "ids", or send {"all": true}')
        retried = await retry(d.redis, d.keys, body.ids, gw.settings.request_timeout_s)
        return json_response({"retried": retried})

    async def purge(request: Request) -> Response:
        return json_response({"purged": await broker.purge(d.redis, d.keys)})

    return [
        documented(Route("/dlq", show, methods=["GET"]),
                   Doc(summary="the dead letters", query={"count": {"type": "integer", "minimum": 1,
                                                                    "maximum": MAX_LIST}})),
        documented(Route("/dlq/retry", retry_letters, methods=["POST"]),
                   Doc(summary="requeue dead letters", body=RetryRequest)),
        documented(Route("/dlq", purge, methods=["DELETE"]), Doc(summary="delete every dead letter")),
    ]
