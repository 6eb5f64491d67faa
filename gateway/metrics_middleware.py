"""Pure-ASGI middleware counting HTTP requests and timing them, labelled by route template and status.

The path label is the template of the route that served the request (`/config/{reader_id}`, not the id itself):
Starlette's router records the route in `scope["route"]`; paths that a pure-ASGI app serves before any router
(`/generate`) are given as `paths`; anything else (no route, or refused before routing, e.g. 401) is matched
against `routes` once, and what matches nothing is counted as `unmatched`. So the label set stays bounded whatever
clients send.

Cost on the hot path: two `perf_counter` calls, one wrapped `send`, one dict lookup and two mmap writes (about
3 µs a request in multiprocess mode; see docs/auth-and-metrics.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from time import perf_counter

from starlette.routing import BaseRoute, Match

from gateway.types import ASGIApp, Message, Receive, Scope, Send
from liftoff.metrics import http_children

UNMATCHED = "unmatched"


class HttpMetrics:
    def __init__(self, app: ASGIApp, routes: Iterable[BaseRoute] = (), paths: Iterable[str] = ()) -> None:
        self.app = app
        self.routes = list(routes)
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = perf_counter()
        status = 500  # the app raised before starting a response

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            counter, histogram = http_children(self.template(scope), status)
            counter.inc()
            histogram.observe(perf_counter() - start)

    def template(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is not None:
            return getattr(route, "path", UNMATCHED)
        path: str = scope["path"]
        if path in self.paths:
            return path
        for candidate in self.routes:
            match, _ = candidate.matches({**scope, "type": "http"})
            if match is not Match.NONE:
                return getattr(candidate, "path", UNMATCHED)
        return UNMATCHED


def starlette_routes(app: object) -> list[BaseRoute]:
    """The routes of a port's app: a Starlette app's own, or those of the Starlette app a pure-ASGI front
    (`GenerateApp`) falls back to."""
    for candidate in (app, getattr(app, "fallback", None)):
        routes = getattr(candidate, "routes", None)
        if routes is not None:
            return list(routes)
    return []
