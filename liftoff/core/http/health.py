"""Readiness as `/healthz` reports it on every port: readers attached, and each at least in the asked state."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from liftoff.core import registry
from liftoff.core.broker import TRANSIENT
from liftoff.core.http.context import Gateway
from liftoff.core.http.errors import BadRequest
from liftoff.core.http.responses import json_response

RANK = {"dead": 0, "loading": 1, "live": 2}
MAX_WAIT_S = 600.0
POLL_S = 0.1


async def readiness(gw: Gateway, state: str) -> tuple[bool, dict[str, Any]]:
    dispatcher = gw.dispatcher
    try:
        records = await registry.read_registry(dispatcher.redis, dispatcher.keys, gw.settings.heartbeat_check_interval)
    except TRANSIENT as exc:
        return False, {"status": "unhealthy", "reason": f"the request queue (Redis) is unreachable: {exc}"}
    by_status: dict[str, list[str]] = {"live": [], "loading": [], "dead": []}
    for record in records:
        by_status[record.status].append(record.reader_id)
    lagging = [r.reader_id for r in records if RANK[r.status] < RANK[state]]
    if not records:
        reason = "no reader is attached"
    elif lagging:
        reason = f"readers not yet {state}: {lagging}"
    else:
        reason = None
    body = {
        "status": "healthy" if reason is None else "unhealthy",
        "reason": reason,
        "live_readers": by_status["live"],
        "loading_readers": by_status["loading"],
        "dead_readers": by_status["dead"],
    }
    return reason is None, body


def _query(request: Request) -> tuple[str, float]:
    state = request.query_params.get("state", "live").lower()
    if state not in ("live", "loading"):
        raise BadRequest(f"state must be 'live' or 'loading'; given {state!r}")
    raw_wait = request.query_params.get("wait", "0")
    try:
        wait = float(raw_wait.removesuffix("s"))
    except ValueError:
        raise BadRequest(f"wait must be a number of seconds; given {raw_wait!r}") from None
    if not 0 <= wait <= MAX_WAIT_S:
        raise BadRequest(f"wait must be between 0 and {MAX_WAIT_S:g} seconds; given {raw_wait!r}")
    return state, wait


def healthz_route(gw: Gateway):  # type: ignore[no-untyped-def]
    async def healthz(request: Request) -> Response:
        state, wait = _query(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            ok, body = await readiness(gw, state)
            if ok or loop.time() >= deadline:
                return json_response(body, 200 if ok else 503)
            await asyncio.sleep(POLL_S)

    return healthz
