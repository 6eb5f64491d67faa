"""The OpenAI Responses API (/v1/responses) over the generation service, with a response store in Redis."""

from __future__ import annotations

from starlette.routing import Route

from liftoff.core.http.context import Gateway


def responses_routes(gw: Gateway) -> list[Route]:
    return []
