"""The failures of the broker that its callers tell apart: Redis out of reach, and a consumer group gone."""

from __future__ import annotations

import redis.exceptions

# Redis is (for now) out of reach: callers answer 503, retry with backoff, or skip a turn.
TRANSIENT = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def group_gone(exc: BaseException) -> bool:
    """Whether `exc` says the consumer group (or its stream) no longer exists: Redis restarted without the data,
    or someone deleted the stream. The consumer recreates it (`ensure_group`)."""
    return isinstance(exc, redis.exceptions.ResponseError) and "NOGROUP" in str(exc)
