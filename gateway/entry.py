"""The one ASGI callable every gateway worker serves: it picks the port's app by the local port of the connection.

It also runs the worker's lifespan: the dispatcher (Redis connections, reply listener) starts before the first
request and stops after the last.
"""

from __future__ import annotations

import logging

from gateway.context import Gateway
from gateway.dispatch import Dispatcher
from gateway.inference import create_inference_app
from gateway.internal import internal_routes
from gateway.port_app import port_app
from gateway.responses import json_response
from gateway.types import ASGIApp, Receive, Scope, Send
from liftoff.settings import Settings
from management.api import create_management_app

log = logging.getLogger(__name__)


class PortRouter:
    def __init__(self, settings: Settings) -> None:
        self.gateway = Gateway(settings=settings, dispatcher=Dispatcher(settings))
        # The Vertex, OpenAI and Snowflake APIs arrive later; their ports answer health probes already.
        self.apps: dict[int, ASGIApp] = {
            settings.port: create_inference_app(self.gateway),
            settings.management_port: create_management_app(self.gateway),
            settings.vertex_port: port_app(self.gateway, []),
            settings.openai_port: port_app(self.gateway, []),
            settings.snowflake_port: port_app(self.gateway, []),
            settings.internal_port: port_app(self.gateway, internal_routes(self.gateway)),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        server = scope.get("server")
        app = self.apps.get(server[1]) if server else None
        if app is None:
            response = json_response({"error": f"no API is served on {server}", "details": None, "code": 404}, 404)
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


def create_app(settings: Settings) -> PortRouter:
    return PortRouter(settings)
