"""Process helpers shared by the supervisor, the embedded Redis, gateway workers, readers and the tests."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import random
import signal
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


# How a reader process ends; the supervisor reads these to decide whether a restart can help.
EXIT_OK = 0
EXIT_BOOT_ERROR = 3  # bad configuration or a duplicate live reader id: restarting will not help
EXIT_MODEL_LOAD_ERROR = 4  # the model cannot be loaded: restarting will not help
EXIT_TASK_DIED = 70  # a background task the process needs died (EX_SOFTWARE): a restart is the cure


def child_preexec() -> None:
    """Run in a child between fork and exec: own process group, and SIGTERM when the parent dies.

    Its own process group keeps a terminal's Ctrl-C away from the child, so that the supervisor alone decides the
    shutdown order (gateway first, then readers, then Redis). The parent-death signal makes sure that no child
    outlives a supervisor that was killed outright.
    """
    os.setpgrp()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: the supervisor's own shutdown still stops its children
        pass


def compute_backoff(attempt: int, base_s: float = 0.5, cap_s: float = 30.0) -> float:
    """Exponential backoff with full jitter, capped: the one backoff rule for restarts and reconnects."""
    ceiling = min(cap_s, base_s * (2 ** max(0, attempt)))
    return random.uniform(ceiling / 2, ceiling)


def run_async(main: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop where it is installed (it is a dependency on Linux and macOS): cheaper Redis round trips."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")


def critical_task(coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
    """Run `coro` as a task this process cannot work without (a read loop, the heartbeat, the reply listener).

    Such a task handles the errors it can outlive itself (Redis out of reach: retry with backoff). If it ends on
    anything else, the process would stay up looking healthy while doing nothing (a reader that heartbeats and reads
    nothing, a gateway worker whose requests all time out), so the process ends instead, with `EXIT_TASK_DIED`
    after one log line naming the task: the supervisor restarts a reader, gunicorn's arbiter replaces a worker.
    Cancellation and a normal return are the task's own business.
    """
    task = asyncio.get_running_loop().create_task(coro, name=name)
    task.add_done_callback(_exit_if_failed)
    return task


def _exit_if_failed(task: asyncio.Task[Any]) -> None:
    if task.cancelled() or task.exception() is None:
        return
    exc = task.exception()
    log.critical("background task %r died (%s: %s); exiting with code %d so that this process is restarted",
                 task.get_name(), type(exc).__name__, exc, EXIT_TASK_DIED, exc_info=exc)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(EXIT_TASK_DIED)  # not SystemExit: the event loop would swallow it, and cleanup may hang on Redis
