"""The failures of the broker that its callers tell apart: Redis out of reach, and a consumer group gone."""

from __future__ import annotations

import redis.exceptions

# Redis is (for now) out of reach: callers answer 503, retry with backoff, or skip a turn. On a cluster that includes
# a master that died before its replica took over (CLUSTERDOWN, TRYAGAIN, a slot no master serves yet), and a slot
# that a blocking read asked of the master that no longer serves it (MOVED, ASK: the slot map is read again).
TRANSIENT = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
    redis.exceptions.AskError,
)


def group_gone(exc: BaseException) -> bool:
    """Whether `exc` says the consumer group (or its stream) no longer exists: Redis restarted without the data,
    a failover lost it, or someone deleted the stream. The consumer recreates it (`ensure_group`)."""
    return isinstance(exc, redis.exceptions.ResponseError) and "NOGROUP" in str(exc)
