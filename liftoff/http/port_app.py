"""The one way a port's Starlette app is built: its routes, the health routes, its OpenAPI document, body limit and
its error shape (liftoff.http.errors)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from liftoff.http.context import Gateway
from liftoff.http.errors import TAKEOFF, ErrorShape, exception_handlers
from liftoff.http.health import HEALTH_QUERY, healthz_route
from liftoff.http.middleware import BodySizeLimit
from liftoff.http.openapi import HEALTH_BODY, Doc, Schema, documented, openapi_document
from liftoff.http.responses import json_response

HEALTH_DOC = Doc(summary="readiness: every reader at least in the asked state", query=HEALTH_QUERY,
                 ok_schema=HEALTH_BODY, error_schemas={503: HEALTH_BODY})
OPENAPI_DOC = Doc(summary="this port's OpenAPI 3.1 document", ok_schema={"type": "object", "required": ["openapi"]})


def port_app(gw: Gateway, routes: list[BaseRoute], title: str = "Liftoff", shape: ErrorShape = TAKEOFF) -> Starlette:
    """`routes` with `/healthz`, `/health` and `/openapi.json` (`title` names the port in it), every failure and
    every answer of the machinery (no route, method not allowed, body too large) in the port's error `shape`."""
    healthz = healthz_route(gw)
    health = [documented(Route(path, healthz, methods=["GET"]), HEALTH_DOC) for path in ("/healthz", "/health")]
    document: Schema = {}

    async def openapi(request: Request) -> Response:
        if not document:  # built once, from the routes as the app holds them
            document.update(openapi_document(title, app.router.routes, shape.schema))
        return json_response(document)

    app = Starlette(
        routes=[*routes, *health, documented(Route("/openapi.json", openapi, methods=["GET"]), OPENAPI_DOC)],
        middleware=[Middleware(BodySizeLimit, limit=gw.settings.body_size_limit_bytes, error_body=shape.body)],
        exception_handlers=exception_handlers(shape),  # type: ignore[arg-type]
    )
    return app
