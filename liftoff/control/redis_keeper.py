"""The supervisor's embedded redis-server, kept running the way readers are: restarted when it dies.

`check` runs on every turn of the supervisor's loop and never blocks it (so signals are acted on at once, even in
the middle of an outage). A redis-server that exits is started again from its append-only file after a capped,
jittered backoff (`compute_backoff`, starting at a fraction of a second, so a one-off crash costs well under a
second), and waited for without blocking; one that exits while starting, or does not answer within
`START_TIMEOUT_S`, counts as a failure and is tried again later, longer each time. Every change is written to the
Redis status file (`liftoff.core.redis_state`), which `/status` and `/api/health/status` read, so a crash loop
is explained there with redis-server's own last log line. A server up for `STABLE_AFTER_S` has its backoff reset.

Gateway workers and readers need nothing from here: they reconnect on their own, recreate consumer groups on
`NOGROUP`, and their reads wait for the new server at the same socket path.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path

from liftoff.control.embedded_redis import EmbeddedRedis
from liftoff.core.process import compute_backoff
from liftoff.core.redis_state import CRASH_LOOP_AFTER, RedisState, clear_state, write_state

log = logging.getLogger("liftoff.supervisor")

START_TIMEOUT_S = 30.0  # a large append-only file takes a while to replay; a server that exits fails at once
STABLE_AFTER_S = 60.0
BACKOFF_BASE_S = 0.2
BACKOFF_CAP_S = 30.0


class RedisKeeper:
    def __init__(self, state_dir: str | Path) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.server = EmbeddedRedis(self.state_dir / "redis")
        self.state = RedisState(state="stopped")
        self._started_s = 0.0  # monotonic time of the last successful start
        self._start_deadline: float | None = None  # set while a spawned server has not answered yet
        self._restart_at: float | None = None

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def up(self) -> bool:
        return self.state.state == "running"

    def start(self) -> str:
        """The first start, waited for: `liftoff serve` cannot do anything before Redis answers."""
        url = self.server.start()
        self._running()
        return url

    async def check(self) -> None:
        """One look: notice a death, start again when the backoff is over, notice a new server's readiness."""
        proc, now = self.server.proc, time.monotonic()
        if self._restart_at is not None:
            if now >= self._restart_at:
                self._restart_at = None
                try:
                    proc = self.server.spawn()
                except (OSError, RuntimeError) as exc:  # RedisNotFound, a data dir it cannot create, ...
                    self._failed(f"redis-server could not be started: {exc}")
                    return
                self._start_deadline = now + START_TIMEOUT_S
                log.info("starting the embedded redis-server again (pid %d, attempt %d)", proc.pid,
                         self.state.failures)
            return
        if proc is None:
            return
        code = proc.poll()
        if code is not None:
            reason = f"redis-server (pid {proc.pid}) {_exit_reason(code)}"
            if self._start_deadline is not None:
                last = self.server.last_log_line()
                reason += f" while starting: {last}" if last else " while starting"
            self._failed(reason)
        elif self._start_deadline is not None:
            if await asyncio.to_thread(self.server.answers):
                log.info("the embedded redis-server is back (pid %d); data restored from its append-only file",
                         proc.pid)
                self.state.restarts += 1
                self._running()
            elif now > self._start_deadline:
                self.server.kill()
                self._failed(f"redis-server (pid {proc.pid}) did not answer within {START_TIMEOUT_S:.0f}s")

    def stop(self) -> None:
        self._restart_at = None
        self.server.stop()
        self.state = self.state.model_copy(update={"state": "stopped", "pid": None, "next_try_s": None})
        clear_state(self.state_dir)

    def _running(self) -> None:
        assert self.server.proc is not None
        self._start_deadline = None
        self._started_s = time.monotonic()
        self.state = self.state.model_copy(update={"state": "running", "pid": self.server.proc.pid, "failures": 0,
                                                   "next_try_s": None})
        self._publish()

    def _failed(self, reason: str) -> None:
        self._start_deadline = None
        stable = self._started_s > 0 and time.monotonic() - self._started_s > STABLE_AFTER_S
        failures = 0 if stable else self.state.failures
        delay = compute_backoff(failures, base_s=BACKOFF_BASE_S, cap_s=BACKOFF_CAP_S)
        failures += 1
        self._restart_at = time.monotonic() + delay
        self._started_s = 0.0  # a failed start is not a stable run
        state = "crash_loop" if failures >= CRASH_LOOP_AFTER else "restarting"
        self.state = self.state.model_copy(update={"state": state, "pid": None, "failures": failures,
                                                   "reason": reason, "next_try_s": time.time() + delay})
        log.error("%s; starting it again in %.1fs (failure %d in a row)", reason, delay, failures)
        self._publish()

    def _publish(self) -> None:
        try:
            write_state(self.state_dir, self.state)
        except OSError as exc:
            log.warning("could not write the Redis status file: %s", exc)


def _exit_reason(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"
