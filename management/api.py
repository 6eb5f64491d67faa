"""The management API (port 3001)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.context import Gateway
from gateway.port_app import port_app
from gateway.responses import json_response
from gateway.types import ASGIApp
from management.deployments import deployment_routes
from management.dlq import dlq_routes
from management.fit.api import fit_health_route, fit_routes
from management.fit.calibration import MeasurementStore
from management.health_report import health_report_routes
from management.metrics_api import metrics_route
from management.readers_api import reader_routes
from management.status import full_status


def create_management_app(gw: Gateway) -> ASGIApp:
    async def status(request: Request) -> Response:
        return json_response(await full_status(gw))

    metrics = [metrics_route(gw)] if gw.settings.enable_metrics else []
    fit_store = MeasurementStore(gw.dispatcher.redis, gw.dispatcher.keys.fit_measurements)
    # The fit engine's `/health` (the reference's liveness body) comes first, so it answers on this port;
    # readiness stays at `/healthz`.
    return port_app(
        gw,
        [
            fit_health_route(),
            Route("/status", status, methods=["GET"]),
            *reader_routes(gw),
            *dlq_routes(gw),
            *deployment_routes(gw),
            *health_report_routes(gw),
            *fit_routes(gw, fit_store),
            *metrics,
        ],
    )
