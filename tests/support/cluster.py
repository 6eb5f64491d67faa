"""A real local Redis Cluster for the tests and bench.cluster: three masters and three replicas on loopback ports.

Each node is a `redis-server` (7 or newer, from PATH: `scripts/setup --test` installs Debian's) in cluster mode in a
directory of its own; `redis-cli --cluster create … --cluster-replicas 1` joins them and spreads the 16384 slots
over the masters. `cluster-node-timeout` is short (2 s) so that a killed master's replica takes over within a few
seconds, the way the failover test needs it, and a replica may always take over (`cluster-replica-validity-factor 0`).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis
import redis.cluster

NODE_TIMEOUT_MS = 2000


class LocalCluster:
    def __init__(self, data_dir: Path, masters: int = 3, replicas: int = 1) -> None:
        self.data_dir = data_dir
        self.masters = masters
        self.size = masters * (1 + replicas)
        self.replicas = replicas
        ports = _free_ports(2 * self.size)
        self.ports = ports[: self.size]
        self.bus_ports = dict(zip(self.ports, ports[self.size :], strict=True))  # node-to-node links
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """The `redis_url` that names the cluster by its seed nodes (every node here)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def start(self, timeout_s: float = 60.0) -> LocalCluster:
        for tool in ("redis-server", "redis-cli"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"{tool} is not on PATH: run scripts/setup --test (it installs redis-server 7)")
        for port in self.ports:
            self.start_node(port)
        deadline = time.monotonic() + timeout_s
        for port in self.ports:
            self._wait(lambda p=port: self.client(p).ping(), deadline, f"node {port} to answer")
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True, capture_output=True, timeout=timeout_s,
        )
        self._wait(self._settled, deadline, "every node to agree on the cluster")
        return self

    def start_node(self, port: int) -> None:
        """Start (or restart, with its cluster config) the node on `port`."""
        node_dir = self.data_dir / str(port)
        node_dir.mkdir(parents=True, exist_ok=True)
        log = open(node_dir / "redis.log", "ab")
        self.procs[port] = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node_dir),
             "--cluster-enabled", "yes", "--cluster-port", str(self.bus_ports[port]),
             "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--cluster-replica-validity-factor", "0",
             "--repl-diskless-sync-delay", "0", "--appendonly", "no", "--save", "",
             "--daemonize", "no", "--protected-mode", "yes"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)

    def roles(self) -> dict[int, str]:
        """Each answering node's role: master or slave."""
        out = {}
        for port in self.ports:
            try:
                out[port] = self.client(port).info("replication")["role"]
            except redis.RedisError:
                continue
        return out

    def master_of(self, key: str) -> int:
        """The port of the master serving `key`'s slot now (as a fresh view of the cluster says)."""
        ports = [p for p, role in self.roles().items() if role == "master"]
        client = redis.RedisCluster(startup_nodes=[redis.cluster.ClusterNode("127.0.0.1", p) for p in ports])
        try:
            return int(client.get_node_from_key(key).port)
        finally:
            client.close()

    def healthy(self) -> bool:
        """Every answering node says the cluster is ok, and as many masters answer as the cluster was made with."""
        roles = self.roles()
        return list(roles.values()).count("master") == self.masters and all(
            self.client(p).cluster("info")["cluster_state"] == "ok" for p in roles)

    def kill(self, port: int) -> None:
        proc = self.procs[port]
        proc.kill()
        proc.wait()

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _settled(self) -> bool:
        """Every node up, the cluster ok, and every replica in sync with its master (else it could not take over)."""
        if len(self.roles()) != self.size or not self.healthy():
            return False
        links = [self.client(p).info("replication") for p, role in self.roles().items() if role == "slave"]
        return all(link.get("master_link_status") == "up" for link in links)

    @staticmethod
    def _wait(check: object, deadline: float, what: str) -> None:
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if check():  # type: ignore[operator]
                    return
            except (redis.RedisError, OSError) as exc:
                last = exc
            time.sleep(0.1)
        raise RuntimeError(f"timed out waiting for {what} (last error: {last})")


def _free_ports(count: int) -> list[int]:
    """Loopback ports free now (tests/support.py has the same; this module is imported by bench.cluster too)."""
    socks = [socket.socket() for _ in range(count)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports
