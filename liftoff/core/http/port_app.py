"""The one way a port's Starlette app is built: its routes, the health routes, body limit and error handlers."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Route

from liftoff.core.http.context import Gateway
from liftoff.core.http.errors import EXCEPTION_HANDLERS
from liftoff.core.http.health import healthz_route
from liftoff.core.http.middleware import BodySizeLimit


def port_app(gw: Gateway, routes: list[BaseRoute]) -> Starlette:
    healthz = healthz_route(gw)
    health = [Route("/healthz", healthz, methods=["GET"]), Route("/health", healthz, methods=["GET"])]
    return Starlette(
        routes=[*routes, *health],
        middleware=[Middleware(BodySizeLimit, limit=gw.settings.body_size_limit_bytes)],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
    )
