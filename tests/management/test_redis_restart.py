"""The supervisor owns its embedded Redis: a redis-server that dies is started again from its append-only file,
service resumes within seconds, no request is left hanging, a crash loop is explained, and Ctrl-C stays prompt."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest

from support.servers import LIFTOFF, Server, wait_for

pytestmark = pytest.mark.processes  # starts redis-server and `liftoff serve` itself, beside the fixtures

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
RESUME_WITHIN_S = 5.0


def embedded_server(tmp_path: Path, readers: list[dict[str, object]]) -> Server:
    # No redis_url: the embedded redis-server. No reserved group: a group without a live reader answers 503 at once.
    return Server(tmp_path, {"reserved_consumers": "", "request_timeout_s": 20.0}, readers=readers)


def redis_process(server: Server) -> psutil.Process:
    found = [p for p in server.descendants() if "redis-server" in " ".join(p.cmdline())]
    assert len(found) == 1, f"redis-server children: {found}"
    return found[0]


@dataclass
class Load:
    """Clients sending requests in a loop; each outcome is (sent at, answered at, status or -1 for no answer)."""

    server: Server
    outcomes: list[tuple[float, float, int]] = field(default_factory=list)
    bodies: dict[int, str] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, path: str, body: dict[str, object], clients: int) -> None:
        for _ in range(clients):
            thread = threading.Thread(target=self._client, args=(path, body), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _client(self, path: str, body: dict[str, object]) -> None:
        with httpx.Client(timeout=60) as client:
            while not self.stop.is_set():
                sent = time.monotonic()
                try:
                    r = client.post(self.server.url + path, json=body)
                    code = r.status_code
                    if code != 200:
                        self.bodies.setdefault(code, r.text)
                except httpx.TransportError:
                    code = -1
                self.outcomes.append((sent, time.monotonic(), code))

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(70)
        assert not any(t.is_alive() for t in self.threads), "a client request hung"


def stop_promptly(server: Server, limit_s: float) -> float:
    assert server.proc is not None
    begun = time.monotonic()
    code = server.stop(signal.SIGINT, timeout_s=60)
    took = time.monotonic() - begun
    assert code == 0, server.log()
    assert took < limit_s, f"Ctrl-C took {took:.1f}s:\n{server.log()}"
    return took


@pytest.mark.slow
def test_killed_redis_is_restarted_and_service_resumes(tmp_path: Path) -> None:
    readers = [{"model_name": "echo", "consumer_group": "primary", "reader_id": "primary-0"},
               {"model_name": MINILM, "consumer_group": "embed", "reader_id": "minilm", "max_batch_size": 32}]
    server = embedded_server(tmp_path, readers).start(timeout_s=120)
    wait_for(lambda: "minilm" in server.status()["status"]["live_readers"], 120, "the embedding reader", server)
    load = Load(server)
    load.start("/generate", {"text": "still here"}, clients=6)
    load.start("/embed", {"text": "still here", "consumer_group": "embed"}, clients=2)
    try:
        time.sleep(2.0)
        victim = redis_process(server)
        killed = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        wait_for(lambda: any(s > killed and c == 200 for s, _, c in load.outcomes), 30, "a 200 after the kill",
                 server)
        resumed = min(end for sent, end, c in load.outcomes if sent > killed and c == 200)
        time.sleep(3.0)
        replacement = redis_process(server)
    finally:
        load.finish()
    refused = sum(1 for _, _, c in load.outcomes if c == 503)
    print(f"first 200 sent after the kill answered {resumed - killed:.2f}s after it; {len(load.outcomes)} "
          f"requests, {refused} answered 503")
    assert replacement.pid != victim.pid
    assert resumed - killed < RESUME_WITHIN_S, f"service took {resumed - killed:.1f}s to resume:\n{server.log()}"
    codes = {c for _, _, c in load.outcomes}
    assert codes <= {200, 503}, f"answers: {codes}, bodies: {load.bodies}"
    late = [c for sent, _, c in load.outcomes if sent > resumed + 1.0 and c != 200]
    assert not late, f"errors after service resumed: {late[:5]}, bodies: {load.bodies}"
    embeds = httpx.post(server.url + "/embed", json={"text": "after", "consumer_group": "embed"}, timeout=30)
    assert embeds.status_code == 200, embeds.text
    health = httpx.get(server.mgmt + "/api/health/status", timeout=10).json()
    assert health["components"]["redis"]["status"] == "ok", health["components"]
    print(f"Ctrl-C after the outage took {stop_promptly(server, limit_s=15):.1f}s")


def corrupt_aof(server: Server) -> Path:
    """Replace the append-only file under the running redis-server (which keeps writing to the old one), so that
    every later start refuses the data directory."""
    data = Path(server.settings["state_dir"]) / "redis"
    # Redis 7 keeps its append-only files in appendonlydir/, listed by a manifest; 6.2 has one appendonly.aof.
    manifest = data / "appendonlydir" / "appendonly.aof.manifest"
    aof = manifest if manifest.exists() else data / "appendonly.aof"
    bad = aof.with_suffix(".bad")
    bad.write_text("this is not an append-only file\n")
    os.replace(bad, aof)
    return aof


def test_crash_looping_redis_is_explained_and_ctrl_c_is_prompt(tmp_path: Path) -> None:
    server = embedded_server(tmp_path, [{"model_name": "echo", "consumer_group": "primary"}]).start()
    corrupt_aof(server)
    redis_process(server).send_signal(signal.SIGKILL)

    def explained() -> bool:
        redis_c = httpx.get(server.mgmt + "/api/health/status", timeout=10).json()["components"]["redis"]
        return redis_c["status"] == "error" and "crash-looping" in (redis_c["error"] or "")

    wait_for(explained, 20, "the health report to explain the crash loop", server, every_s=0.2)
    health = httpx.get(server.mgmt + "/api/health/status", timeout=10)
    assert health.status_code == 503
    reason = health.json()["components"]["redis"]["error"]
    assert "redis-server" in reason and "while starting" in reason, reason
    status = httpx.get(server.mgmt + "/status", timeout=10)
    assert status.status_code == 200
    assert status.json()["status"] is None and "crash-looping" in status.json()["error"], status.json()
    r = httpx.post(server.url + "/generate", json={"text": "anyone?"}, timeout=10)
    assert r.status_code == 503, r.text
    print(f"Ctrl-C during the crash loop took {stop_promptly(server, limit_s=10):.1f}s")


@pytest.mark.slow
def test_redis_that_recovers_from_a_crash_loop_serves_again(tmp_path: Path) -> None:
    server = embedded_server(tmp_path, [{"model_name": "echo", "consumer_group": "primary"}]).start()
    aof = corrupt_aof(server)
    redis_process(server).send_signal(signal.SIGKILL)
    wait_for(lambda: "crash_loop" in (Path(server.settings["state_dir"]) / "redis-status.json").read_text(), 20,
             "a crash loop", server, every_s=0.2)
    aof.unlink()  # the operator moves the bad file away: the next try starts empty
    wait_for(lambda: httpx.post(server.url + "/generate", json={"text": "back"}, timeout=10).status_code == 200, 40,
             "service after the repair", server, every_s=0.2)
    stop_promptly(server, limit_s=15)


def test_ctrl_c_while_redis_is_down_with_work_in_flight_is_prompt(tmp_path: Path) -> None:
    """Readers mid-generation whose replies cannot reach a Redis that will not come back must not hold the stop up
    for the whole grace period (30 s here, the default)."""
    reader = {"model_name": "echo", "consumer_group": "primary", "echo_token_delay_ms": 200}
    server = Server(tmp_path, {"reserved_consumers": "", "request_timeout_s": 60.0, "shutdown_grace_s": 30.0},
                    readers=[reader]).start()
    outcomes: list[int] = []

    def stream() -> None:
        with httpx.Client(timeout=90) as client:
            try:
                r = client.post(server.url + "/generate_stream", json={"text": "tick " * 100})
                outcomes.append(r.status_code)
            except httpx.TransportError:
                outcomes.append(-1)

    clients = [threading.Thread(target=stream, daemon=True) for _ in range(4)]
    for thread in clients:
        thread.start()
    time.sleep(1.5)  # the streams are running
    corrupt_aof(server)
    redis_process(server).send_signal(signal.SIGKILL)
    time.sleep(1.0)  # the first restarts fail: Redis is down for good
    print(f"Ctrl-C with streams in flight and Redis down took {stop_promptly(server, limit_s=10):.1f}s")
    for thread in clients:
        thread.join(30)
    assert not any(t.is_alive() for t in clients), "a stream hung"
    assert len(outcomes) == 4


def test_redis_that_cannot_start_at_all_fails_serve_with_one_clear_line(tmp_path: Path) -> None:
    server = embedded_server(tmp_path, [])
    aof = Path(server.settings["state_dir"]) / "redis" / "appendonly.aof"
    aof.parent.mkdir(parents=True)
    aof.write_text("this is not an append-only file\n")
    proc = subprocess.run([*LIFTOFF, "serve", "--config", str(server.config)], cwd=server.workdir,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert "cannot start the embedded Redis" in proc.stderr and "Bad file format" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
