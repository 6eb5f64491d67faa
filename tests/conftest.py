"""Shared fixtures: one real redis-server per test session (and a real Redis Cluster for the tests that ask for
one), and `liftoff serve` process trees on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from liftoff.control.embedded_redis import EmbeddedRedis

from support.cluster import LocalCluster
from support.servers import NAMESPACES, Server, ServerFactory, server_factory


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendonly=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: EmbeddedRedis) -> str:
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three masters and three replicas of redis-server 7 on loopback ports (tests/support/cluster.py)."""
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def namespace() -> str:
    return f"t{next(NAMESPACES)}"


@pytest.fixture
def make_server(tmp_path: Path, redis_url: str) -> Iterator[ServerFactory]:
    servers: list[Server] = []
    yield server_factory(tmp_path, redis_url, servers)
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Server]:
    """One server shared by a module's read-only tests: an echo reader in `primary`, `reserved_consumers` empty."""
    servers: list[Server] = []
    server = server_factory(tmp_path_factory.mktemp("echo"), redis_url, servers)(reserved_consumers="")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> Any:
    """The official `openai` client on the `server` of the requesting module (which defines that fixture)."""
    return server.openai_client(120)


# The two tiers (README, "Test it"): `unit` runs in process (pure functions, ASGI apps through a test client) in
# seconds; `processes` starts real processes: redis-server, `liftoff serve`, readers. A test is in `processes` when
# it needs Redis (any fixture built on `redis_server` or `redis_cluster`) or its module says so (`pytestmark`).
PROCESS_FIXTURES = frozenset({"redis_server", "redis_cluster"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        uses = set(getattr(item, "fixturenames", ()))
        if item.get_closest_marker("processes") or uses & PROCESS_FIXTURES:
            item.add_marker(pytest.mark.processes)
        else:
            item.add_marker(pytest.mark.unit)
