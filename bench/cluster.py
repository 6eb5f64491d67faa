#!/usr/bin/env python
"""Redis Cluster benchmark: the echo path's throughput on one Redis node and on a three-master cluster, in one run.

    .venv/bin/python -m bench.cluster [--duration S] [--rounds N] [--workers N] [--concurrency C] [--quick]

Starts, on free loopback ports,

* one redis-server (TCP, no append-only file) and a Redis Cluster of three masters and three replicas (the tests'
  fixture, tests/redis_cluster.py, with the same settings per node);
* two ``liftoff serve`` trees that differ only in ``redis_url``: one on the single node, one on the cluster
  (``redis+cluster://…``), each with three echo readers in three consumer groups, ``primary``, ``second`` and
  ``slow``, whose hash slots lie on the three masters (the bench prints which master serves each);

then drives ``POST /generate`` at each tree, the bodies naming the three groups in turn, ``--concurrency``
connections (the load generator of bench.gateway_overhead), in interleaved rounds with a warm-up each. Prints
requests/s, p50, p99 and errors per condition, CPU time per request by process role (the Redis servers' own
included), and the ratio cluster / one node of the throughput (the median of the rounds' paired ratios). On a
machine with few cores every process shares them, so the figure is the cluster's cost per request, not the
scale-out a cluster gives across machines. Timings are reported, never asserted.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

from tests.redis_cluster import LocalCluster

from bench import common
from liftoff.control.embedded_redis import EmbeddedRedis
from liftoff.core.keys import Keys

GROUPS = ("primary", "second", "slow")  # slots 13975, 164 and 8903: one on each master of a fresh cluster
BODIES = [json.dumps({"text": "hello world", "consumer_group": group}).encode() for group in GROUPS]


@dataclass
class Tree(common.Server):
    """A `liftoff serve` tree, with the redis-server processes it uses counted under the role "redis"."""

    redis_pids: list[int] = field(default_factory=list)
    mgmt_port: int = 0

    def refresh_groups(self) -> None:
        super().refresh_groups()
        self.groups["redis"] = self.redis_pids


def start_tree(tmp: Path, name: str, redis_url: str, redis_pids: list[int], workers: int) -> Tree:
    tmp.mkdir()
    readers = []
    for group in GROUPS:
        readers += ["", "[[readers]]", 'model_name = "echo"', f'consumer_group = "{group}"', "max_batch_size = 64"]
    ports = common.free_ports(6)
    server = common.launch_liftoff(tmp, ports, [
        'host = "127.0.0.1"',
        f'state_dir = "{tmp / "state"}"',
        f'redis_url = "{redis_url}"',
        'reserved_consumers = ""',
        f"workers = {workers}",
        'log_level = "WARNING"',
        *readers,
    ], name=name)
    return Tree(server.name, server.kind, server.port, server.proc, server.log_path, redis_pids=redis_pids,
                mgmt_port=ports[1])


async def run_all(trees: list[Tree], conc: int, rounds: int, warmup_s: float, duration_s: float,
                  verbose: bool) -> dict[str, common.Result]:
    results = {tree.name: common.Result(tree.name, conc) for tree in trees}
    for r in range(rounds):
        for tree in trees if r % 2 == 0 else trees[::-1]:  # alternate which goes first
            res = results[tree.name]
            run = common.BodiesRun(tree.port, conc, common.PATH, BODIES)
            res.add(run, *await common.measure_window(tree, run, warmup_s, duration_s, drain_s=10.0))
            if verbose:
                print(f"  round {r + 1}/{rounds}  {tree.name:<12} c={conc:<4} {res.round_rps[-1]:9.0f} req/s",
                      flush=True)
    return results


def report(results: dict[str, common.Result], header: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"header": header, "conditions": []}
    print()
    for line in header:
        print(line)
    print()
    print(f"{'redis':<12}{'conc':>5}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'requests':>10}"
          f"   req/s by round")
    for res in results.values():
        rounds = " ".join(f"{x:.0f}" for x in res.round_rps)
        print(f"{res.server:<12}{res.conc:>5}{res.rps:>10.0f}{res.pct(50):>9.2f}{res.pct(99):>9.2f}{res.errors:>8}"
              f"{len(res.lat):>10}   {rounds}")
        out["conditions"].append({"redis": res.server, "concurrency": res.conc, "rps": round(res.rps, 1),
                                  "p50_ms": round(res.pct(50), 3), "p99_ms": round(res.pct(99), 3),
                                  "errors": res.errors, "requests": len(res.lat),
                                  "rps_by_round": [round(x, 1) for x in res.round_rps], **common.cpu_json(res)})
        for note in res.notes:
            print(f"    first error: {note}")
    print()
    print("CPU time per request, microseconds (utime+stime over the measured windows; redis: its Redis servers)")
    print(f"{'redis':<12}{'conc':>5}" + common.CPU_COLUMNS)
    for res in results.values():
        if res.lat:
            print(f"{res.server:<12}{res.conc:>5}{common.cpu_columns(res)}")
    one, cluster = results.get("one node"), results.get("cluster")
    if one and cluster and one.rps:
        paired = [c / o for c, o in zip(cluster.round_rps, one.round_rps, strict=True) if o]
        ratio = median(paired) if paired else cluster.rps / one.rps
        print(f"\nthroughput cluster / one node at c={one.conc}:  {ratio:.2f}   by round: "
              f"{' '.join(f'{x:.2f}' for x in paired)}; pooled {cluster.rps / one.rps:.2f}")
        out["ratio_cluster_over_one_node"] = round(ratio, 3)
        out["ratio_by_round"] = [round(x, 3) for x in paired]
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    common.add_window_args(p)
    p.add_argument("--concurrency", type=int, default=48, help="connections, spread over the three groups (48)")
    common.add_run_args(p, 90.0, "tree")
    return common.parse_window_args(p, argv)


def bench(args: argparse.Namespace, argv: list[str] | None, tmp: Path, trees: list[Tree],
          redis: list[EmbeddedRedis | LocalCluster]) -> int:
    started = time.monotonic()
    (port,) = common.free_ports(1)
    single = EmbeddedRedis(tmp / "single", tcp_port=port, appendonly=False)
    redis.append(single)
    single.start()
    cluster = LocalCluster(tmp / "cluster")
    redis.append(cluster)
    cluster.start()
    keys = Keys()
    masters = {group: cluster.master_of(keys.requests(group)) for group in GROUPS}
    print(f"redis ready in {time.monotonic() - started:.1f}s: one node :{port}; cluster {cluster.url}; "
          f"masters by group {masters}" + ("" if len(set(masters.values())) == len(GROUPS) else " (SHARED)"),
          flush=True)
    assert single.proc is not None
    trees.append(start_tree(tmp / "one", "one node", f"redis://127.0.0.1:{port}/0", [single.proc.pid], args.workers))
    trees.append(start_tree(tmp / "cl", "cluster", cluster.url, [p.pid for p in cluster.procs.values()],
                            args.workers))
    for tree in trees:
        if common.start_failed(common.wait_ready([tree], tree.mgmt_port, args.start_timeout)):
            return 1
    print(f"trees ready in {time.monotonic() - started:.1f}s", flush=True)
    total = args.rounds * len(trees) * (args.warmup + args.duration)
    print(f"measuring: {args.rounds} round(s) x {len(trees)} trees x ({args.warmup:g}s warm-up + {args.duration:g}s)"
          f" = about {total:.0f}s", flush=True)
    results = common.run_loop(run_all(trees, args.concurrency, args.rounds, args.warmup, args.duration, not args.quiet))
    import gunicorn

    header = [common.run_line("bench.cluster", argv),
              common.host_line(f"gunicorn {gunicorn.__version__} -k asgi  workers={args.workers}  3 echo readers each"),
              f"conditions: {args.rounds} round(s), {args.warmup:g}s warm-up + {args.duration:g}s measured each; "
              f"POST {common.PATH} over groups {', '.join(GROUPS)} (masters {sorted(set(masters.values()))})"]
    out = report(results, header)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="liftoff-bench-cluster-"))
    trees: list[Tree] = []
    redis: list[EmbeddedRedis | LocalCluster] = []

    def cleanup() -> None:
        for tree in trees:
            tree.stop(timeout_s=60.0)
        for server in redis:
            server.stop()
        common.remove_tmp(tmp, args.keep)

    return common.guarded(lambda: bench(args, argv, tmp, trees, redis), cleanup)


if __name__ == "__main__":
    sys.exit(main())
