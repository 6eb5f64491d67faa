"""What the supervisor last knew of its embedded redis-server, in a file that can be read while Redis is down.

`liftoff serve` keeps the embedded Redis running (liftoff.control.redis_keeper) and writes its state to
`<state_dir>/redis-status.json` on every change: running, or restarting (with why it died and when it is tried
again). Gateway workers read it for `/status` and `/api/health/status`, so that an outage is explained even though
Redis, where every other fact lives, cannot be asked. With an external `redis_url` there is no such file.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError

STATE_FILE = "redis-status.json"
CRASH_LOOP_AFTER = 3  # consecutive failed starts after which the state says "crash_loop"


class RedisState(BaseModel):
    state: Literal["running", "restarting", "crash_loop", "stopped"]
    pid: int | None = None
    restarts: int = 0  # restarts since `liftoff serve` started
    failures: int = 0  # consecutive deaths or failed starts; 0 once a start succeeded
    reason: str | None = None  # why the last redis-server ended or failed to start
    next_try_s: float | None = None  # epoch seconds of the next start attempt
    updated_s: float = 0.0

    def problem(self) -> str | None:
        """One sentence for an operator while Redis is not running, else None."""
        if self.state == "running":
            return None
        if self.state == "stopped":
            return "the embedded redis-server is stopped (liftoff serve is shutting down)"
        retry = "" if self.next_try_s is None else f"; next start in {max(0.0, self.next_try_s - time.time()):.1f}s"
        if self.state == "crash_loop":
            return (f"the embedded redis-server is crash-looping: {self.failures} failed starts in a row, last: "
                    f"{self.reason}{retry}")
        return f"the embedded redis-server is restarting: {self.reason}{retry}"


def state_path(state_dir: str | Path) -> Path:
    return Path(state_dir).resolve() / STATE_FILE


def write_state(state_dir: str | Path, state: RedisState) -> None:
    """Replace the file atomically, so that a reader never sees half of it."""
    path = state_path(state_dir)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(state.model_copy(update={"updated_s": time.time()}).model_dump_json())
    os.replace(tmp, path)


def read_state(state_dir: str | Path) -> RedisState | None:
    """The supervisor's last word on its Redis, or None (external Redis, or no file yet)."""
    try:
        return RedisState.model_validate_json(state_path(state_dir).read_bytes())
    except (OSError, ValidationError):
        return None


def clear_state(state_dir: str | Path) -> None:
    state_path(state_dir).unlink(missing_ok=True)


def unreachable_reason(state_dir: str | Path, exc: BaseException) -> str:
    """Why Redis does not answer, for an error field: the supervisor's account when it has one, else the error."""
    state = read_state(state_dir)
    problem = state.problem() if state is not None else None
    return problem or f"Redis unreachable: {exc or type(exc).__name__}"
