#!/usr/bin/env python
"""Gateway overhead benchmark: Liftoff's full /generate path against a bare Starlette app, in one run.

    .venv/bin/python -m bench.gateway_overhead [--duration S] [--rounds N] [--workers N] [--quick]

Starts, on free loopback ports,

* ``liftoff serve`` (embedded Redis, gunicorn ``asgi`` gateway with ``--workers`` workers, one echo reader), and
* ``gunicorn -k asgi -w <workers> --no-control-socket bench.hello_app:app`` (the bare baseline),

then drives ``POST /generate {"text": "hello world"}`` at each server at concurrency 1 and 64 (``--concurrency``),
in interleaved rounds, each condition with its own warm-up. The load generator is an asyncio (uvloop) HTTP/1.1
keep-alive client built on ``asyncio.Protocol`` callbacks: pre-built request bytes, one request in flight per
connection, Content-Length parsing, latency from ``time.perf_counter_ns``. It shares the CPUs with the servers, so
it is as cheap as it can be made, and its own CPU use is reported alongside the servers'.

Prints a table (requests/s, p50, p99, errors per condition), CPU time per request by process group, and the two
ratios: echo/bare throughput at the highest concurrency (target >= 0.5) and echo p50 - bare p50 at concurrency 1
(target <= 1 ms). Timings are reported, never asserted: the exit status is non-zero only if a server fails to start.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

from bench.common import (
    BODY,
    CPU_COLUMNS,
    PATH,
    REPO,
    Result,
    Run,
    Server,
    add_run_args,
    add_window_args,
    child_env,
    client_loop,
    cpu_columns,
    cpu_json,
    free_ports,
    guarded,
    host_line,
    launch_liftoff,
    measure_window,
    parse_window_args,
    remove_tmp,
    run_line,
    run_loop,
    start_failed,
    wait_ready,
)


# --- the servers -------------------------------------------------------------------------------------------------
def start_liftoff(tmp: Path, ports: list[int], workers: int, tree: Path | None = None) -> Server:
    """This tree's `liftoff serve`, or with `tree` that checkout's (its code first on PYTHONPATH), kind "against"."""
    if tree is not None:
        tmp = tmp / "against"
        tmp.mkdir()
    env = None if tree is None else {**child_env(), "PYTHONPATH": str(tree)}
    server = launch_liftoff(tmp, ports, [
        'host = "127.0.0.1"',
        f'state_dir = "{tmp / "state"}"',
        f"workers = {workers}",
        'log_level = "WARNING"',
        "",
        "[[readers]]",
        'model_name = "echo"',
        'consumer_group = "primary"',
        "max_batch_size = 64",
    ], env=env, name="liftoff echo" if tree is None else f"against {tree_rev(tree)}")
    if tree is not None:
        server.kind = "against"
    return server


def tree_rev(tree: Path) -> str:
    rev = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return rev.stdout.strip() or tree.name


def start_bare(tmp: Path, port: int, workers: int) -> Server:
    log_path = tmp / "bare.log"
    argv = [
        sys.executable, "-m", "gunicorn", "-k", "asgi", "-w", str(workers), "-b", f"127.0.0.1:{port}",
        "--no-control-socket", "--chdir", str(REPO),
        # as the Liftoff gateway configures gunicorn (liftoff/entry/server.py), so that only the app differs
        "--keep-alive", "75", "--backlog", "2048", "--worker-connections", "10000", "--log-level", "warning",
        "bench.hello_app:app",
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv, cwd=tmp, env=child_env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Server("bare starlette", "bare", port, proc, log_path)


# --- measurement -------------------------------------------------------------------------------------------------
async def measure(server: Server, conc: int, warmup_s: float, duration_s: float, result: Result) -> None:
    run = Run(server.port, conc, PATH, BODY)
    result.add(run, *await measure_window(server, run, warmup_s, duration_s, drain_s=10.0))


async def run_all(servers: list[Server], concs: list[int], rounds: int, warmup_s: float, duration_s: float,
                  verbose: bool) -> dict[tuple[str, int], Result]:
    results = {(s.kind, c): Result(s.name, c) for s in servers for c in concs}
    for r in range(rounds):
        order = servers if r % 2 == 0 else servers[::-1]  # alternate which server goes first at each concurrency
        for conc in concs:
            for server in order:
                res = results[(server.kind, conc)]
                await measure(server, conc, warmup_s, duration_s, res)
                if verbose:
                    print(f"  round {r + 1}/{rounds}  {server.name:<15} c={conc:<4} {res.round_rps[-1]:9.0f} req/s",
                          flush=True)
    return results


# --- report -----------------------------------------------------------------------------------------------------
def report(results: dict[tuple[str, int], Result], concs: list[int], header: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"header": header, "conditions": [], "ratios": {}}
    print()
    for line in header:
        print(line)
    print()
    print(f"{'server':<16}{'conc':>5}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'requests':>10}"
          f"   req/s by round")
    rows = [(kind, results[(kind, conc)]) for conc in concs for kind in ("bare", "echo", "against")
            if (kind, conc) in results]
    for kind, res in rows:
        rounds = " ".join(f"{x:.0f}" for x in res.round_rps)
        print(f"{res.server:<16}{res.conc:>5}{res.rps:>10.0f}{res.pct(50):>9.2f}{res.pct(99):>9.2f}{res.errors:>8}"
              f"{len(res.lat):>10}   {rounds}")
        out["conditions"].append({
            "server": kind, "concurrency": res.conc, "rps": round(res.rps, 1), "p50_ms": round(res.pct(50), 3),
            "p99_ms": round(res.pct(99), 3), "errors": res.errors, "requests": len(res.lat),
            "rps_by_round": [round(x, 1) for x in res.round_rps], **cpu_json(res),
        })
        for note in res.notes:
            print(f"    first error: {note}")

    # CPU per request, by process role (from /proc utime+stime, 1/CLK_TCK resolution)
    print()
    print("CPU time per request, microseconds (utime+stime over the measured windows). busy: CPUs these processes")
    print("kept busy; machine: CPUs busy machine-wide (interrupts and everything else running included)")
    print(f"{'server':<16}{'conc':>5}" + CPU_COLUMNS)
    for _, res in rows:
        if res.lat:
            print(f"{res.server:<16}{res.conc:>5}{cpu_columns(res)}")
    print()
    out["ratios"] = ratios(results, concs)
    if any(kind == "against" for kind, _ in results):
        print()
        out["ratios"]["against"] = ratios(results, concs, echo="against")
        out["ratios"]["this_over_against"] = compare(results, concs)
    return out


def ratios(results: dict[tuple[str, int], Result], concs: list[int], echo: str = "echo") -> dict[str, Any]:
    """Print the two headline ratios of the Liftoff server of kind `echo` (this tree's, or the `--against` one's);
    returns them for `--json`."""
    out: dict[str, Any] = {}
    hi, lo = max(concs), min(concs)
    bare_hi, echo_hi = results.get(("bare", hi)), results.get((echo, hi))
    bare_lo, echo_lo = results.get(("bare", lo)), results.get((echo, lo))
    name = "echo" if echo == "echo" else "against"
    # Headline: the median over rounds of the paired figures (bare and echo of one round ran back to back, so
    # pairing cancels most of a noisy machine's drift); the pooled figure over all rounds is shown beside it.
    if bare_hi and echo_hi and bare_hi.rps:
        pooled = echo_hi.rps / bare_hi.rps
        paired = [e / b for e, b in zip(echo_hi.round_rps, bare_hi.round_rps, strict=True) if b]
        ratio = median(paired) if paired else pooled
        verdict = "meets" if ratio >= 0.5 else "BELOW"
        print(f"throughput {name}/bare at c={hi}:  {ratio:.2f}  (target >= 0.5: {verdict})   "
              f"by round: {' '.join(f'{x:.2f}' for x in paired)}; pooled {pooled:.2f}")
        out[f"throughput_echo_over_bare_c{hi}"] = round(ratio, 3)
        out[f"throughput_echo_over_bare_c{hi}_by_round"] = [round(x, 3) for x in paired]
    if bare_lo and echo_lo and bare_lo.lat and echo_lo.lat:
        pooled = echo_lo.pct(50) - bare_lo.pct(50)
        paired = [e - b for e, b in zip(echo_lo.round_p50, bare_lo.round_p50, strict=True)]
        added = median(paired) if paired else pooled
        verdict = "meets" if added <= 1.0 else "ABOVE"
        print(f"added p50 {name}-bare at c={lo}:    {added:.2f} ms  (target <= 1 ms: {verdict})   "
              f"by round: {' '.join(f'{x:.2f}' for x in paired)}; pooled {pooled:.2f}")
        out[f"added_p50_ms_c{lo}"] = round(added, 3)
        out[f"added_p50_ms_c{lo}_by_round"] = [round(x, 3) for x in paired]
    return out


def compare(results: dict[tuple[str, int], Result], concs: list[int]) -> dict[str, Any]:
    """This tree's server against the `--against` one, paired by round: throughput ratio and p50 difference at each
    concurrency (the two ran back to back in every round, so the machine's drift mostly cancels)."""
    out: dict[str, Any] = {}
    for conc in concs:
        this, other = results.get(("echo", conc)), results.get(("against", conc))
        if not (this and other and this.lat and other.lat):
            continue
        rps = [t / o for t, o in zip(this.round_rps, other.round_rps, strict=True) if o]
        p50 = [t - o for t, o in zip(this.round_p50, other.round_p50, strict=True)]
        print(f"this tree / against at c={conc}:  throughput {median(rps):.3f} (by round "
              f"{' '.join(f'{x:.3f}' for x in rps)}),  p50 {median(p50):+.3f} ms (by round "
              f"{' '.join(f'{x:+.3f}' for x in p50)})")
        out[f"c{conc}"] = {"throughput_ratio": round(median(rps), 4), "throughput_by_round": [round(x, 4) for x in rps],
                           "p50_diff_ms": round(median(p50), 4), "p50_diff_ms_by_round": [round(x, 4) for x in p50]}
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    add_window_args(p)
    p.add_argument("--concurrency", default="1,64", help="comma-separated connection counts (1,64)")
    p.add_argument("--only", choices=["echo", "bare"], help="run one server only (no ratios)")
    p.add_argument("--against", type=Path, metavar="DIR",
                   help="another checkout of Liftoff (a worktree of an older commit): its server runs beside this "
                        "tree's in the same rounds, and this tree's figures are compared with its")
    p.add_argument("--hold", type=float, default=0.0,
                   help="after the run, keep the servers up this many seconds (to attach a profiler)")
    add_run_args(p, 60.0, "server")
    return parse_window_args(p, argv)


def bench(args: argparse.Namespace, argv: list[str] | None, tmp: Path, servers: list[Server]) -> int:
    """Start the servers (into `servers`), measure every condition, report."""
    import gunicorn

    concs = sorted({int(c) for c in args.concurrency.split(",") if c.strip()})
    ports = free_ports(13 if args.against else 7)
    started = time.monotonic()
    if args.only != "bare":
        servers.append(start_liftoff(tmp, ports[:6], args.workers))
        if args.against:
            servers.append(start_liftoff(tmp, ports[7:13], args.workers, args.against.resolve()))
    if args.only != "echo":
        servers.append(start_bare(tmp, ports[6], args.workers))
    print(f"starting {', '.join(s.name for s in servers)} (workers={args.workers}, temp dir {tmp}) ...", flush=True)
    if start_failed(wait_ready(servers, ports[1], args.start_timeout)):
        return 1
    print(f"servers ready in {time.monotonic() - started:.1f}s", flush=True)
    for server in servers:
        server.refresh_groups()
        roles = ", ".join(f"{role} {pids}" for role, pids in server.groups.items())
        print(f"  {server.name} on 127.0.0.1:{server.port}: {roles}")
    total = args.rounds * len(concs) * len(servers) * (args.warmup + args.duration)
    print(f"measuring: {args.rounds} round(s) x {len(concs) * len(servers)} conditions x "
          f"({args.warmup:g}s warm-up + {args.duration:g}s) = about {total:.0f}s", flush=True)

    results = run_loop(run_all(servers, concs, args.rounds, args.warmup, args.duration, not args.quiet))

    host = host_line(f"gunicorn {gunicorn.__version__} -k asgi  workers={args.workers}  client: {client_loop()}")
    conditions = (
        f"conditions: {args.rounds} round(s), {args.warmup:g}s warm-up + {args.duration:g}s measured each; "
        f"POST {PATH} {BODY.decode()}"
    )
    out = report(results, concs, [run_line("bench.gateway_overhead", argv), host, conditions])
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    if args.hold > 0:
        print(f"\nholding the servers for {args.hold:g}s: " + "; ".join(
            f"{s.name} {s.groups}" for s in servers), flush=True)
        time.sleep(args.hold)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="liftoff-bench-"))
    servers: list[Server] = []

    def cleanup() -> None:
        for server in servers:
            server.stop(timeout_s=60.0)
        remove_tmp(tmp, args.keep)

    return guarded(lambda: bench(args, argv, tmp, servers), cleanup)


if __name__ == "__main__":
    sys.exit(main())
