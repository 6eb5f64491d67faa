"""One `liftoff serve` per state directory: an exclusive `flock` on `<state_dir>/serve.lock`, holding the pid.

Everything under the state directory belongs to one server: the embedded Redis (its append-only file and its
socket, which a second redis-server would unlink), the metrics files, the Redis status file. The lock is taken
before any of it is touched and held for the life of the process; the kernel drops it when the process ends,
however it ends, so a stale lock file never blocks a later start. The file descriptor is not inherited by
children (Python opens files non-inheritable), so a gateway or reader outliving a killed supervisor cannot keep it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = "serve.lock"


class StateDirInUse(RuntimeError):
    """Another process holds the state directory's lock; the message names it in one line."""

    def __init__(self, state_dir: Path, holder: int | None) -> None:
        who = f"pid {holder}" if holder else "another process"
        super().__init__(f"state_dir {state_dir} is in use by another liftoff serve ({who}); stop it or start this "
                         "one with a different --state-dir")
        self.holder = holder


class StateLock:
    """The held lock; `release` (or process exit) gives it up."""

    def __init__(self, state_dir: str | Path) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.path = self.state_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> StateLock:
        """Take the lock at once or raise `StateDirInUse`; never waits."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise StateDirInUse(self.state_dir, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None
