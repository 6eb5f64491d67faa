"""A streamed response (`stream: true`): the Responses API's typed server-sent events, numbered by
`sequence_number`.

`response.created` and `response.in_progress` go out once the reader's first reply came (an error before it is a
plain HTTP error). The answer's text opens a `message` item (`response.output_item.added`,
`response.content_part.added`) and goes out as `response.output_text.delta` events. With tools
(`liftoff.core.tool_calls.ToolStream`), text that could begin a call is held back, and each call is a
`function_call` item added as soon as its name is read, its arguments going out as
`response.function_call_arguments.delta` events as the model writes them; text that is only blanks waits for text
that is not (the whole answer has no message for blanks before a call). The end closes every item in output order
(`...done` events; a call the whole answer drops, its JSON never closed, ends `incomplete` with the arguments
written), stores the response (when `store`), then sends `response.completed`, or `response.incomplete` when
`max_output_tokens` ended it. A failure on the way is an `error` event followed by
`response.failed` (and the stored response is failed too); the stream never breaks. A client that closes the stream
withdraws the generation from its reader, and the stored response ends `cancelled`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from typing import Any

from liftoff.core.tool_calls import CallPiece, ToolCall, ToolStream
from liftoff.core.wire import Reply
from liftoff.gateway import sse
from liftoff.gateway.chat.errors import as_openai_error
from liftoff.gateway.chat.generation import Completion
from liftoff.gateway.openai.responses.objects import Draft, call_item, message_item, new_id, text_part
from liftoff.gateway.openai.responses.store import ResponseStore
from liftoff.gateway.services.generate import ReplyStream

log = logging.getLogger(__name__)

_closing: set[asyncio.Task[None]] = set()  # stores of streams their clients closed, running after the stream ended


class ResponseEvents:
    """The events of one streamed response, built as the reader's replies come."""

    def __init__(self, draft: Draft, completion: Completion, store: ResponseStore | None,
                 conversation: list[dict[str, Any]]) -> None:
        self.draft, self.completion, self.store, self.conversation = draft, completion, store, conversation
        self._numbers = itertools.count()
        self._message: dict[str, Any] | None = None  # the open message item
        self._index = 0  # its output index
        self._texts: list[str] = []  # the message's deltas (joined once, at the end: a long answer is many)
        self._blank = ""  # blanks held back while no message is open (with tools)
        self._calls: ToolStream | None = completion.tools.stream() if completion.tools is not None else None
        self._call_at: dict[int, int] = {}  # a call's index in the tool stream: its output index

    def _event(self, kind: str, **payload: Any) -> bytes:
        return sse.json_event({"type": kind, **payload, "sequence_number": next(self._numbers)}, kind)

    async def events(self, replies: ReplyStream) -> AsyncIterator[bytes]:
        out: list[bytes] = []
        ended = False
        try:
            body = self.draft.body()
            out += [self._event("response.created", response=body), self._event("response.in_progress", response=body)]
            async for reply in replies:
                if reply.kind == "token":
                    text = reply.text or ""
                    if self._calls is None:
                        self._add_text(text, out)
                    else:
                        self._add_text(self._calls.feed(text), out)
                        self._add_pieces(self._calls.pieces(), out)
                else:
                    await self._end(reply, out)
                    ended = True
                if out:
                    yield b"".join(out)
                    out.clear()
        except Exception as exc:  # noqa: BLE001 — after the first byte a failure can only be an event
            ended = True
            yield b"".join(out) + await self._failed(exc)
        finally:
            replies.close()
            if not ended and self.store is not None:
                self._store_closed()

    def _add_text(self, text: str, out: list[bytes], last: bool = False) -> None:
        """Text of the message (opened by its first text); `last`: the answer's last text, with no call after it."""
        if self._message is None and self._calls is not None:
            text, self._blank = self._blank + text, ""
            if not last and text.isspace():
                self._blank = text
                return
        if not text:
            return
        if self._message is None:
            self._open_message(out)
        assert self._message is not None
        self._texts.append(text)
        out.append(self._event("response.output_text.delta", item_id=self._message["id"], output_index=self._index,
                               content_index=0, delta=text, logprobs=[]))

    def _open_message(self, out: list[bytes]) -> None:
        self._message = {**message_item(new_id("msg"), "", "in_progress"), "content": []}
        self._index = len(self.draft.output)
        self.draft.output.append(self._message)
        out.append(self._event("response.output_item.added", output_index=self._index, item=self._message))
        out.append(self._event("response.content_part.added", item_id=self._message["id"], output_index=self._index,
                               content_index=0, part=text_part("")))

    def _add_pieces(self, pieces: list[CallPiece], out: list[bytes]) -> None:
        """A call's first piece adds its `function_call` item; the others are its arguments' deltas."""
        for piece in pieces:
            if piece.id is not None:
                index = self._call_at[piece.index] = len(self.draft.output)
                item = call_item(new_id("fc"), ToolCall(piece.name or "", "", piece.id), "in_progress")
                self.draft.output.append(item)
                out.append(self._event("response.output_item.added", output_index=index, item=item))
            elif piece.arguments:
                index = self._call_at[piece.index]
                item = self.draft.output[index]
                item["arguments"] += piece.arguments
                out.append(self._event("response.function_call_arguments.delta", item_id=item["id"],
                                       output_index=index, delta=piece.arguments))

    async def _end(self, reply: Reply, out: list[bytes]) -> None:
        """The reader's `done`: the held-back text and the rest of the calls, every item closed, the response
        stored, the terminal event."""
        calls: list[ToolCall] = []
        if self._calls is not None:
            content, calls = self._calls.finish()
            self._add_text(content, out, last=not calls)
            self._add_pieces(self._calls.rest(), out)
        metadata = reply.metadata or []
        self.draft.finish(metadata[0].get("finish_reason") if metadata else None, self.completion.usage(metadata))
        if not self.draft.output:
            self._open_message(out)
        streamed = {index: stream_index for stream_index, index in self._call_at.items()}
        for index, item in enumerate(self.draft.output):
            if item is self._message:
                self._close_message(out)
                continue
            whole = streamed[index] < len(calls)  # a started call the whole answer drops ends with what was written
            arguments = calls[streamed[index]].arguments if whole else item["arguments"]
            out.append(self._event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                                   arguments=arguments))
            item.update(arguments=arguments, status=self.draft.item_status if whole else "incomplete")
            out.append(self._event("response.output_item.done", output_index=index, item=item))
        if self.store is not None:
            await self.store.save(self.draft.body(), self.conversation, replace=True)
        kind = "response.incomplete" if self.draft.status == "incomplete" else "response.completed"
        out.append(self._event(kind, response=self.draft.body()))

    def _close_message(self, out: list[bytes]) -> None:
        assert self._message is not None
        text = "".join(self._texts)
        item_id, part = self._message["id"], text_part(text)
        out.append(self._event("response.output_text.done", item_id=item_id, output_index=self._index,
                               content_index=0, text=text, logprobs=[]))
        out.append(self._event("response.content_part.done", item_id=item_id, output_index=self._index,
                               content_index=0, part=part))
        self._message.update(content=[part], status=self.draft.item_status)
        out.append(self._event("response.output_item.done", output_index=self._index, item=self._message))

    async def _failed(self, exc: BaseException) -> bytes:
        """An `error` event and `response.failed`; the stored response failed too (when the store can be had)."""
        err = as_openai_error(exc, self.draft.req.model)
        self.draft.fail(err)
        if self.store is not None:
            try:
                await self.store.save(self.draft.body(), self.conversation, replace=True)
            except Exception as store_exc:  # noqa: BLE001 — the client hears of the failure all the same
                log.warning("response %s failed and could not be stored as failed: %s", self.draft.id, store_exc)
        assert self.draft.error is not None
        error = self._event("error", code=err.code or self.draft.error["code"], message=err.message, param=err.param)
        return error + self._event("response.failed", response=self.draft.body())

    def _store_closed(self) -> None:
        """The client closed the stream before its end: the stored response is `cancelled`, stored after the stream
        (its task may be cancelled itself)."""
        self.draft.status = "cancelled"
        assert self.store is not None
        task = asyncio.get_running_loop().create_task(self._save_closed(self.store, self.draft.body()))
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    async def _save_closed(self, store: ResponseStore, body: dict[str, Any]) -> None:
        try:
            await store.save(body, self.conversation, replace=True)
        except Exception as exc:  # noqa: BLE001 — its in-progress record expires on its own
            log.warning("response %s: its stream was closed and it could not be stored as cancelled: %s",
                        body["id"], exc)
