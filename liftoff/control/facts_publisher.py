"""The supervisor's side of the hardware facts: detect this node once, publish, keep the RAM figures fresh.

Detection runs in a short-lived child (`python -m liftoff.control.detect`) rather than in a thread: the supervisor
then never imports torch (seconds, and hundreds of megabytes it would hold for its whole life), never holds CUDA
state, and stays free of threads, which it relies on because it starts its children with a `preexec_fn`. GPUs do
not come and go, so the child runs once; the refresh every `facts.REFRESH_S` re-reads RAM with psutil (well under a
millisecond) and renews the key's TTL. If the child fails, the node is published as psutil sees it, without GPUs,
and the log says why.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import tempfile
import time
from typing import IO

from pydantic import ValidationError
from redis.asyncio import Redis

from liftoff.control.detect import detect_specs, with_fresh_memory
from liftoff.core.keys import Keys
from liftoff.core.process import child_preexec
from liftoff.fit import facts
from liftoff.fit.hardware import SystemSpecs

log = logging.getLogger("liftoff.supervisor")

DETECT_TIMEOUT_S = 120.0  # importing torch and initialising CUDA on a cold disk
POLL_S = 0.05


class DetectionFailed(Exception):
    pass


def _spawn_detector(env: dict[str, str], out: IO[bytes]) -> subprocess.Popen[bytes]:
    """Started like the supervisor's other children: its own process group, gone when the supervisor dies."""
    argv = [sys.executable, "-m", "liftoff.control.detect"]
    return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=out,
                            preexec_fn=child_preexec)  # noqa: PLW1509 (no threads here)


async def detect_in_child(env: dict[str, str], timeout_s: float = DETECT_TIMEOUT_S) -> SystemSpecs:
    """This node's specs, detected by a child process (its last line of output is the `HardwareFacts` JSON)."""
    with tempfile.TemporaryFile() as out:  # a file, not a pipe: nothing can block on a full buffer
        proc = _spawn_detector(env, out)
        deadline = time.monotonic() + timeout_s
        while proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise DetectionFailed(f"no answer within {timeout_s:.0f}s")
            await asyncio.sleep(POLL_S)
        if proc.returncode != 0:
            raise DetectionFailed(f"it exited with code {proc.returncode}")
        out.seek(0)
        lines = out.read().splitlines()
    try:
        return facts.HardwareFacts.model_validate_json(lines[-1] if lines else b"").node
    except ValidationError as exc:
        raise DetectionFailed(f"its answer was unreadable: {exc.errors()[0]['msg']}") from None


class FactsPublisher:
    """Owns `keys.hardware_facts(node)` for one supervisor: `start()` once, then `refresh()` whenever `due()`."""

    def __init__(self, redis: Redis, keys: Keys, publisher_id: str) -> None:
        self.redis = redis
        self.keys = keys
        self.publisher_id = publisher_id
        self.specs: SystemSpecs | None = None
        self._published_at = 0.0

    async def start(self, env: dict[str, str]) -> SystemSpecs:
        """Detect (off the supervisor's event loop and out of its process) and publish; the specs detected."""
        try:
            specs = await detect_in_child(env)
        except (DetectionFailed, OSError) as exc:
            log.warning("hardware detection failed (%s); publishing this node without GPUs", exc)
            specs = detect_specs(probe_gpus=False)
        self.specs = specs
        gpus = ", ".join(f"{g.count} x {g.name} ({g.vram_gb} GB)" for g in specs.gpus) or "no GPU"
        log.info("hardware: %s cores, %.1f GB RAM, %s", specs.cpu_cores, specs.total_ram_gb, gpus)
        await self._publish(specs)
        return specs

    def due(self) -> bool:
        return self.specs is not None and time.monotonic() - self._published_at >= facts.REFRESH_S

    async def refresh(self) -> None:
        """Free memory changes: read RAM again and publish, renewing the TTL."""
        assert self.specs is not None
        self.specs = with_fresh_memory(self.specs)
        await self._publish(self.specs)

    async def _publish(self, specs: SystemSpecs) -> None:
        self._published_at = time.monotonic()  # a failed publish is retried on the next refresh, not every turn
        await facts.publish(self.redis, self.keys, specs, self.publisher_id)
