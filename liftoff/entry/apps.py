"""The one ASGI callable every gateway worker serves: it picks the port's app by the local port of the connection.

It also runs the worker's lifespan: the dispatcher (Redis connections, reply listener) starts before the first
request and stops after the last.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

from liftoff.core.errors import takeoff_error_body
from liftoff.core.settings import Settings
from liftoff.gateway.anthropic.errors import ANTHROPIC_SHAPE
from liftoff.gateway.anthropic.errors import PATH as ANTHROPIC_PATH
from liftoff.gateway.anthropic.routes import anthropic_routes
from liftoff.gateway.chat.errors import OPENAI_SHAPE
from liftoff.gateway.internal import internal_routes
from liftoff.gateway.openai.routes import openai_routes
from liftoff.gateway.snowflake import SNOWFLAKE_ERROR, snowflake_error_body, snowflake_routes
from liftoff.gateway.takeoff.requests import generate_for_group
from liftoff.gateway.takeoff.routes import create_inference_app
from liftoff.gateway.vertex import VERTEX_ERROR, health_path, vertex_error_body, vertex_routes
from liftoff.http.auth import inference_auth, management_auth
from liftoff.http.context import Gateway
from liftoff.http.dispatch import Dispatcher
from liftoff.http.errors import PathShape, SimpleShape
from liftoff.http.metrics_middleware import HttpMetrics, starlette_routes
from liftoff.http.port_app import port_app
from liftoff.http.responses import json_response
from liftoff.http.types import ASGIApp, Receive, Scope, Send
from liftoff.management.api import create_management_app

log = logging.getLogger(__name__)

GENERATE_PATHS = ("/generate",)  # served by GenerateApp before any router


class PortRouter:
    def __init__(self, settings: Settings) -> None:
        self.gateway = Gateway(settings=settings, dispatcher=Dispatcher(settings))
        s, gw = settings, self.gateway
        # one error shape per port (liftoff.http.errors); 3003 serves OpenAI's routes (with Responses and rerank)
        # and Anthropic's Messages, each answering in its own protocol's shape
        chat_port = PathShape(OPENAI_SHAPE, {ANTHROPIC_PATH: ANTHROPIC_SHAPE})
        vertex, snowflake = SimpleShape(vertex_error_body, VERTEX_ERROR), SimpleShape(snowflake_error_body,
                                                                                      SNOWFLAKE_ERROR)
        takeoff_keys = partial(inference_auth, settings=s)
        self.apps: dict[int, ASGIApp] = {
            s.port: self._serve(create_inference_app(gw), takeoff_keys),
            s.management_port: self._serve(create_management_app(gw, partial(generate_for_group, gw)),
                                           partial(management_auth, settings=s)),
            s.vertex_port: self._serve(port_app(gw, vertex_routes(gw), "Liftoff Vertex AI API", vertex),
                                       partial(takeoff_keys, open_paths=vertex_open_paths(), error_body=vertex.body)),
            s.openai_port: self._serve(port_app(gw, [*openai_routes(gw), *anthropic_routes(gw)],
                                                "Liftoff OpenAI-compatible API", chat_port),
                                       partial(takeoff_keys, error_body=chat_port.body)),
            s.snowflake_port: self._serve(port_app(gw, snowflake_routes(gw), "Liftoff Snowflake API", snowflake),
                                          partial(takeoff_keys, error_body=snowflake.body)),
            s.internal_port: self._serve(port_app(gw, internal_routes(gw), "Liftoff internal API"), None),
        }

    def _serve(self, app: ASGIApp, guard: Callable[[ASGIApp], ASGIApp] | None) -> ASGIApp:
        """A port's app behind its API keys (none configured: open), measured outermost so refused requests count."""
        routes = starlette_routes(app)
        if guard is not None:
            app = guard(app)
        if not self.gateway.settings.enable_metrics:
            return app
        return HttpMetrics(app, routes, GENERATE_PATHS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        server = scope.get("server")
        app = self.apps.get(server[1]) if server else None
        if app is None:
            response = json_response(takeoff_error_body(404, f"no API is served on {server}"), 404)
            await response(scope, receive, send)
            return
        await app(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.gateway.dispatcher.start()
                except Exception as exc:  # noqa: BLE001 — reported to the server, which stops the worker
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.gateway.dispatcher.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def vertex_open_paths() -> frozenset[str]:
    """Vertex's health probe sends no key: its route stays open like /healthz."""
    path = health_path()
    return frozenset({path} if path else ())


def create_app(settings: Settings) -> PortRouter:
    return PortRouter(settings)
