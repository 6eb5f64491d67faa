"""The internal port (3005): how much work waits in each consumer group, for autoscalers and operators' scripts.

`GET /consumer_groups` lists every known group; `GET /consumer_groups/{group}` shows one (404 naming the known
groups when it is unknown). Per group:

* `queued`: entries no reader has taken yet (the stream's length less the group's pending entries);
* `in_progress`: entries delivered to a reader and not yet acknowledged (the group's pending entries list);
* `live_readers` / `loading_readers`: readers of the group by registry state;
* `reserved`: whether requests for the group wait for a reader (`reserved_consumers`) rather than being refused.

Readers delete entries as they acknowledge them, so the stream's length is queued plus in progress. The groups
and their numbers come from the broker (`read_directory`, `read_backlogs` in liftoff.core.broker), as the health
report's and the deployment autoscaler's do, so that they never disagree on a number.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from liftoff.core import broker
from liftoff.core.broker import TRANSIENT
from liftoff.core.errors import NotFound, Unavailable
from liftoff.http.context import Gateway
from liftoff.http.openapi import Doc, documented
from liftoff.http.responses import json_response


async def group_table(gw: Gateway) -> dict[str, dict[str, Any]]:
    """Every known consumer group (served, registered or reserved; direct reader groups left out) with its backlog."""
    d, s = gw.dispatcher, gw.settings
    directory = await broker.read_directory(d.redis, d.keys, s.heartbeat_check_interval, s.reserved_groups())
    groups = sorted(directory.known())
    backlogs = await broker.read_backlogs(d.redis, d.keys, groups)
    table = {}
    for group in groups:
        members = [r for r in directory.records if group in r.info.consumer_groups]
        b = backlogs[group]
        table[group] = {
            "name": group,
            "queued": b.queued,
            "in_progress": b.in_progress,
            "backlog": b.total,
            "live_readers": sum(r.status == "live" for r in members),
            "loading_readers": sum(r.status == "loading" for r in members),
            "reserved": group in directory.reserved,
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
        documented(Route("/consumer_groups", list_groups, methods=["GET"]),
                   Doc(summary="every known consumer group with its backlog")),
        documented(Route("/consumer_groups/{group}", show_group, methods=["GET"]),
                   Doc(summary="one consumer group's backlog")),
    ]
