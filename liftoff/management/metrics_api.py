"""`GET /metrics` on the management port: Prometheus text format.

Two parts: the values every gateway worker and reader recorded (summed over their files in multiprocess mode, see
`liftoff.core.metrics`), and gauges read from Redis at scrape time, which no process owns: readers by state (from the
registry), the backlog of the request stream of each consumer group ever served (XLEN: acknowledged entries are
deleted, so the length is the work queued or in progress) and the dead-letter queue's length, all read through
`liftoff.core.broker`. Redis being unreachable drops the
scrape-time gauges and sets `liftoff_redis_up` to 0; the recorded values are still served.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from liftoff.core import broker
from liftoff.core.metrics import multiprocess_dir
from liftoff.http.context import Gateway
from liftoff.http.openapi import Doc, documented

STATES = ("live", "loading", "dead")


class _Families(Collector):
    """Hands already-gathered families to `generate_latest`."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def recorded() -> bytes:
    """The values the processes recorded: every process's file when in multiprocess mode, else this process's."""
    path = multiprocess_dir()
    if path is None:
        return generate_latest(REGISTRY)
    merged = CollectorRegistry()
    MultiProcessCollector(merged, path=path)  # type: ignore[no-untyped-call]
    return generate_latest(merged)


async def scrape_time(gw: Gateway) -> list[Metric]:
    d = gw.dispatcher
    up = GaugeMetricFamily("liftoff_redis_up", "1 when the scrape could read Redis")
    try:
        directory = await broker.read_directory(d.redis, d.keys, gw.settings.heartbeat_check_interval, ())
        records, groups = directory.records, sorted(directory.known())
        lengths = await broker.stream_lengths(d.redis, [d.keys.requests(g) for g in groups])
        dlq_size = await broker.dlq_length(d.redis, d.keys)
    except Exception:  # noqa: BLE001 — a scrape must answer; the recorded values still help
        up.add_metric([], 0)
        return [up]
    up.add_metric([], 1)
    readers = GaugeMetricFamily("liftoff_readers", "Readers in the registry, by state", labels=["state"])
    for state in STATES:
        readers.add_metric([state], sum(1 for r in records if r.status == state))
    backlog = GaugeMetricFamily("liftoff_stream_backlog", "Requests queued or in progress, by consumer group",
                                labels=["consumer_group"])
    for group, length in zip(groups, lengths, strict=False):
        backlog.add_metric([group], length)
    dlq = GaugeMetricFamily("liftoff_dlq_size", "Requests in the dead-letter queue")
    dlq.add_metric([], dlq_size)
    return [up, readers, backlog, dlq]


def metrics_route(gw: Gateway) -> Route:
    async def metrics(request: Request) -> Response:
        body = await run_in_threadpool(recorded)  # reads one small file per process
        live = CollectorRegistry()
        live.register(_Families(await scrape_time(gw)))
        return Response(body + generate_latest(live), media_type=CONTENT_TYPE_LATEST)

    return documented(Route("/metrics", metrics, methods=["GET"]),
                      Doc(summary="Prometheus metrics", media=(CONTENT_TYPE_LATEST.split(";")[0],)))
