"""Shared fixtures: one real redis-server per test session (and a real Redis Cluster for the tests that ask for
one), and `liftoff serve` process trees on it."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from management.embedded_redis import EmbeddedRedis

from redis_cluster import LocalCluster
from support import Server

_namespaces = itertools.count()


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
    """Three masters and three replicas of redis-server 7 on loopback ports (tests/redis_cluster.py)."""
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def namespace() -> str:
    return f"t{next(_namespaces)}"


ServerFactory = Callable[..., Server]


def _factory(tmp: Path, redis_url: str, servers: list[Server]) -> ServerFactory:
    def make(readers: list[dict[str, Any]] | None = None, start: bool = True, wait_healthy: bool = True,
             **settings: Any) -> Server:
        workdir = tmp / f"server{len(servers)}"
        workdir.mkdir()
        settings.setdefault("redis_url", redis_url)
        settings.setdefault("redis_namespace", f"s{next(_namespaces)}")
        settings.setdefault("request_timeout_s", 10.0)
        default_reader = [{"model_name": "echo", "consumer_group": "primary", "reader_id": "primary-0"}]
        server = Server(workdir, settings, default_reader if readers is None else readers)
        servers.append(server)
        if start:
            server.start(wait_healthy=wait_healthy)
        return server

    return make


@pytest.fixture
def make_server(tmp_path: Path, redis_url: str) -> Iterator[ServerFactory]:
    servers: list[Server] = []
    yield _factory(tmp_path, redis_url, servers)
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Server]:
    """One server shared by a module's read-only tests: an echo reader in `primary`, `reserved_consumers` empty."""
    servers: list[Server] = []
    server = _factory(tmp_path_factory.mktemp("echo"), redis_url, servers)(reserved_consumers="")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> Any:
    """The official `openai` client on the `server` of the requesting module (which defines that fixture)."""
    return server.openai_client(120)
