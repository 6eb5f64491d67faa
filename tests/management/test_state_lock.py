"""One `liftoff serve` per state directory: a second one is refused at once, naming the pid that holds it, and
never touches the first one's Redis or its socket."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest

from liftoff.control.state_lock import StateDirInUse, StateLock

from support.servers import LIFTOFF, Server

pytestmark = pytest.mark.processes  # starts redis-server and `liftoff serve` itself, beside the fixtures


def test_second_serve_in_the_same_state_dir_is_refused_at_once(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    first = Server(tmp_path / "one", {}, readers=[{"model_name": "echo"}]).start()
    try:
        sock = Path(first.settings["state_dir"]) / "redis" / "redis.sock"
        inode = sock.stat().st_ino
        (tmp_path / "two").mkdir()
        # Other ports, the same state directory.
        second = Server(tmp_path / "two", {"state_dir": first.settings["state_dir"]}, readers=[{"model_name": "echo"}])
        begun = time.monotonic()
        proc = subprocess.run([*LIFTOFF, "serve", "--config", str(second.config)], cwd=second.workdir,
                              capture_output=True, text=True, timeout=60)
        took = time.monotonic() - begun
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert first.proc is not None and f"pid {first.proc.pid}" in lines[0] and "state_dir" in lines[0], lines
        assert took < 8, f"refusal took {took:.1f}s"  # the interpreter's start-up, not a wait for a lock
        # The first server's Redis and socket are untouched, and it still serves.
        assert sock.stat().st_ino == inode
        r = httpx.post(first.url + "/generate", json={"text": "still mine"}, timeout=10)
        assert r.status_code == 200 and r.json() == {"text": "still mine"}
    finally:
        assert first.stop() == 0, first.log()
    # The lock goes with its holder: the same directory serves again.
    first.start()
    assert first.stop() == 0, first.log()


def test_lock_names_its_holder_and_is_released(tmp_path: Path) -> None:
    held = StateLock(tmp_path).acquire()
    with pytest.raises(StateDirInUse) as refused:
        StateLock(tmp_path).acquire()
    assert refused.value.holder is not None and f"pid {refused.value.holder}" in str(refused.value)
    held.release()
    StateLock(tmp_path).acquire().release()
