"""The internal port (3005): how much work waits in each consumer group, for autoscalers and operators' scripts.

`GET /consumer_groups` lists every known group; `GET /consumer_groups/{group}` shows one (404 naming the known
groups when it is unknown). Per group:

* `queued`: entries no reader has taken yet (the stream's length less the group's pending entries);
* `in_progress`: entries delivered to a reader and not yet acknowledged (the group's pending entries list);
* `live_readers` / `loading_readers`: readers of the group by registry state;
* `reserved`: whether requests for the group wait for a reader (`reserved_consumers`) rather than being refused.

Readers delete entries as they acknowledge them, so the stream's length is queued plus in progress. `read_backlogs`
is shared with the health report and the deployment autoscaler, so that the three never disagree on a number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.context import Gateway
from gateway.dispatch import TRANSIENT
from gateway.errors import NotFound, Unavailable
from gateway.responses import json_response
from liftoff import registry
from liftoff.keys import Keys


@dataclass(frozen=True, slots=True)
class Backlog:
    group: str
    queued: int  # in the stream, not yet delivered to any reader
    in_progress: int  # delivered, not yet acknowledged
    consumers: int  # consumer names the group has (live or not yet tidied)

    @property
    def total(self) -> int:
        return self.queued + self.in_progress


async def read_backlogs(redis: Redis, keys: Keys, groups: list[str]) -> dict[str, Backlog]:
    """One round trip: XLEN and XINFO GROUPS of each group's request stream (a missing stream is an empty one)."""
    if not groups:
        return {}
    pipe = redis.pipeline(transaction=False)
    for group in groups:
        pipe.xlen(keys.requests(group))
        pipe.xinfo_groups(keys.requests(group))
    replies = await pipe.execute(raise_on_error=False)
    out = {}
    for index, group in enumerate(groups):
        length, infos = replies[2 * index], replies[2 * index + 1]
        length = length if isinstance(length, int) else 0
        info = _group_info(infos, group)
        pending = int(info.get("pending", 0)) if info else 0
        consumers = int(info.get("consumers", 0)) if info else 0
        out[group] = Backlog(group, max(0, length - pending), pending, consumers)
    return out


def _group_info(infos: Any, group: str) -> dict[Any, Any] | None:
    if not isinstance(infos, list):  # an error (no such key) stands for a stream nobody has written yet
        return None
    for info in infos:
        name = info.get("name")
        if (name.decode() if isinstance(name, bytes) else name) == group:
            return info
    return None


async def group_table(gw: Gateway) -> dict[str, dict[str, Any]]:
    """Every known consumer group (served, registered or reserved; direct reader groups left out) with its backlog."""
    d = gw.dispatcher
    records = await registry.read_registry(d.redis, d.keys, gw.settings.heartbeat_check_interval)
    served = {g.decode() for g in await d.redis.smembers(d.keys.groups)}
    reserved = set(gw.settings.reserved_groups())
    known = served | {g for r in records for g in r.info.consumer_groups} | reserved
    groups = sorted(g for g in known if not g.startswith("@"))
    backlogs = await read_backlogs(d.redis, d.keys, groups)
    table = {}
    for group in groups:
        members = [r for r in records if group in r.info.consumer_groups]
        b = backlogs[group]
        table[group] = {
            "name": group,
            "queued": b.queued,
            "in_progress": b.in_progress,
            "backlog": b.total,
            "live_readers": sum(r.status == "live" for r in members),
            "loading_readers": sum(r.status == "loading" for r in members),
            "reserved": group in reserved,
        }
    return table


def internal_routes(gw: Gateway) -> list[Route]:
    async def table() -> dict[str, dict[str, Any]]:
        try:
            return await group_table(gw)
        except TRANSIENT as exc:
            raise Unavailable(f"the request queue (Redis) is unreachable: {exc}") from None

    async def list_groups(request: Request) -> Response:
        return json_response({"consumer_groups": list((await table()).values())})

    async def show_group(request: Request) -> Response:
        group = request.path_params["group"]
        table_ = await table()
        if group not in table_:
            known = sorted(table_)
            raise NotFound(f"unknown consumer group {group!r}; known groups: {known}", {"known_groups": known})
        return json_response(table_[group])

    return [
        Route("/consumer_groups", list_groups, methods=["GET"]),
        Route("/consumer_groups/{group}", show_group, methods=["GET"]),
    ]
