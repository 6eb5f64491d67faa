"""The one way Liftoff opens a Redis client.

No socket timeout: every blocking read we issue carries its own BLOCK (at most MAX_BLOCK_MS), request waits are
bounded by their deadlines at the gateway, and a per-read timeout costs an asyncio timer on every reply of the hot
path. A peer that vanishes without closing the socket is found by TCP keepalive; a closed socket fails at once.
Retries are left to our own loops (one capped, jittered backoff), so that a request meets an outage with a prompt
503 rather than a silent wait.
"""

from __future__ import annotations

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

MAX_BLOCK_MS = 2000


def connect(url: str) -> Redis:
    tcp = {} if url.startswith("unix:") else {"socket_keepalive": True}
    return Redis.from_url(
        url,
        decode_responses=False,
        socket_timeout=None,
        socket_connect_timeout=5.0,
        retry=Retry(NoBackoff(), 1),
        **tcp,
    )
