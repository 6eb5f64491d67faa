"""The one way Liftoff opens a Redis client, so that timeouts agree with the blocking reads that use it."""

from __future__ import annotations

from redis.asyncio import Redis

SOCKET_TIMEOUT_S = 10.0  # longer than any BLOCK we issue (at most MAX_BLOCK_MS), so a blocking read never times out
MAX_BLOCK_MS = 2000


def connect(url: str) -> Redis:
    return Redis.from_url(url, decode_responses=False, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=5.0)
