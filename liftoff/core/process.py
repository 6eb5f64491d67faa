"""Process helpers shared by the supervisor, the embedded Redis and the tests."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import random
import signal
from collections.abc import Coroutine
from typing import Any

_PR_SET_PDEATHSIG = 1


# How a reader process ends; the supervisor reads these to decide whether a restart can help.
EXIT_OK = 0
EXIT_BOOT_ERROR = 3  # bad configuration or a duplicate live reader id: restarting will not help
EXIT_MODEL_LOAD_ERROR = 4  # the model cannot be loaded: restarting will not help


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
