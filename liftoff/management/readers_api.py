"""Reader management on the management port: list by group, add, remove (after draining), show a config, and add
or remove a generation reader's LoRA adapters while it runs (docs/lora.md).

Listing covers every reader of every host that shares the Redis. Adding and removing act on the readers of this
host's supervisor: a gateway-only host (`role = "gateway"`) starts none, so it refuses to add one (409), and a reader
that another host's supervisor runs is refused too (409), since that supervisor would start it again (docs/scaling.md).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from liftoff.core import reader_store, registry
from liftoff.core.adapters import parse_lora
from liftoff.core.errors import ApiError, BadRequest, NotFound, Unavailable, Unprocessable, from_validation
from liftoff.core.keys import Keys
from liftoff.core.reader_config import ReaderConfig
from liftoff.core.settings import Settings
from liftoff.fit.auto_device import AutoPlacementError, place_reader, running_readers
from liftoff.fit.facts import PublishedFacts
from liftoff.http.context import Gateway
from liftoff.http.openapi import Doc, documented
from liftoff.http.parsing import read_json_object, validate
from liftoff.http.responses import json_response

REMOVE_POLL_S = 0.1


class Conflict(ApiError):
    status = 409


class LoraRequest(BaseModel):
    """A LoRA adapter to load on a running reader: `source` as in a `loras` entry, `name` (default: from the
    source) what requests pick it by."""

    model_config = ConfigDict(extra="forbid")

    source: str
    name: str | None = None


def reader_routes(gw: Gateway) -> list[Route]:
    return ReaderManagement(gw).routes()


class ReaderManagement:
    """The handlers of the reader routes, on one gateway's dispatcher (its Redis and key names) and settings."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.redis = gw.dispatcher.redis
        self.keys = gw.dispatcher.keys

    def routes(self) -> list[Route]:
        return [
            documented(Route("/reader_groups", self.reader_groups, methods=["GET"]),
                       Doc(summary="readers by consumer group")),
            documented(Route("/reader", self.add_reader, methods=["POST"]),
                       Doc(summary="add a reader on this host", body=ReaderConfig, ok={201: "the reader is configured"},
                           errors={409: "the reader_id is taken, or this host runs no readers (role gateway)"})),
            documented(Route("/reader/{reader_id}", self.delete_reader, methods=["DELETE"]),
                       Doc(summary="drain and remove a reader", ok={204: "the reader is gone"},
                           errors={409: "another host's supervisor runs that reader"})),
            documented(Route("/config/{reader_id}", self.reader_config, methods=["GET"]),
                       Doc(summary="one reader's configuration")),
            documented(Route("/reader/{reader_id}/loras", self.add_lora, methods=["POST"]),
                       Doc(summary="load a LoRA adapter on a running generation reader", body=LoraRequest,
                           ok={201: "the adapter is loaded; requests may pick it"},
                           errors={404: "no live reader by that id", 409: "an adapter of that name is loaded",
                                   422: "the adapter cannot be had or does not fit the model"})),
            documented(Route("/reader/{reader_id}/loras/{name}", self.remove_lora, methods=["DELETE"]),
                       Doc(summary="remove a LoRA adapter from a running reader",
                           ok={200: "new requests may no longer pick it; its memory is freed once its last rows end"},
                           errors={404: "no live reader by that id, or no adapter by that name on it"})),
        ]

    async def records(self) -> list[registry.ReaderRecord]:
        return await registry.read_registry(self.redis, self.keys, self.gw.settings.heartbeat_check_interval)

    async def reader_groups(self, request: Request) -> Response:
        groups: dict[str, list[dict[str, Any]]] = {}
        for r in await self.records():
            for group in r.info.consumer_groups:
                groups.setdefault(group, []).append(
                    {
                        "reader_id": r.reader_id,
                        "backend": r.info.config.get("backend") or "transformers",
                        "model_name": r.info.model_name,
                        "model_type": r.info.model_type,
                        "pids": r.info.pids,
                        "ready": r.status == "live",
                        "status": r.status,
                        "hostname": r.info.hostname,
                    }
                )
        return json_response(groups)

    async def add_reader(self, request: Request) -> Response:
        sup = reader_host(self.gw.settings, "add a reader")
        body = await read_json_object(request)
        known = {k: v for k, v in body.items() if k in ReaderConfig.model_fields}
        unknown = sorted(k for k in body if k not in ReaderConfig.model_fields)
        try:
            config = ReaderConfig.model_validate(known)
        except ValidationError as exc:
            raise from_validation(exc) from None
        reader_id = config.reader_id or f"{config.consumer_group}-{uuid.uuid4().hex[:8]}"
        config = await self._placed(config, reader_id)
        if not await reader_store.put(self.redis, self.keys, sup, config):
            raise Conflict(f"reader_id {reader_id!r} is already configured")
        answer: dict[str, Any] = {"reader_id": reader_id, "device": config.device}
        if unknown:
            answer["ignored_fields"] = unknown
            answer["warning"] = f"fields not known to this server were ignored: {unknown}"
        return json_response(answer, 201)

    async def _placed(self, config: ReaderConfig, reader_id: str) -> ReaderConfig:
        """`config` as `reader_id`, on a device chosen beside the readers that run (409 if the id is registered)."""
        current = await self.records()
        if any(r.reader_id == reader_id for r in current):
            raise Conflict(f"reader_id {reader_id!r} is already registered")
        try:
            # On the facts the supervisor published: a gateway worker never detects hardware itself.
            config = await place_reader(config, running_readers(current), self.gw.settings.repository_path,
                                        self.gw.settings.echo, facts=PublishedFacts(self.redis, self.keys))
        except AutoPlacementError as exc:
            raise Unprocessable(f"cannot place the reader: {exc}", {"fit": exc.report}) from None
        return config.model_copy(update={"reader_id": reader_id})

    async def delete_reader(self, request: Request) -> Response:
        reader_id = request.path_params["reader_id"]
        sup = _supervisor()
        record = next((r for r in await self.records() if r.reader_id == reader_id), None)
        here = self.gw.settings.host_name
        if record is not None and record.info.supervised and record.info.hostname != here and \
                reader_id not in await reader_store.load(self.redis, self.keys, sup):
            raise Conflict(f"reader {reader_id!r} runs under the supervisor of host {record.info.hostname!r}, which "
                           f"would start it again; this host ({here!r}) removes only its own readers: remove it from "
                           "that host's readers (its config.toml) and restart that host")
        configured = await reader_store.remove(self.redis, self.keys, sup, reader_id)
        if not configured and record is None:
            raise NotFound(f"no reader {reader_id!r}")
        await registry.request_stop(self.redis, self.keys, reader_id)  # hand-started readers obey this too
        await self._wait_gone(reader_id, self.gw.settings.shutdown_grace_s + 15)
        return Response(status_code=204)

    async def _wait_gone(self, reader_id: str, timeout_s: float) -> None:
        """The reader drains, deregisters and exits; a dead one is dropped from the registry here."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            record = next((r for r in await self.records() if r.reader_id == reader_id), None)
            if record is None:
                return
            if record.status == "dead":
                await registry.deregister(self.redis, self.keys, reader_id)
                return
            await asyncio.sleep(REMOVE_POLL_S)
        raise Unavailable(f"reader {reader_id!r} was asked to stop but is still draining after {timeout_s:.0f}s")

    async def reader_config(self, request: Request) -> Response:
        reader_id = request.path_params["reader_id"]
        for r in await self.records():
            if r.reader_id == reader_id:
                return json_response(r.info.config)
        sup = reader_store.supervisor_id()
        configs = await reader_store.load(self.redis, self.keys, sup) if sup else {}
        if reader_id in configs:
            return json_response(configs[reader_id].model_dump())
        raise NotFound(f"no reader {reader_id!r}")


    async def add_lora(self, request: Request) -> Response:
        body = await read_json_object(request)
        unknown = sorted(k for k in body if k not in LoraRequest.model_fields)
        if unknown:
            raise BadRequest(f"unknown fields: {unknown}; a LoRA adapter takes source and name")
        req = validate(LoraRequest, body)
        try:
            name, source = parse_lora(f"{req.name}={req.source}" if req.name is not None else req.source)
        except ValueError as exc:
            raise Unprocessable(str(exc)) from None
        result = await self._on_reader(request.path_params["reader_id"], "lora_add", {"name": name, "source": source})
        return json_response(result, 201)

    async def remove_lora(self, request: Request) -> Response:
        result = await self._on_reader(request.path_params["reader_id"], "lora_remove",
                                       {"name": request.path_params["name"]})
        return json_response(result)

    async def _on_reader(self, reader_id: str, kind: str, args: dict[str, Any]) -> Any:
        """`kind` run by the live reader `reader_id` (its direct group), which answers with the change made."""
        live = sorted(r.reader_id for r in await self.records() if r.status == "live")
        if reader_id not in live:
            raise NotFound(f"no live reader {reader_id!r}; live readers: {live}", {"live_readers": live})
        dispatcher = self.gw.dispatcher
        ticket = await dispatcher.submit(Keys.direct_group(reader_id), [], kind=kind, args=args)
        return (await dispatcher.outcome(ticket)).result


def reader_host(settings: Settings, action: str) -> str:
    """The supervisor that would run a reader this host starts: 409 on a gateway-only host, which runs none."""
    if settings.role == "gateway":
        raise Conflict(f"this host runs role \"gateway\", which starts no readers, so it cannot {action}: list the "
                       "reader in a readers host's readers (role \"readers\" or \"all\"), or start it by hand there "
                       "with `liftoff reader --redis-url ...`")
    return _supervisor()


def _supervisor() -> str:
    sup = reader_store.supervisor_id()
    if sup is None:
        raise Unavailable("this gateway runs without a supervisor (`liftoff serve`), so it cannot manage readers")
    return sup
