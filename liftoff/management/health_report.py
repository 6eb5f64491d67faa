"""`GET /api/health/status` on the management port: component health and system metrics, Redis in NATS's place.

`components` (gateway, redis, readers, supervisor) are checked on every call; the overall `status` is "ok" when
each is "ok" or "disabled", else "degraded", and the answer is 200 or 503 with the same body. A component is:

* `gateway`: this worker answers, so "ok"; its address lists the six ports.
* `redis`: a PING within `CHECK_TIMEOUT_S` (it is both the broker and the job store).
* `readers`: "error" when readers are registered and none is live (nothing can serve), "disabled" when none is
  registered; a dead reader beside live ones shows in `agents` and `registry`, not here.
* `supervisor`: the `liftoff serve` process above the gateway's arbiter is alive ("disabled" without one).

The metrics come from concurrent collectors, each within `COLLECTOR_TIMEOUT_S`; one that fails is logged and its
field left out, never failing the report. They are cached for `METRICS_CACHE_S` per gateway worker (`?refresh=true`
skips the cache); `version`, `uptime` and `components` are always fresh. Mapping from the reference:

* `redis` {url, version} stands for `nats`; `streams` are the request streams of every known consumer group and
  the dead-letter stream; `kv_buckets` are Liftoff's Redis hashes; there are no object stores.
* `jobs`: `completed`/`failed` from the readers' counters, `dlq` the dead-letter stream's length, `processing` the
  delivered-but-unacknowledged entries (XPENDING), `unprocessed` the entries not yet delivered; `total` adds them,
  cancelled and dead-lettered jobs included.
* `agents` are readers; `consumers` are consumer groups (the durable consumers): `pending` = not yet delivered,
  `ack_pending` = delivered and not acknowledged, `redelivered` = of those, delivered more than once; `readers`
  lists each reader's share.
* `registry`: one row per process: readers (from the registry), the gateway's arbiter and workers, the
  supervisor and a local redis-server, with psutil's CPU percentage and RSS where the process is on this host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import psutil
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import liftoff
from liftoff.core import broker, reader_store, registry
from liftoff.core.broker import read_backlogs
from liftoff.core.keys import Keys
from liftoff.core.redis_client import redact
from liftoff.core.redis_state import unreachable_reason
from liftoff.core.registry import ReaderRecord
from liftoff.http.context import Gateway
from liftoff.http.openapi import Doc, documented
from liftoff.http.responses import json_response

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 1.0
COLLECTOR_TIMEOUT_S = 2.0
METRICS_CACHE_S = 15.0  # the reference: ~15 s; `?refresh=true` skips it
CPU_SAMPLE_S = 0.1
PRESSURE_PERCENT = 90.0
MAX_PENDING_SCAN = 1000
READER_STATUS = {"live": "Ready", "loading": "Loading", "dead": "Dead"}


def format_duration(seconds: float, spaced: bool = False) -> str:
    """`2h30m` (or `2h 30m` when `spaced`): the two largest units; `45s` under a minute."""
    s = max(0, int(seconds))
    parts = [(s // 86400, "d"), (s // 3600 % 24, "h"), (s // 60 % 60, "m"), (s % 60, "s")]
    while len(parts) > 1 and parts[0][0] == 0:
        parts.pop(0)
    return (" " if spaced else "").join(f"{n}{u}" for n, u in parts[:2])


class HealthReport:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.redis = gw.dispatcher.redis
        self.keys: Keys = gw.dispatcher.keys
        self._cache: tuple[float, dict[str, Any]] | None = None

    async def build(self, refresh: bool = False) -> tuple[bool, dict[str, Any]]:
        components = await self.components()
        ok = all(c["status"] in ("ok", "disabled") for c in components.values())
        now = time.monotonic()
        if refresh or self._cache is None or now - self._cache[0] > METRICS_CACHE_S:
            self._cache = (now, await self.metrics())
        body = {"status": "ok" if ok else "degraded", "components": components, "version": liftoff.__version__,
                "uptime": format_duration(time.time() - self.started_s()), **self._cache[1]}
        return ok, body

    # --- components -----------------------------------------------------------------------------------------------
    async def components(self) -> dict[str, dict[str, Any]]:
        s = self.gw.settings
        gateway = {"status": "ok", "error": None,
                   "address": ", ".join(f"{s.host}:{p}" for p in s.ports().values())}
        redis_c, readers_c = await asyncio.gather(self._redis_component(), self._readers_component())
        return {"gateway": gateway, "redis": redis_c, "readers": readers_c, "supervisor": self._supervisor_component()}

    async def _redis_component(self) -> dict[str, Any]:
        address = redact(self.gw.settings.redis_url or "")
        try:
            await asyncio.wait_for(self.redis.ping(), CHECK_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 — any failure is the component's error, never the report's
            reason = unreachable_reason(self.gw.settings.state_dir, exc)  # the supervisor's account, if it has one
            return {"status": "error", "error": reason, "address": address}
        return {"status": "ok", "error": None, "address": address}

    async def _readers_component(self) -> dict[str, Any]:
        try:
            records = await asyncio.wait_for(self._records(), CHECK_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001
            return {"status": "error", "error": f"the reader registry is unreadable: {exc or type(exc).__name__}",
                    "address": None}
        if not records:
            return {"status": "disabled", "error": None, "address": None}
        if not any(r.status == "live" for r in records):
            states = {r.reader_id: r.status for r in records}
            return {"status": "error", "error": f"no reader is live: {states}", "address": None}
        return {"status": "ok", "error": None, "address": None}

    def _supervisor_component(self) -> dict[str, Any]:
        if reader_store.supervisor_id() is None:
            return {"status": "disabled", "error": None, "address": None}
        pid = supervisor_pid()
        if pid is None:
            return {"status": "error", "error": "the supervisor (liftoff serve) is gone", "address": None}
        return {"status": "ok", "error": None, "address": None}

    def started_s(self) -> float:
        pid = supervisor_pid() if reader_store.supervisor_id() else None
        try:
            return psutil.Process(pid).create_time() if pid else self.gw.started_s
        except psutil.Error:
            return self.gw.started_s

    # --- metrics --------------------------------------------------------------------------------------------------
    async def metrics(self) -> dict[str, Any]:
        collectors: dict[str, Callable[[], Awaitable[Any]]] = {
            "redis": self.redis_info, "streams": self.streams, "kv_buckets": self.kv_buckets, "jobs": self.jobs,
            "agents": self.agents, "consumers": self.consumers, "registry": self.process_registry,
        }
        results = await asyncio.gather(*(self._collect(name, fn) for name, fn in collectors.items()))
        return {name: value for name, value in zip(collectors, results, strict=True) if value is not None}

    async def _collect(self, name: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        try:
            return await asyncio.wait_for(fn(), COLLECTOR_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 — a failed collector leaves its field out
            log.warning("health report: collector %s failed: %s", name, exc or type(exc).__name__)
            return None

    async def _records(self) -> list[ReaderRecord]:
        return await registry.read_registry(self.redis, self.keys, self.gw.settings.heartbeat_check_interval)

    async def _groups(self, direct: bool = False) -> list[str]:
        s = self.gw.settings
        directory = await broker.read_directory(self.redis, self.keys, s.heartbeat_check_interval, s.reserved_groups())
        return sorted(directory.known(direct))

    async def redis_info(self) -> dict[str, Any]:
        info = await self.redis.info("server")
        return {"url": redact(self.gw.settings.redis_url or ""), "version": info.get("redis_version")}

    async def streams(self) -> list[dict[str, Any]]:
        names = [self.keys.requests(g) for g in await self._groups()] + await broker.dlq_streams(self.redis, self.keys)
        return [{"name": st.name, "messages": st.messages, "bytes": st.bytes, "consumers": st.consumers}
                for st in await broker.stream_stats(self.redis, names)]

    async def kv_buckets(self) -> list[dict[str, Any]]:
        k = self.keys
        names = [k.readers, k.deployments, k.deployment_models, k.deployment_scale, k.fit_measurements]
        sup = reader_store.supervisor_id()
        if sup is not None:
            names.insert(1, k.reader_configs(sup))
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.hlen(name)
            pipe.memory_usage(name)
        replies = await pipe.execute()
        return [{"name": name, "keys": int(replies[2 * i]), "bytes": int(replies[2 * i + 1] or 0)}
                for i, name in enumerate(names)]

    async def jobs(self) -> dict[str, int]:
        groups = await self._groups()
        backlogs = await read_backlogs(self.redis, self.keys, groups)
        stats = await broker.job_counts(self.redis, self.keys, await self._groups(direct=True))
        dlq = await broker.dlq_length(self.redis, self.keys)
        unprocessed = sum(b.queued for b in backlogs.values())
        processing = sum(b.in_progress for b in backlogs.values())
        total = sum(stats.values()) + unprocessed + processing
        return {"total": total, "unprocessed": unprocessed, "processing": processing,
                "completed": stats["completed"], "failed": stats["failed"], "dlq": int(dlq)}

    async def agents(self) -> dict[str, Any]:
        records = await self._records()
        now = time.time()
        rows = [{
            "hostname": r.info.hostname,
            "labels": ",".join(f"{k}={v}" for k, v in (("reader", r.reader_id), ("model", r.info.model_name),
                                                         ("device", r.info.device),
                                                         ("group", "+".join(r.info.consumer_groups)))),
            "registered": f"{format_duration(now - (r.last_heartbeat_s or r.info.registered_s))} ago",
        } for r in records]
        return {"total": len(records), "ready": sum(r.status == "live" for r in records), "agents": rows}

    async def consumers(self) -> dict[str, Any]:
        groups = await self._groups()
        backlogs = await read_backlogs(self.redis, self.keys, groups)
        rows = []
        for group in groups:
            b = backlogs[group]
            if b.consumers == 0 and b.total == 0:
                continue
            redelivered = 0
            if b.in_progress:
                redelivered = await broker.redelivered(self.redis, self.keys, group, MAX_PENDING_SCAN)
            members = await broker.group_consumers(self.redis, self.keys, group) if b.consumers else []
            rows.append({"name": group, "pending": b.queued, "ack_pending": b.in_progress, "redelivered": redelivered,
                         "readers": [{"name": m.name, "ack_pending": m.pending, "idle_ms": m.idle_ms}
                                     for m in members]})
        return {"total": len(rows), "consumers": rows}

    async def process_registry(self) -> list[dict[str, Any]]:
        records = await self._records()
        redis_pid = await self._local_redis_pid()
        return await asyncio.to_thread(self._process_rows, records, redis_pid)

    async def _local_redis_pid(self) -> int | None:
        url = self.gw.settings.redis_url or ""
        host = urlsplit(url).hostname
        if not (url.startswith("unix:") or host in ("localhost", "127.0.0.1", "::1")):
            return None
        return int((await self.redis.info("server")).get("process_id", 0)) or None

    def _process_rows(self, records: list[ReaderRecord], redis_pid: int | None) -> list[dict[str, Any]]:
        here = self.gw.settings.host_name  # the name this host gives its readers in the registry
        rows: list[tuple[dict[str, Any], psutil.Process | None]] = []
        for r in records:
            proc = _process(r.info.pids[0]) if r.info.pids and r.info.hostname == here else None
            row = {"type": "reader", "name": r.reader_id, "hostname": r.info.hostname,
                   "status": READER_STATUS[r.status], "started_s": r.info.registered_s}
            rows.append((row, proc if r.status != "dead" else None))
        arbiter = _process(os.getppid())
        workers = arbiter.children() if arbiter else [psutil.Process()]
        local = [("gateway", arbiter)] + [("gateway-worker", w) for w in workers]
        if reader_store.supervisor_id() is not None:
            local.append(("supervisor", _process(supervisor_pid())))
        if redis_pid:
            local.append(("redis", _process(redis_pid)))
        for kind, proc in local:
            if proc is not None:
                rows.append(({"type": kind, "name": f"{kind}-{proc.pid}", "hostname": here, "status": "Running",
                              "started_s": _created(proc)}, proc))
        cpu = _cpu_percent([p for _, p in rows if p is not None])
        node = node_conditions(self.gw.settings.state_dir)
        now = time.time()
        out = []
        for row, proc in rows:
            percent = cpu.get(proc.pid) if proc else None
            conditions = list(node) if proc or row["hostname"] == here else []
            if percent is not None and percent >= PRESSURE_PERCENT and "HighLoad" not in conditions:
                conditions.append("HighLoad")
            out.append({"type": row["type"], "name": row["name"], "hostname": row["hostname"],
                        "status": row["status"], "conditions": conditions,
                        "age": format_duration(now - row["started_s"], spaced=True), "cpu_percent": percent,
                        "mem_bytes": _rss(proc), "pid": proc.pid if proc else None})
        return out


def supervisor_pid() -> int | None:
    """The `liftoff serve` process: the parent of this worker's arbiter (None when the arbiter was orphaned)."""
    arbiter = _process(os.getppid())
    if arbiter is None:
        return None
    try:
        parent = arbiter.ppid()
    except psutil.Error:
        return None
    return parent if parent > 1 and psutil.pid_exists(parent) else None


def node_conditions(path: str) -> list[str]:
    """The node's true conditions: MemoryPressure, HighLoad (load average over the cores), DiskPressure."""
    out = []
    if psutil.virtual_memory().percent >= PRESSURE_PERCENT:
        out.append("MemoryPressure")
    if os.getloadavg()[0] >= (psutil.cpu_count(logical=True) or 1):
        out.append("HighLoad")
    with contextlib.suppress(OSError):
        if psutil.disk_usage(path if os.path.exists(path) else ".").percent >= PRESSURE_PERCENT:
            out.append("DiskPressure")
    return out


def _process(pid: int | None) -> psutil.Process | None:
    try:
        return psutil.Process(pid) if pid else None
    except psutil.Error:
        return None


def _created(proc: psutil.Process) -> float:
    try:
        return proc.create_time()
    except psutil.Error:
        return time.time()


def _rss(proc: psutil.Process | None) -> int | None:
    try:
        return proc.memory_info().rss if proc else None
    except psutil.Error:
        return None


def _cpu_percent(procs: list[psutil.Process]) -> dict[int, float]:
    """CPU percentage of each process over one short sample (psutil's first reading of a process is always 0)."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.cpu_percent(None)
    time.sleep(CPU_SAMPLE_S)
    out = {}
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            out[proc.pid] = round(proc.cpu_percent(None), 1)
    return out


def health_report_routes(gw: Gateway) -> list[Route]:
    report = HealthReport(gw)

    async def status(request: Request) -> Response:
        refresh = request.query_params.get("refresh", "").lower() == "true"
        ok, body = await report.build(refresh)
        return json_response(body, 200 if ok else 503)

    doc = Doc(summary="the system health report", query={"refresh": {"type": "boolean"}},
              errors={503: "the system is not healthy (the report says why)"}, error_schemas={503: {"type": "object"}})
    return [documented(Route("/api/health/status", status, methods=["GET"]), doc)]
