"""Generation: one request (a user batch of prompts, or chats the reader renders) to a consumer group's readers,
answered whole (`generate`) or streamed (`stream`).

A port builds a `Generation` from its protocol's request; the service checks the limits, queues it and hands back
the reader's terminal reply, or the stream of its replies. Errors are `ApiError`s, which each port translates.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from liftoff.core.errors import error_for_status
from liftoff.core.settings import Settings
from liftoff.core.wire import Reply
from liftoff.gateway.services import adapters
from liftoff.gateway.services.limits import check_count, check_prompt_sizes, check_queued_bytes
from liftoff.http.context import Gateway
from liftoff.http.dispatch import Dispatcher, Ticket


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs twice as much, on every request
class Generation:
    """A generation request, parsed and validated, in the readers' terms.

    `params` are GenerationParams fields (validated; readers fill in the defaults). `count` is the number of answers
    asked for, which `max_user_batch_size` bounds; `prompts` name each prompt as the port's clients know it
    (`text[0]`, `prompt 1`, `messages`) with its size in UTF-8 bytes, which `max_prompt_string_bytes` bounds.
    `work` holds the other work item fields (`chats`, `add_generation_prompt`), if any. `copies`: how many times each
    prompt is queued (OpenAI's `n`); the queued text, `prompts`' sizes times `copies`, is bounded by
    `max_queued_bytes`, with the `attached` bytes queued beside it once (the images of an image-to-text request,
    in `work`).
    """

    group: str
    texts: list[str]
    params: dict[str, Any]
    batched: bool
    count: int
    prompts: list[tuple[str, int]]
    work: dict[str, Any] | None = None
    copies: int = 1
    attached: int = 0


def check_limits(settings: Settings, gen: Generation) -> None:
    """The server's limits on `gen` (422 naming the one exceeded); `submit` checks them, and a port with checks of
    its own to make after them may call this first."""
    prompts = gen.prompts
    if gen.count == 1 and len(prompts) == 1 and gen.copies == 1 and not gen.attached and \
            prompts[0][1] <= min(settings.max_prompt_string_bytes, settings.max_queued_bytes):
        return  # one prompt within both byte limits (most requests): the checks below would all pass
    check_count(gen.count, settings.max_user_batch_size)
    check_prompt_sizes(prompts, settings.max_prompt_string_bytes)
    check_queued_bytes(prompts, gen.copies, settings.max_queued_bytes, gen.attached)


def submit(gw: Gateway, gen: Generation, stream: bool = False) -> Awaitable[Ticket]:
    """Check `gen` against the limits (and its LoRA adapter against the group's) and queue it for its consumer
    group: await the result for its ticket. A limit exceeded is raised at once.

    A plain function handing over the dispatcher's coroutine: on the hot path no frame of its own, which every
    await of the request would resume through."""
    check_limits(gw.settings, gen)
    if gen.params.get("lora_id"):
        return _submit_adapted(gw, gen, stream)
    return _queue(gw, gen, stream)


async def _submit_adapted(gw: Gateway, gen: Generation, stream: bool) -> Ticket:
    await adapters.require(gw, gen.group, gen.params["lora_id"])
    return await _queue(gw, gen, stream)


def _queue(gw: Gateway, gen: Generation, stream: bool) -> Awaitable[Ticket]:
    if gen.work is None:
        return gw.dispatcher.submit(gen.group, gen.texts, gen.params, stream, gen.batched)
    return gw.dispatcher.submit(gen.group, gen.texts, gen.params, stream, gen.batched, **gen.work)


async def generate(gw: Gateway, gen: Generation) -> Reply:
    """The reader's `done` reply: `texts` (one per answer), `metadata` and `logprobs` when asked for."""
    return await gw.dispatcher.outcome(await submit(gw, gen))


async def stream(gw: Gateway, gen: Generation) -> ReplyStream:
    """The stream of `gen`'s replies, once its first reply came. An error before any token is raised here, so that
    a port answers it with a plain HTTP error rather than after a 200."""
    ticket = await submit(gw, gen, stream=True)
    first = await gw.dispatcher.first_reply(ticket)
    return ReplyStream(gw.dispatcher, ticket, first)


class ReplyStream:
    """A started stream's replies: `token` replies (`index`, `text`, `logprobs`), then its `done` reply (with
    `metadata` when asked). A reader's error, and a failure on the way (a timeout, a reader that went silent or
    died mid-stream), is raised as an `ApiError` and ends the stream.

    `close()` (call it in a `finally`) forgets the request, and withdraws it from its reader unless it ended, so
    that a client gone or a port done early frees the reader's batch slot.
    """

    def __init__(self, dispatcher: Dispatcher, ticket: Ticket, first: Reply) -> None:
        self._dispatcher = dispatcher
        self._ticket = ticket
        self._next: Reply | None = first
        self.ended = False
        self._closed = False

    def __aiter__(self) -> ReplyStream:
        return self

    async def __anext__(self) -> Reply:
        if self.ended:
            raise StopAsyncIteration
        reply, self._next = self._next, None
        if reply is None:
            reply = await self._dispatcher.next_reply(self._ticket)
        if reply.kind == "token":
            return reply
        self.ended = True
        if reply.kind != "done":
            raise error_for_status(reply.status or 500, reply.message or "reader error")
        return reply

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._dispatcher.release(self._ticket, self.ended)
