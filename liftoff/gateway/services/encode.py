"""The encoder kinds: `embed` (one vector per text) and `classify` (one result per text or text pair), each one batch
for one consumer group's readers."""

from __future__ import annotations

from typing import Any

from liftoff.gateway.services.limits import check_count
from liftoff.http.context import Gateway


async def embed(gw: Gateway, group: str, texts: list[str], batched: bool) -> list[list[float]]:
    """One vector per text, in order; `batched`: the client sent a list (a user batch), not one text."""
    vectors: list[list[float]] = await _encode(gw, group, "embed", len(texts), texts, batched)
    return vectors


async def classify(gw: Gateway, group: str, texts: list[str], pairs: list[list[str]] | None,
                   batched: bool) -> list[Any]:
    """One {label, score, scores} per text, or per [text, text] pair (cross-encoders, rerankers) when `pairs`."""
    return await _encode(gw, group, "classify", len(pairs or texts), texts, batched, pairs=pairs)


async def _encode(gw: Gateway, group: str, kind: str, count: int, texts: list[str], batched: bool,
                  **work: Any) -> Any:
    check_count(count, gw.settings.max_user_batch_size)
    ticket = await gw.dispatcher.submit(group, texts, kind=kind, batched=batched, **work)
    return (await gw.dispatcher.outcome(ticket)).result or []
