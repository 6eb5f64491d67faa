"""A reader's access_token reaches that reader's environment and nowhere else: not a command line, the registry,
`/config`, `/status`, another process's environment or the log."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import redis

from liftoff.core.reader_config import READER_TOKEN_ENV, SECRET_MASK

from support.servers import ServerFactory

TOKEN = "hf_configuredTokenForTheTest0001"
POSTED = "hf_postedTokenForTheTest00000002"


def _proc_files(name: str) -> dict[int, bytes]:
    out = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                out[int(entry.name)] = (entry / name).read_bytes()
            except OSError:  # gone, or not ours to read
                continue
    return out


def _wait_live(server, reader_id: str, timeout_s: float = 60) -> int:
    until = time.monotonic() + timeout_s
    while time.monotonic() < until:
        live = server.status()["status"]["live_readers"]
        if reader_id in live:
            return int(live[reader_id]["pids"][0])
        time.sleep(0.2)
    raise AssertionError(f"reader {reader_id} not live:\n{server.log()}")


def test_tokens_stay_in_their_readers_environment(make_server: ServerFactory, redis_url: str) -> None:
    server = make_server(readers=[{"model_name": "echo", "consumer_group": "primary", "reader_id": "primary-0",
                                   "access_token": TOKEN}], reserved_consumers="")
    r = httpx.post(server.mgmt + "/reader", json={"model_name": "echo", "consumer_group": "second",
                                                  "reader_id": "second-0", "access_token": POSTED}, timeout=10)
    assert r.status_code == 201, r.text
    assert POSTED not in r.text
    pids = {"primary-0": _wait_live(server, "primary-0"), "second-0": _wait_live(server, "second-0")}
    secrets = (TOKEN.encode(), POSTED.encode())

    for pid, cmdline in _proc_files("cmdline").items():  # what `ps` shows, for every process here
        assert not any(s in cmdline for s in secrets), (pid, cmdline)
    environs = _proc_files("environ")
    for reader_id, token in (("primary-0", TOKEN), ("second-0", POSTED)):
        assert f"{READER_TOKEN_ENV}={token}".encode() in environs[pids[reader_id]].split(b"\0")
    others = [pid for pid, env in environs.items() if pid not in pids.values() and any(s in env for s in secrets)]
    assert not others, f"processes other than the readers hold a token in their environment: {others}"

    for reader_id in pids:
        config = httpx.get(f"{server.mgmt}/config/{reader_id}", timeout=10)
        assert config.status_code == 200 and config.json()["access_token"] == SECRET_MASK, config.text
        assert not any(s.decode() in config.text for s in secrets)
    status = httpx.get(server.mgmt + "/status", timeout=10).text
    assert not any(s.decode() in status for s in secrets)
    client = redis.Redis.from_url(redis_url)
    registry = client.hgetall(f"{server.settings['redis_namespace']}:readers")
    assert registry and not any(s in value for value in registry.values() for s in secrets)
    assert not any(s.decode() in server.log() for s in secrets)
