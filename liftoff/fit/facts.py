"""Hardware facts: what the supervisor detected about its node, as gateway workers read them from Redis.

The supervisor (`liftoff serve`) detects the node once at start, in a child process, and publishes a
`HardwareFacts` under `keys.hardware_facts(node)`; it refreshes the RAM figures and the key's TTL every
`REFRESH_S`. Gateway workers never detect: the fit routes and `POST /reader` placement read these facts and run the
pure ranking on them. The key is per node (`hardware.node_name()`, which a gateway shares with the supervisor that
started it), so nodes sharing one Redis do not read each other's hardware; it expires `FACTS_TTL_S` after the last
refresh, so facts of a node whose supervisor is gone do not linger.

No facts (no supervisor on this node, or it has not finished detecting) is `FactsUnavailable`, a 503: a scheduler
polling the fit engine retries a 503, whereas facts guessed without the GPU probe would tell it, wrongly and
with a 200, that a GPU node has no GPU.
"""

from __future__ import annotations

import time
from typing import Protocol

from pydantic import BaseModel, ConfigDict, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from liftoff.core.errors import Unavailable
from liftoff.core.keys import Keys
from liftoff.fit.hardware import SystemSpecs, node_name

REFRESH_S = 15.0
FACTS_TTL_S = 4 * REFRESH_S
RETRY_AFTER_S = 5  # what a 503 tells the client: the supervisor publishes within seconds of its start


class HardwareFacts(BaseModel):
    """The wire format under `keys.hardware_facts(node)`: the node's specs, when and by whom they were published."""

    model_config = ConfigDict(frozen=True)

    node: SystemSpecs
    published_s: float  # epoch seconds
    publisher: str = ""  # the supervisor's id


class FactsUnavailable(Unavailable):
    """No usable facts for this node; a 503 with `Retry-After` wherever it reaches the error handlers."""

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": str(RETRY_AFTER_S)})


class FactsSource(Protocol):
    async def current(self) -> SystemSpecs:
        """This node's specs, or `FactsUnavailable`."""
        ...


class FixedFacts:
    """Facts known in-process: the supervisor's own detection, `liftoff fit`, tests."""

    def __init__(self, specs: SystemSpecs) -> None:
        self.specs = specs

    async def current(self) -> SystemSpecs:
        return self.specs


class PublishedFacts:
    """The facts a supervisor published for `node` (this node by default): one GET per call, no detection."""

    def __init__(self, redis: Redis, keys: Keys, node: str | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.node = node or node_name()

    async def current(self) -> SystemSpecs:
        key = self.keys.hardware_facts(self.node)
        try:
            raw = await self.redis.get(key)
        except (RedisError, OSError) as exc:
            raise FactsUnavailable(f"hardware facts are unavailable: Redis is unreachable ({exc})") from None
        if raw is None:
            raise FactsUnavailable(
                f"hardware facts for node {self.node!r} are not yet published (Redis key {key!r}); `liftoff serve` "
                f"publishes them at start and every {REFRESH_S:g} s. Retry shortly, or run `liftoff fit` on the node"
            )
        try:
            return HardwareFacts.model_validate_json(raw).node
        except ValidationError as exc:
            raise FactsUnavailable(f"hardware facts under {key!r} are unreadable: {exc.errors()[0]['msg']}") from None


async def publish(redis: Redis, keys: Keys, specs: SystemSpecs, publisher: str,
                  ttl_s: float = FACTS_TTL_S) -> HardwareFacts:
    facts = HardwareFacts(node=specs, published_s=time.time(), publisher=publisher)
    await redis.set(keys.hardware_facts(specs.node_name), facts.model_dump_json(), px=int(ttl_s * 1000))
    return facts
