"""The one way Liftoff opens a Redis client: one node, or a Redis Cluster named by its seed nodes.

`redis_url` forms: `redis://[user:password@]host:port/db`, `rediss://…` (TLS), `unix:///path/redis.sock` for one
node; `redis+cluster://[user:password@]host1:port1,host2:port2` (`rediss+cluster://` with TLS) for a cluster, whose
other nodes the client learns from the seeds. The same code runs on both: every multi-key command Liftoff sends
touches one hash slot (see `liftoff.core.keys`), and `is_cluster` tells the broker where it must use sharded pub/sub.

No socket timeout: every blocking read we issue carries its own BLOCK (at most MAX_BLOCK_MS), request waits are
bounded by their deadlines at the gateway, and a per-read timeout costs an asyncio timer on every reply of the hot
path. A peer that vanishes without closing the socket is found by TCP keepalive, probed after KEEPALIVE_IDLE_S of
silence (so a blocked read on a dead master ends within about ten seconds); a closed socket fails at once.
Retries are left to our own loops (one capped, jittered backoff), so that a request meets an outage with a prompt
503 rather than a silent wait. A cluster client refreshes its map of slots to masters after any failed command,
which is how it finds a promoted replica.
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import AskError, RedisClusterException, SlotNotCoveredError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

MAX_BLOCK_MS = 2000
KEEPALIVE_IDLE_S = 5
CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}  # scheme → TLS
NODE_SCHEMES = ("redis", "rediss", "unix")

RedisClient = Redis | RedisCluster


@dataclass(frozen=True, slots=True)
class ClusterAddress:
    seeds: list[tuple[str, int]]
    username: str | None
    password: str | None
    tls: bool


def check_url(url: str) -> str:
    """`url` if it is a `redis_url` Liftoff can open; else a ValueError that says what is wrong with it."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme in CLUSTER_SCHEMES:
        parse_cluster_url(url)
    elif scheme not in NODE_SCHEMES:
        raise ValueError(f"redis_url must start with redis://, rediss://, unix://, redis+cluster:// or "
                         f"rediss+cluster://; given {url!r}")
    return url


def parse_cluster_url(url: str) -> ClusterAddress:
    """The seed nodes and credentials of a `redis+cluster://` URL."""
    parts = urlsplit(url)
    if parts.path not in ("", "/") or parts.query:
        raise ValueError(f"a redis+cluster:// URL names seed nodes only (a cluster has one database, 0); given {url!r}")
    credentials, _, hosts = parts.netloc.rpartition("@")
    username, _, password = credentials.partition(":")
    seeds = []
    for seed in hosts.split(","):
        host, sep, port = seed.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"each seed node of a redis+cluster:// URL is host:port; given {seed!r} in {url!r}")
        seeds.append((host.strip("[]"), int(port)))
    return ClusterAddress(seeds, unquote(username) or None, unquote(password) or None, CLUSTER_SCHEMES[parts.scheme])


def redact(url: str) -> str:
    """`url` with its password replaced by `***` (for logs and reports); a cluster URL's seed list kept whole."""
    parts = urlsplit(url)
    credentials, at, hosts = parts.netloc.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return urlunsplit(parts._replace(netloc=f"{credentials.split(':', 1)[0]}:***@{hosts}"))


def is_cluster(redis: RedisClient) -> bool:
    # `type(...) is Redis` first: redis-py's clients carry typing.Protocol's metaclass, whose isinstance walks the
    # ABC machinery on every call that does not match the exact type, and this is asked on every request.
    return type(redis) is not Redis and isinstance(redis, RedisCluster)


def slot_of(key: str) -> int:
    """The hash slot of `key` on a cluster (the slot of the text in its first non-empty `{…}`, else of the key)."""
    return key_slot(key.encode())


def same_slot(redis: RedisClient, *keys: str) -> bool:
    """Whether one script or MULTI may touch all of `keys`: always on a single Redis, on a cluster when they share a
    hash slot."""
    return not is_cluster(redis) or len({slot_of(key) for key in keys}) == 1


def connect(url: str) -> RedisClient:
    tcp = {} if url.startswith("unix:") else {"socket_keepalive": True, "socket_keepalive_options": _KEEPALIVE}
    common: dict[str, Any] = {"decode_responses": False, "socket_timeout": None, "socket_connect_timeout": 5.0,
                              "retry": Retry(NoBackoff(), 1), **tcp}
    if url.split("://", 1)[0] in CLUSTER_SCHEMES:
        address = parse_cluster_url(url)
        node = {"username": address.username, "password": address.password, "ssl": address.tls, **common}
        return _Cluster(node, startup_nodes=[ClusterNode(host, port) for host, port in address.seeds],
                        reinitialize_steps=0, require_full_coverage=False, **node)
    return Redis.from_url(url, **common)


async def close(redis: RedisClient) -> None:
    """Close `redis` and, on a cluster, its clients of single masters."""
    if isinstance(redis, _Cluster):
        await redis.close_all()
    else:
        await redis.aclose()


async def get_many(redis: RedisClient, keys: list[str]) -> list[bytes | None]:
    """GET of each key, in order, in one round trip (one per master on a cluster, where MGET takes one slot)."""
    if isinstance(redis, RedisCluster):
        return list(await redis.mget_nonatomic(keys))
    return list(await redis.mget(keys))


async def node_for(redis: RedisClient, key: str) -> Redis:
    """The client that reaches the master serving `key`'s slot now: `redis` itself on one Redis; on a cluster, a
    plain client of that master. Blocking reads and subscriptions go there: redis-py's cluster client drops every
    connection it has when one command meets CLUSTERDOWN, which would end the blocking reads of every other group."""
    if type(redis) is Redis or not isinstance(redis, _Cluster):
        return redis
    return await redis.master_client(key)


async def refresh_topology(redis: RedisClient) -> None:
    """After a failure: re-read which master serves which slot now (plain node clients do not do it by
    themselves). A cluster out of reach leaves the map as it was."""
    if isinstance(redis, _Cluster):
        with contextlib.suppress(RedisConnectionError):
            await redis.refresh()


class _Cluster(RedisCluster):
    """redis-py's cluster client, with two changes:

    * "no node reachable" is raised as the connection error it is, so that callers treat a cluster that is down as
      they treat a single Redis that is down (503, retry with backoff);
    * `pipeline(transaction=True)` is a plain MULTI/EXEC sent to the master of the one hash slot its commands touch
      (`_SlotTransaction`): redis-py's own cluster transactions run each queued command in a thread of its own."""

    def __init__(self, node_options: dict[str, Any], **options: Any) -> None:
        super().__init__(**options)
        self._node_options = node_options
        self._node_clients: dict[str, Redis] = {}

    async def initialize(self, *args: Any, **kwargs: Any) -> RedisCluster:
        try:
            return await super().initialize(*args, **kwargs)
        except RedisClusterException as exc:
            if "cannot be connected" not in str(exc):
                raise
            raise RedisConnectionError(str(exc)) from exc

    async def refresh(self) -> None:
        try:
            await self.nodes_manager.initialize()
        except RedisClusterException as exc:
            raise RedisConnectionError(str(exc)) from exc

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> Any:
        if transaction:
            return _SlotTransaction(self)
        return super().pipeline(transaction=None, shard_hint=shard_hint)

    async def master_client(self, key: str) -> Redis:
        if self._initialize:  # first use, or a failure since: read the slot map first
            await self.initialize()
        try:
            node = self.nodes_manager.get_node_from_slot(slot_of(key))
        except SlotNotCoveredError as exc:
            raise RedisConnectionError(str(exc)) from exc
        return self.node_client(node.host, node.port)

    def node_client(self, host: str, port: int) -> Redis:
        """A plain client of one node (its connections made when first used)."""
        name = f"{host}:{port}"
        client = self._node_clients.get(name)
        if client is None:
            # No retry of its own: a MULTI/EXEC resent after its reply was lost could be applied twice (the
            # callers' loops retry what did not go through, after re-reading the slot map).
            options = {**self._node_options, "retry": Retry(NoBackoff(), 0)}
            client = self._node_clients[name] = Redis(host=host, port=port, **options)
        return client

    async def close_all(self) -> None:
        """Close the node clients too. (`aclose` leaves them alone: redis-py calls it itself, to drop its own
        connections, whenever a command meets CLUSTERDOWN.)"""
        for client in self._node_clients.values():
            await client.aclose()
        await self.aclose()


class _SlotTransaction(Pipeline):
    """MULTI/EXEC on a cluster: every command in one hash slot, sent to the master of that slot when it runs. A
    failure to reach it (or a slot that moved) re-reads the slot map and is raised as a connection error, so that the
    caller's retry goes to the master that serves the slot then."""

    def __init__(self, cluster: _Cluster) -> None:
        self._cluster = cluster
        seed = cluster.node_client(*_first_seed(cluster))  # replaced by the slot's master in `execute`
        super().__init__(seed.connection_pool, seed.response_callbacks, transaction=True, shard_hint=None)

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        if not self.command_stack:
            return []
        slots = {slot for args, _ in self.command_stack for slot in _slots(args)}
        if len(slots) != 1:
            raise RedisClusterException(f"a MULTI/EXEC on a cluster must touch one hash slot; this one touches "
                                        f"{len(slots)}: {[args[0] for args, _ in self.command_stack]}")
        try:
            node = self._cluster.nodes_manager.get_node_from_slot(slots.pop())
            self.connection_pool = self._cluster.node_client(node.host, node.port).connection_pool
            return list(await super().execute(raise_on_error))
        except (RedisConnectionError, RedisTimeoutError, OSError, AskError, SlotNotCoveredError) as exc:
            await self.reset()
            await refresh_topology(self._cluster)
            if isinstance(exc, (AskError, SlotNotCoveredError)):  # MovedError too: the slot is served elsewhere now
                raise RedisConnectionError(f"the slot is served elsewhere now: {exc}") from exc
            raise


def _first_seed(cluster: RedisCluster) -> tuple[str, int]:
    node = cluster.nodes_manager.startup_nodes
    first = next(iter(node.values()))
    return first.host, first.port


def _slots(args: tuple[Any, ...]) -> set[int]:
    """The hash slots of the keys of one command (as Liftoff's transactions use them)."""
    name = str(args[0]).upper()
    if name in ("EVAL", "EVALSHA"):
        keys = args[3: 3 + int(args[2])]
    elif name in ("DEL", "UNLINK", "EXISTS"):
        keys = args[1:]
    else:
        keys = args[1:2]
    return {key_slot(key if isinstance(key, bytes) else str(key).encode()) for key in keys}


_KEEPALIVE = {
    option: value
    for name, value in (("TCP_KEEPIDLE", KEEPALIVE_IDLE_S), ("TCP_KEEPINTVL", 1), ("TCP_KEEPCNT", 3))
    if (option := getattr(socket, name, None)) is not None
}
