"""Gateway workers never load torch: health probes, every fit route and auto placement run on published facts.

Real processes: `liftoff serve` with two gateway workers and an echo reader. After the requests, each worker's
memory map (`/proc/<pid>/maps`) is read for torch's native libraries; the same check on a process that did import
torch shows that it would see them.
"""

from __future__ import annotations

import re
import subprocess
import sys

import httpx
import psutil
import pytest
import redis

from liftoff.core.keys import Keys
from liftoff.fit.facts import HardwareFacts
from liftoff.fit.hardware import node_name

from support.servers import Server, ServerFactory, wait_for

TORCH_LIBRARY = re.compile(r"(libtorch[^/\s]*\.so|/torch/_C[^/\s]*\.so)")
PORTS = ["port", "management_port", "vertex_port", "openai_port", "snowflake_port", "internal_port"]
FIT_GETS = ["/api/v1/system", "/api/v1/models", "/api/v1/models/top", "/api/v1/models/Qwen/Qwen2.5-0.5B",
            "/api/v1/models?use_case=embedding&vram_gb=24"]
HUGE = "meta-llama/Llama-3.1-405B-Instruct"
ROUNDS = 6  # fresh connections each time, so that both workers take some of every route

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/maps")


def torch_libraries(pid: int) -> set[str]:
    with open(f"/proc/{pid}/maps", encoding="utf-8", errors="replace") as f:
        return {m[1] for line in f if (m := TORCH_LIBRARY.search(line))}


def gateway_workers(server: Server) -> list[psutil.Process]:
    assert server.proc is not None
    arbiters = [p for p in psutil.Process(server.proc.pid).children() if "liftoff.entry.server" in p.cmdline()]
    assert len(arbiters) == 1, arbiters
    return arbiters[0].children()


def hit_every_probe_and_fit_route(server: Server) -> None:
    for _ in range(ROUNDS):
        for name in PORTS:
            for path in ("/health", "/healthz"):
                r = httpx.get(server.port_url(name) + path, timeout=10)
                assert r.status_code == 200, (name, path, r.text)
        for path in FIT_GETS:
            r = httpx.get(server.mgmt + path, timeout=30)
            assert r.status_code == 200, (path, r.text)
        assert httpx.get(server.mgmt + "/api/health/status", timeout=30).status_code == 200
        # Auto placement in the management API ranks on the facts too (refused here: nothing is started).
        r = httpx.post(server.mgmt + "/reader", json={"model_name": HUGE, "device": "auto"}, timeout=30)
        assert r.status_code == 422 and r.json()["details"]["fit"]["fit_level"] == "too_tight", r.text


def test_gateway_workers_never_load_torch(make_server: ServerFactory, redis_url: str) -> None:
    server = make_server(workers=2, reserved_consumers="")
    wait_for(lambda: len(gateway_workers(server)) == 2, 30, "two gateway workers", server)
    workers = gateway_workers(server)
    hit_every_probe_and_fit_route(server)

    # What the routes ranked on is what the supervisor published for this node.
    keys = Keys(server.settings["redis_namespace"])
    raw = redis.Redis.from_url(redis_url).get(keys.hardware_facts(node_name()))
    assert raw is not None, "the supervisor published no hardware facts"
    facts = HardwareFacts.model_validate_json(raw)
    assert facts.publisher.endswith(f"-{server.proc.pid}")  # type: ignore[union-attr]
    system = httpx.get(server.mgmt + "/api/v1/system", timeout=10).json()
    assert system["system"]["cpu_cores"] == facts.node.cpu_cores and system["node"]["name"] == facts.node.node_name

    assert [w.pid for w in gateway_workers(server)] == [w.pid for w in workers]  # none restarted in between
    for worker in workers:
        assert torch_libraries(worker.pid) == set(), f"gateway worker {worker.pid} has torch loaded"


def test_the_maps_check_sees_torch_where_it_is_loaded() -> None:
    pytest.importorskip("torch")
    proc = subprocess.Popen([sys.executable, "-c", "import sys, torch; print('ready', flush=True); sys.stdin.read()"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        assert torch_libraries(proc.pid), "no torch library found in the maps of a process that imported torch"
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)
