"""Rerank and score (Cohere/Jina and vLLM shapes) over cross-encoder and embedding groups."""

from __future__ import annotations

from starlette.routing import Route

from liftoff.core.http.context import Gateway


def rerank_routes(gw: Gateway) -> list[Route]:
    return []
