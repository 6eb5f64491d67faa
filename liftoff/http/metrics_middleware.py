"""Pure-ASGI middleware counting HTTP requests and timing them, labelled by route template and status.

The path label is the template of the route that served the request (`/config/{reader_id}`, not the id itself):
Starlette's router records the route in `scope["route"]` (a route inside a Mount gets the mount's prefix in front);
paths that a pure-ASGI app serves before any router (`/generate`) are given as `paths`; anything else (no route, or
refused before routing, e.g. 401) is matched against `routes` once, and what matches nothing is counted as
`unmatched`. So the label set stays bounded whatever clients send.

Cost on the hot path: two `perf_counter` calls, one wrapped `send`, one dict lookup and two mmap writes (see
docs/auth-and-metrics.md for the measurement).
"""

from __future__ import annotations

from collections.abc import Iterable
from time import perf_counter

from starlette.routing import BaseRoute, Match, Mount

from liftoff.core.metrics import http_children
from liftoff.http.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "unmatched"


class HttpMetrics:
    """Counts and times every HTTP request by route template. Not an HttpMiddleware: it serves every request of
    every port, so it takes the scope type itself rather than adding the base's frame to each await."""

    def __init__(self, app: ASGIApp, routes: Iterable[BaseRoute] = (), paths: Iterable[str] = ()) -> None:
        self.app = app
        self.routes = list(routes)
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = perf_counter()
        root = scope.get("root_path", "")  # a Mount extends it by its matched prefix
        status = 0  # 0: no response yet (an app that raises before one counts as 500); -1: counted

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body", False) and status > 0:
                # Counted before the last bytes leave, so a client holding its answer also finds it counted.
                self._observe(scope, root, status, start)
                status = -1
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            if status >= 0:
                self._observe(scope, root, status or 500, start)

    def _observe(self, scope: Scope, root: str, status: int, start: float) -> None:
        counter, histogram = http_children(self.template(scope, root), status)
        counter.inc()
        histogram.observe(perf_counter() - start)

    def template(self, scope: Scope, root: str = "") -> str:
        route = scope.get("route")
        if route is not None:
            template: str = getattr(route, "path", UNMATCHED)
            if isinstance(route, Mount):  # nothing inside the mount matched
                return template
            # A route inside a Mount has a path relative to the mount's prefix (static prefixes here).
            return scope.get("root_path", "")[len(root):] + template
        path: str = scope["path"]
        if path in self.paths:
            return path
        for candidate in self.routes:
            match, _ = candidate.matches(scope)
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
