"""The Anthropic Messages API (/v1/messages) on the OpenAI port, errors in Anthropic's envelope."""

from __future__ import annotations

from starlette.routing import Route

from liftoff.core.http.context import Gateway


def anthropic_routes(gw: Gateway) -> list[Route]:
    return []
