"""The management API (port 3001)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from liftoff.core.calibration import MeasurementStore
from liftoff.http.context import Gateway
from liftoff.http.openapi import Doc, documented
from liftoff.http.port_app import port_app
from liftoff.http.responses import json_response
from liftoff.http.status import full_status
from liftoff.http.types import ASGIApp
from liftoff.management.deployments import RunGenerate, deployment_routes
from liftoff.management.dlq import dlq_routes
from liftoff.management.fit_api import fit_health_route, fit_routes
from liftoff.management.health_report import health_report_routes
from liftoff.management.metrics_api import metrics_route
from liftoff.management.readers_api import reader_routes


def create_management_app(gw: Gateway, run_generate: RunGenerate) -> ASGIApp:
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
            documented(Route("/status", status, methods=["GET"]), Doc(summary="configuration and every reader")),
            *reader_routes(gw),
            *dlq_routes(gw),
            *deployment_routes(gw, run_generate),
            *health_report_routes(gw),
            *fit_routes(gw, fit_store),
            *metrics,
        ],
        title="Liftoff management API",
    )
