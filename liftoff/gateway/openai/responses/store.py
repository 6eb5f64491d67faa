"""The response store: a response with `store` (the default) is kept in Redis for GET /v1/responses/{id} and for
`previous_response_id`, with the conversation that led to it (its input items, the stored ones it continued
included), one key per response (`Keys.response`), expiring after `responses_ttl_s`.

A streamed response is stored as soon as its id is sent (`in_progress`, expiring after the request's longest life,
`request_timeout_s` + 60 s, at most `responses_ttl_s`) and replaced when it ends, unless it was deleted meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from liftoff.http.context import Gateway

RUNNING_MARGIN_S = 60  # beyond request_timeout_s, how long a streaming response's record outlives a gateway gone


@dataclass(frozen=True)
class Stored:
    response: dict[str, Any]  # the Response object
    conversation: list[dict[str, Any]]  # the input items that led to it, stored ones included


class ResponseStore:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.ttl_s = gw.settings.responses_ttl_s
        self.running_ttl_s = min(self.ttl_s, int(gw.settings.request_timeout_s) + RUNNING_MARGIN_S)

    def _key(self, response_id: str) -> str:
        return self.gw.dispatcher.keys.response(response_id)

    async def save(self, response: dict[str, Any], conversation: list[dict[str, Any]], replace: bool = False) -> None:
        """Keep `response` (an in-progress one for a shorter while); `replace`: only over its own earlier record,
        so that a response deleted while it streamed stays deleted."""
        running = response["status"] == "in_progress"
        value = orjson.dumps({"response": response, "conversation": conversation})
        await self.gw.dispatcher.redis.set(self._key(response["id"]), value,
                                           ex=self.running_ttl_s if running else self.ttl_s, xx=replace)

    async def load(self, response_id: str) -> Stored | None:
        raw = await self.gw.dispatcher.redis.get(self._key(response_id))
        if raw is None:
            return None
        data = orjson.loads(raw)
        return Stored(data["response"], data["conversation"])

    async def delete(self, response_id: str) -> bool:
        return bool(await self.gw.dispatcher.redis.delete(self._key(response_id)))
