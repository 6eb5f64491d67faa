"""Process helpers shared by the supervisor, the embedded Redis and the tests."""

from __future__ import annotations

import ctypes
import os
import random
import signal

_PR_SET_PDEATHSIG = 1


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
