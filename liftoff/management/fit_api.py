"""The fit engine's HTTP routes: thin handlers over `liftoff.fit.report`, run on published hardware facts.

These routes are served by gateway workers, which never detect hardware (see `liftoff.fit.facts`): the node's
specs come from the facts its supervisor publishes in Redis, one GET per request. Until they are published the
routes answer 503 with `Retry-After`.

Errors use the reference's own body, `{"error": "..."}` (400 for a bad filter value, 503 when the hardware facts
are not published yet, 500 `server error: ...`), not Liftoff's `{"error", "details", "code"}` shape, because
schedulers written against the reference parse it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from liftoff.core.calibration import Measurement, MeasurementSource, NoMeasurements
from liftoff.fit.catalog import OVERLAY_ENV, ModelSpec, load_catalog
from liftoff.fit.facts import FactsSource, FactsUnavailable, PublishedFacts
from liftoff.fit.hardware import node_name
from liftoff.fit.query import FitQuery, FitQueryError, parse_query
from liftoff.fit.report import fit_report, health_report, query_specs, system_report
from liftoff.http.context import Gateway
from liftoff.http.openapi import Doc, documented
from liftoff.http.responses import json_response

log = logging.getLogger(__name__)


class FitService:
    """What the routes need: the node's facts, its catalog, and its measurements; each injectable for tests."""

    def __init__(self, repository_path: str | None, facts: FactsSource, store: MeasurementSource | None = None,
                 overlay_path: str | None = None) -> None:
        self.repository_path = repository_path
        self.store = store or NoMeasurements()
        self.facts = facts
        self.overlay_path = overlay_path if overlay_path is not None else os.environ.get(OVERLAY_ENV)

    def catalog(self) -> tuple[ModelSpec, ...]:
        return load_catalog(self.repository_path, self.overlay_path)

    async def measurements(self) -> dict[str, Measurement]:
        try:
            return await self.store.all()
        except (RedisError, OSError) as exc:
            # Estimates are still an answer; a Redis outage must not take the fit report down with it.
            log.warning("fit measurements unavailable, answering with estimates: %s", exc)
            return {}

    async def report(self, query: FitQuery) -> dict[str, Any]:
        specs = await self.facts.current()
        return fit_report(self.catalog(), specs, query, await self.measurements())


def _error(message: str, status: int) -> Response:
    return json_response({"error": message}, status)


def _unavailable(exc: FactsUnavailable) -> Response:
    return json_response({"error": exc.message}, exc.status, exc.headers)


def fit_routes(gw: Gateway, store: MeasurementSource | None = None, facts: FactsSource | None = None,
               overlay_path: str | None = None) -> list[Route]:
    """`/api/v1/system`, `/api/v1/models`, `/api/v1/models/top`, `/api/v1/models/{name}` for the management app.

    `facts` defaults to those published for this node in the worker's Redis (`gw.dispatcher`).
    """
    if facts is None:
        facts = PublishedFacts(gw.dispatcher.redis, gw.dispatcher.keys)
    service = FitService(gw.settings.repository_path, facts, store, overlay_path)

    async def respond(request: Request, top_only: bool = False, name: str | None = None) -> Response:
        try:
            query = parse_query(request.query_params, top_only=top_only, name=name)
        except FitQueryError as exc:
            return _error(str(exc), 400)
        try:
            return json_response(await service.report(query))
        except FactsUnavailable as exc:
            return _unavailable(exc)
        except Exception as exc:
            log.exception("fit report failed")
            return _error(f"server error: {exc}", 500)

    async def models(request: Request) -> Response:
        return await respond(request)

    async def top(request: Request) -> Response:
        return await respond(request, top_only=True)

    async def by_name(request: Request) -> Response:
        return await respond(request, name=request.path_params["name"])

    async def system(request: Request) -> Response:
        try:
            query = parse_query(request.query_params)
        except FitQueryError as exc:
            return _error(str(exc), 400)
        try:
            specs = await service.facts.current()
        except FactsUnavailable as exc:
            return _unavailable(exc)
        return json_response(system_report(query_specs(specs, query)))

    return [
        documented(Route("/api/v1/system", system, methods=["GET"]), _doc("the node's hardware")),
        documented(Route("/api/v1/models", models, methods=["GET"]), _doc("every catalog model, ranked")),
        documented(Route("/api/v1/models/top", top, methods=["GET"]), _doc("the best fitting models")),
        documented(Route("/api/v1/models/{name:path}", by_name, methods=["GET"]), _doc("models by name")),
    ]


FIT_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
FIT_QUERY = {
    "limit": {"type": "integer", "minimum": 0}, "perfect": {"type": "boolean"},
    "include_too_tight": {"type": "boolean"}, "max_context": {"type": "integer", "minimum": 1},
    "ram_gb": {"type": "number", "exclusiveMinimum": 0}, "vram_gb": {"type": "number", "minimum": 0},
    "cpu_cores": {"type": "integer", "minimum": 1}, "sort": {"type": "string"}, "min_fit": {"type": "string"},
    "runtime": {"type": "string"}, "use_case": {"type": "string"}, "provider": {"type": "string"},
    "search": {"type": "string"},
}


def _doc(summary: str) -> Doc:
    return Doc(summary=summary, query=FIT_QUERY, error_schema=FIT_ERROR)


def fit_health_route(node: Callable[[], str] = node_name, path: str = "/health") -> Route:
    """The reference's liveness body, `{"status": "ok", "node": {"name", "os"}}`.

    Liveness needs only the node's name and OS, so it reads no hardware facts and answers before they are
    published. Liftoff's port apps already answer `/health` with the readiness body; mount this where the
    reference shape is wanted (it must come before the port app's own `/health` route to win).
    """

    async def health(request: Request) -> Response:
        return json_response(health_report(node()))

    return documented(Route(path, health, methods=["GET"]), Doc(summary="liveness: the node's name and OS"))
