"""The tokenizer work the OpenAI port needs from one live reader of a model's consumer group.

Token-id inputs are turned back into text by the tokenizer of one reader of the group (`detokenize`, the reader
picked round-robin from the registry), and embedding inputs are counted with it (`tokenize`). All of it goes
through the reader's direct group (`liftoff.gateway.services.tokenizer`), as the inference port's /tokenize/{reader_id}
does. (Chat messages are not rendered here: they travel in the generation work item and the reader that takes it
renders them.)
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from liftoff.core import registry
from liftoff.core.adapters import split_model
from liftoff.core.errors import ApiError
from liftoff.gateway.chat.errors import OpenAIError, from_api_error, model_not_found
from liftoff.gateway.services.tokenizer import TokenizerKind, run_on_reader
from liftoff.http.context import Gateway

REGISTRY_TTL_S = 1.0  # how long a read of the registry serves the picks (a dead reader is retried once)


class Readers:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self._read_at = -REGISTRY_TTL_S
        self._records: list[registry.ReaderRecord] = []
        self._turn = itertools.count()

    async def records(self, fresh: bool = False) -> list[registry.ReaderRecord]:
        now = time.monotonic()
        if fresh or now - self._read_at > REGISTRY_TTL_S:
            d = self.gw.dispatcher
            self._records = await registry.read_registry(d.redis, d.keys, self.gw.settings.heartbeat_check_interval)
            self._read_at = now
        return self._records

    async def live_groups(self, fresh: bool = False) -> dict[str, list[registry.ReaderRecord]]:
        """Consumer group → its live readers."""
        groups: dict[str, list[registry.ReaderRecord]] = {}
        for record in await self.records(fresh):
            if record.status == "live":
                for group in record.info.consumer_groups:
                    groups.setdefault(group, []).append(record)
        return dict(sorted(groups.items()))

    async def pick(self, model: str, fresh: bool = False) -> str:
        """A live reader of `model`'s group (`group` or `group:adapter`), round-robin; 404 for a group nobody
        serves, 503 for one without a live reader."""
        group = split_model(model)[0]
        records = await self.records(fresh)
        live = [r.reader_id for r in records if r.status == "live" and group in r.info.consumer_groups]
        if not live and not fresh:
            return await self.pick(group, fresh=True)
        if live:
            return live[next(self._turn) % len(live)]
        if any(group in r.info.consumer_groups for r in records) or group in self.gw.settings.reserved_groups():
            raise OpenAIError(503, f"model {group!r} has no live reader; try again once a reader is live", "model")
        raise model_not_found(group, sorted(await self.live_groups()))

    async def tool_call_parser(self, model: str) -> str | None:
        """The tool-call format the group's live readers publish (the first that has one), or None; 404 / 503 as
        `pick` for a group without live readers."""
        await self.pick(model)
        group = split_model(model)[0]
        parsers = [r.info.tool_call_parser for r in await self.records()
                   if r.status == "live" and group in r.info.consumer_groups and r.info.tool_call_parser]
        return parsers[0] if parsers else None

    async def sampling_defaults(self, model: str) -> dict[str, float] | None:
        """The sampling the group's live readers' model sets by default (its generation_config), for the parameters
        a request leaves unset; None when it sets none (or nobody serves the group: the dispatcher answers that)."""
        group = split_model(model)[0]
        for record in await self.records():
            if record.status == "live" and group in record.info.consumer_groups:
                return record.info.sampling
        return None

    @staticmethod
    def adapters(records: list[registry.ReaderRecord]) -> dict[str, list[registry.ReaderRecord]]:
        """LoRA adapter → the readers (of `records`) that serve it."""
        out: dict[str, list[registry.ReaderRecord]] = {}
        for record in records:
            for adapter in record.info.loras:
                out.setdefault(adapter["name"], []).append(record)
        return dict(sorted(out.items()))

    async def call(self, group: str, kind: TokenizerKind, args: dict[str, Any]) -> Any:
        """Tokenizer work on one live reader of `group`; a reader that died since the last look is replaced once."""
        reader_id = await self.pick(group)
        try:
            return await run_on_reader(self.gw, reader_id, kind, args)
        except ApiError as err:
            if err.status not in (404, 503):
                raise from_api_error(err, group) from None
        return await run_on_reader(self.gw, await self.pick(group, fresh=True), kind, args)

    async def detokenize(self, group: str, prompts: list[list[int]], param: str) -> list[str]:
        """Token-id inputs as text, by the group's tokenizer (special tokens dropped: the reader adds its own)."""
        try:
            results = await asyncio.gather(*(
                self.call(group, "detokenize", {"tokens": ids, "skip_special_tokens": True}) for ids in prompts))
        except OpenAIError as err:
            if err.status == 400:
                err.message, err.param = f"{param}: token ids could not be decoded: {err.message}", param
            raise
        return [r["text"] for r in results]

    async def count_tokens(self, group: str, texts: list[str]) -> int:
        results = await asyncio.gather(*(self.call(group, "tokenize", {"text": t}) for t in texts))
        return sum(int(r["tokens_count"]) for r in results)


class ReaderApi:
    """An API's route handlers, which call on live readers: the gateway, and one `Readers` the handlers share (one
    registry read serves them all for REGISTRY_TTL_S, and their picks take turns across the group)."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.readers = Readers(gw)
