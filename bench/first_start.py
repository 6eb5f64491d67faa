"""How long `liftoff serve` takes to be ready with the default config: the first start in an empty model repository
(which converts the bundled GGUF chat model) and a second start (which loads the converted copy), and the answer the
bundled model gives to a plain chat request (no sampling parameters) after each.

    .venv/bin/python -m bench.first_start [--starts 2]

Runs in a temporary folder on the default ports (3000-3005 must be free); prints one line per start.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def start(workdir: Path, log: Path) -> tuple[subprocess.Popen[bytes], float]:
    """The server, and the seconds until both default readers are live."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFTOFF_")}
    began = time.monotonic()
    with open(log, "ab") as out:
        server = subprocess.Popen([sys.executable, "-m", "liftoff", "serve", "--config", str(REPO / "config.toml")],
                                  cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    while time.monotonic() - began < 600:
        if server.poll() is not None:
            raise SystemExit(f"liftoff serve exited with {server.returncode}; see {log}")
        try:
            live = httpx.get("http://127.0.0.1:3001/status", timeout=2).json()["status"]["live_readers"]
            if {"primary-0", "embed-1"} <= set(live):
                return server, time.monotonic() - began
        except (httpx.HTTPError, KeyError, TypeError, ValueError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"not ready after 600 s; see {log}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--starts", type=int, default=2, help="starts in a row in one folder (2: first and later)")
    args = p.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="liftoff-first-start-"))
    log = workdir / "serve.log"
    try:
        for n in range(1, args.starts + 1):
            server, ready_s = start(workdir, log)
            try:
                answer = httpx.post("http://127.0.0.1:3003/v1/chat/completions", timeout=120,
                                    json={"model": "primary", "messages": QUESTION}).json()
                text = answer["choices"][0]["message"]["content"]
            finally:
                os.killpg(server.pid, signal.SIGINT)
                server.wait(60)
            kind = "first start (converts the bundled GGUF)" if n == 1 else "later start (loads the copy)"
            print(f"{kind}: ready in {ready_s:.1f} s; {text!r}")
        converted = [line for line in log.read_text().splitlines() if "converted in" in line]
        if converted:
            print("conversion:", converted[0].split("INFO ", 1)[-1])
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
