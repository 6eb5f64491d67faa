"""Readiness as `/healthz` reports it on every port: readers attached, and each at least in the asked state.

`?state=live|loading` (default `live`) names the state every reader must reach; `?wait=N` (seconds, at most
`request_timeout_s` and never over `MAX_WAIT_S`) holds the answer until then. Waiting requests share one read of
the registry per worker (`SharedRead`): however many probes wait, the worker reads Redis at most once per
`POLL_S`, and each waiter looks again with backoff (`POLL_S` doubling up to `MAX_POLL_S`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from liftoff.core import registry
from liftoff.core.broker import TRANSIENT
from liftoff.core.errors import BadRequest
from liftoff.http.context import Gateway
from liftoff.http.responses import json_response

RANK = {"dead": 0, "loading": 1, "live": 2}
MAX_WAIT_S = 600.0
POLL_S = 0.1
MAX_POLL_S = 2.0
STATES = ("live", "loading")
HEALTH_QUERY = {"state": {"type": "string", "enum": list(STATES)},
                "wait": {"type": "number", "minimum": 0, "maximum": MAX_WAIT_S}}

Records = list[registry.ReaderRecord]
_SHARED: dict[int, SharedRead] = {}  # id(Gateway) → the worker's one shared read, for all its ports


class SharedRead:
    """One registry read shared by every waiter: a read younger than `max_age_s` is reused, and concurrent callers
    join the read in flight instead of starting their own."""

    def __init__(self, fetch: Callable[[], Awaitable[Records]], max_age_s: float = POLL_S) -> None:
        self._fetch = fetch
        self._max_age_s = max_age_s
        self._at = float("-inf")
        self._value: Records = []
        self._inflight: asyncio.Future[Records] | None = None

    async def get(self) -> Records:
        loop = asyncio.get_running_loop()
        if loop.time() - self._at < self._max_age_s:
            return self._value
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._refresh())
        return await asyncio.shield(self._inflight)

    async def _refresh(self) -> Records:
        try:
            self._value = await self._fetch()
            self._at = asyncio.get_running_loop().time()
            return self._value
        finally:
            self._inflight = None


def registry_fetch(gw: Gateway) -> Callable[[], Awaitable[Records]]:
    d = gw.dispatcher
    return lambda: registry.read_registry(d.redis, d.keys, gw.settings.heartbeat_check_interval)


async def readiness(gw: Gateway, state: str, fetch: Callable[[], Awaitable[Records]] | None = None
                    ) -> tuple[bool, dict[str, Any]]:
    try:
        records = await (fetch or registry_fetch(gw))()
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


def max_wait_s(gw: Gateway) -> float:
    """The longest `?wait=` a probe may ask for: the request timeout, and never more than `MAX_WAIT_S`."""
    return min(MAX_WAIT_S, gw.settings.request_timeout_s)


def _query(request: Request, cap_s: float) -> tuple[str, float]:
    state = request.query_params.get("state", "live").lower()
    if state not in STATES:
        raise BadRequest(f"state must be 'live' or 'loading'; given {state!r}")
    raw_wait = request.query_params.get("wait", "0")
    try:
        wait = float(raw_wait.removesuffix("s"))
    except ValueError:
        raise BadRequest(f"wait must be a number of seconds; given {raw_wait!r}") from None
    if not 0 <= wait <= cap_s:  # NaN fails this too
        raise BadRequest(f"wait must be between 0 and {cap_s:g} seconds (the limit: request_timeout_s, at most "
                         f"{MAX_WAIT_S:g}); given {raw_wait!r}")
    return state, wait


def healthz_route(gw: Gateway):  # type: ignore[no-untyped-def]
    shared = _SHARED.setdefault(id(gw), SharedRead(registry_fetch(gw)))

    async def healthz(request: Request) -> Response:
        state, wait = _query(request, max_wait_s(gw))
        ok, body = await readiness(gw, state)
        loop = asyncio.get_running_loop()
        deadline, pause = loop.time() + wait, POLL_S
        while not ok and loop.time() < deadline:
            await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))
            pause = min(pause * 2, MAX_POLL_S)
            ok, body = await readiness(gw, state, shared.get)
        return json_response(body, 200 if ok else 503)

    return healthz
