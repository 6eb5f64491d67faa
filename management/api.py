"""The management API (port 3001)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.context import Gateway
from gateway.errors import EXCEPTION_HANDLERS
from gateway.health import healthz_route
from gateway.middleware import BodySizeLimit
from gateway.responses import json_response
from management.status import full_status


def create_management_app(gw: Gateway) -> Starlette:
    async def status(request: Request) -> Response:
        return json_response(await full_status(gw))

    healthz = healthz_route(gw)
    return Starlette(
        routes=[
            Route("/status", status, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/health", healthz, methods=["GET"]),
        ],
        middleware=[Middleware(BodySizeLimit, limit=gw.settings.body_size_limit_bytes)],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
    )
