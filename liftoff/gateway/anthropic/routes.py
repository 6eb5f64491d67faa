"""The Anthropic Messages API on the OpenAI port: `POST /v1/messages` (a message, whole or streamed) and
`POST /v1/messages/count_tokens`, `model` naming the consumer group, errors in Anthropic's envelope
(`liftoff.gateway.anthropic.errors`).

A request is validated in Anthropic's terms (`liftoff.gateway.anthropic.protocol`), becomes the OpenAI port's chat
request,
and runs through the chat completions' generation path (`liftoff.gateway.chat.generation.Completion` builds the
generation, the tool plan of `liftoff.gateway.chat.tools` renders and parses tool calls); the answer is shaped here.

- Stop sequences are cut at the gateway, as for chat completions: the text ends before the first, `stop_reason` is
  `stop_sequence` with `stop_sequence` set. The reader generates on to its own end, so usage counts every token.
- `stop_reason`: `tool_use` when the text holds calls, `max_tokens` at `max_tokens`, `model_context_window_exceeded`
  when the reader's sequence length ran out first, `end_turn` otherwise.
- Usage: `input_tokens` are the prompt tokens the reader did not find in its prefix cache, `cache_read_input_tokens`
  those it did; their sum is what `count_tokens` counts. Nothing is billed for writing the cache
  (`cache_creation_input_tokens` 0).
- A stream's `message_start` carries no usage yet (the reader reports it at the end): `message_delta` carries the
  whole usage, input tokens too, which the client takes as the totals. A failure after the first event is an
  `error` event with Anthropic's body.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from liftoff.core.tool_calls import ToolCall, argument_pieces
from liftoff.gateway import sse
from liftoff.gateway.anthropic.errors import ANTHROPIC_ERROR, error_event
from liftoff.gateway.anthropic.protocol import CountTokensRequest, MessagesRequest, parse_anthropic
from liftoff.gateway.chat.generation import Completion, StopCut, cut_at_stop
from liftoff.gateway.chat.protocol import ChatCompletionRequest
from liftoff.gateway.chat.readers import ReaderApi
from liftoff.gateway.chat.tools import ToolPlan, tool_plan
from liftoff.gateway.services import generate
from liftoff.gateway.services.generate import ReplyStream
from liftoff.http.context import Gateway
from liftoff.http.openapi import Doc, documented
from liftoff.http.parsing import read_json_object
from liftoff.http.responses import json_response

MESSAGE = {
    "type": "object", "required": ["id", "type", "role", "model", "content", "stop_reason", "usage"],
    "properties": {"id": {"type": "string"}, "type": {"const": "message"}, "role": {"const": "assistant"},
                   "model": {"type": "string"}, "content": {"type": "array"}, "stop_reason": {"type": "string"},
                   "stop_sequence": {"type": ["string", "null"]}, "usage": {"type": "object"}},
}
TOKENS_COUNT = {"type": "object", "required": ["input_tokens"], "properties": {"input_tokens": {"type": "integer"}}}


def anthropic_routes(gw: Gateway) -> list[Route]:
    api = MessagesApi(gw)
    return [
        documented(Route("/v1/messages", api.create, methods=["POST"]),
                   Doc(summary="Anthropic Messages API: the assistant's next message", body=MessagesRequest,
                       media=("application/json", "text/event-stream"), ok_schema=MESSAGE,
                       error_schema=ANTHROPIC_ERROR)),
        documented(Route("/v1/messages/count_tokens", api.count_tokens, methods=["POST"]),
                   Doc(summary="Anthropic Messages API: the prompt tokens a message would take",
                       body=CountTokensRequest, ok_schema=TOKENS_COUNT, error_schema=ANTHROPIC_ERROR)),
    ]


class MessagesApi(ReaderApi):
    async def create(self, request: Request) -> Response:
        req = parse_anthropic(MessagesRequest, await read_json_object(request))
        chat = req.as_chat()
        messages, plan = await self._conversation(chat)
        completion = Completion(self.gw, "chat", chat, [], chat=messages, tools=plan,
                                sampling=await self.readers.sampling_defaults(chat.model))
        if req.stream:
            replies = await generate.stream(self.gw, completion.generation())
            return sse.response(MessageStream(completion, req.max_tokens).events(replies))
        reply = await generate.generate(self.gw, completion.generation())
        raw = (reply.texts or [""])[0]
        meta = (reply.metadata or [{}])[0]
        text, stopped = cut_at_stop(raw, chat.stops)
        stop = matched_stop(raw, len(text), chat.stops) if stopped else None
        content, calls = plan.parse(text) if plan is not None else (text, [])
        blocks = ([{"type": "text", "text": content}] if content else []) + [tool_use(c) for c in calls]
        reason = stop_reason(meta, stop, bool(calls), req.max_tokens)
        return json_response(message(completion, blocks, reason, stop if reason == "stop_sequence" else None,
                                     usage(completion, reply.metadata)))

    async def count_tokens(self, request: Request) -> Response:
        """The prompt as the generation would see it: rendered by the group's chat template (with the tools it would
        be given), counted by its tokenizer as a chat's prompt is."""
        req = parse_anthropic(CountTokensRequest, await read_json_object(request))
        messages, plan = await self._conversation(req.chat_request())
        args: dict[str, Any] = {"inputs": [messages], "add_generation_prompt": True}
        if plan is not None:
            args["tools"] = plan.tools
        rendered = (await self.readers.call(req.model, "chat_template", args))["messages"][0]
        counted = await self.readers.call(req.model, "tokenize", {"text": rendered, "templated": True})
        return json_response({"input_tokens": int(counted["tokens_count"])})

    async def _conversation(self, chat: ChatCompletionRequest) -> tuple[list[dict[str, Any]], ToolPlan | None]:
        """The chat template's messages, and the tool plan (as `/v1/chat/completions` makes them)."""
        messages = [m.template_view(i) for i, m in enumerate(chat.messages)]
        plan = None
        if chat.tools and chat.tool_choice != "none":
            plan = tool_plan(chat.tools, chat.tool_choice, chat.parallel_tool_calls,
                             await self.readers.tool_call_parser(chat.model), None)
        return messages, plan


def matched_stop(text: str, at: int, stops: list[str]) -> str:
    """The stop sequence that begins at `at` in `text` (the first of `stops` that does, as the cut found it)."""
    return next(s for s in stops if text.startswith(s, at))


def stop_reason(meta: dict[str, Any], stop: str | None, called: bool, max_tokens: int) -> str:
    if called:
        return "tool_use"
    if stop is not None:
        return "stop_sequence"
    if meta.get("finish_reason") == "length":
        generated = int(meta.get("generated_tokens", max_tokens))
        return "max_tokens" if generated >= max_tokens else "model_context_window_exceeded"
    return "end_turn"


def tool_use(call: ToolCall) -> dict[str, Any]:
    return {"type": "tool_use", "id": tool_use_id(call), "name": call.name, "input": json.loads(call.arguments)}


def tool_use_id(call: ToolCall) -> str:
    return "toolu_" + call.id.removeprefix("call_")


def usage(completion: Completion, metadata: list[dict[str, Any]] | None) -> dict[str, Any]:
    counted = completion.usage(metadata)
    cached = int(counted["prompt_tokens_details"]["cached_tokens"])
    return {"input_tokens": counted["prompt_tokens"] - cached, "output_tokens": counted["completion_tokens"],
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": cached}


def message(completion: Completion, content: list[dict[str, Any]], reason: str | None, stop: str | None,
            counted: dict[str, Any]) -> dict[str, Any]:
    return {"id": "msg_" + completion.id, "type": "message", "role": "assistant", "model": completion.req.model,
            "content": content, "stop_reason": reason, "stop_sequence": stop, "usage": counted}


def event(name: str, **data: Any) -> bytes:
    return sse.json_event({"type": name, **data}, name)


class MessageStream:
    """One streamed message's events: `message_start`, a text block as its text comes (held back where it could
    still become a stop sequence or a tool call), the tool_use blocks once the text is whole (their input in
    `input_json_delta` pieces), `message_delta` with the stop reason and usage, `message_stop`."""

    def __init__(self, completion: Completion, max_tokens: int) -> None:
        self.completion = completion
        self.max_tokens = max_tokens
        self.cut = StopCut(completion.req.stops)
        self.plan = completion.tools
        self.calls = self.plan.stream() if self.plan is not None else None
        self.blocks = 0  # blocks opened so far
        self.text_open = False

    async def events(self, replies: ReplyStream) -> AsyncIterator[bytes]:
        """One write per reply from the reader (see `Completion._events`); the reader's error, or a failure on the
        way, is an `error` event."""
        out = [event("message_start", message=message(self.completion, [], None, None, usage(self.completion, [])))]
        try:
            metadata: list[dict[str, Any]] = []
            async for reply in replies:
                if reply.kind == "token" and reply.index == 0:
                    out += self._text(self._feed(reply.text or ""))
                elif reply.kind == "done":
                    metadata = reply.metadata or []
                if out:
                    yield b"".join(out)
                    out.clear()
            out += self._finish(metadata)
            yield b"".join(out)
        except Exception as exc:  # noqa: BLE001 — after the first byte a failure can only be an event
            yield b"".join(out) + error_event(exc)
        finally:
            replies.close()

    def _feed(self, piece: str) -> str:
        text = self.cut.feed(piece)
        return self.calls.feed(text) if self.calls is not None else text

    def _text(self, piece: str) -> list[bytes]:
        if not piece:
            return []
        out = []
        if not self.text_open:
            self.text_open = True
            out.append(event("content_block_start", index=self.blocks, content_block={"type": "text", "text": ""}))
            self.blocks += 1
        out.append(event("content_block_delta", index=self.blocks - 1, delta={"type": "text_delta", "text": piece}))
        return out

    def _finish(self, metadata: list[dict[str, Any]]) -> list[bytes]:
        out = self._text(self._feed(self.cut.flush()))
        calls: list[ToolCall] = []
        if self.calls is not None and self.plan is not None:
            held, calls = self.calls.finish()
            calls = calls if self.plan.parallel else calls[:1]
            out += self._text(held)
        if self.text_open:
            out.append(event("content_block_stop", index=self.blocks - 1))
        for call in calls:
            index, self.blocks = self.blocks, self.blocks + 1
            block = {"type": "tool_use", "id": tool_use_id(call), "name": call.name, "input": {}}
            out.append(event("content_block_start", index=index, content_block=block))
            out += [event("content_block_delta", index=index, delta={"type": "input_json_delta", "partial_json": p})
                    for p in argument_pieces(call.arguments)]
            out.append(event("content_block_stop", index=index))
        stop = matched_stop(self.cut.text, self.cut.sent, self.cut.stops) if self.cut.hit else None
        reason = stop_reason(metadata[0] if metadata else {}, stop, bool(calls), self.max_tokens)
        out.append(event("message_delta", delta={"stop_reason": reason,
                                                 "stop_sequence": stop if reason == "stop_sequence" else None},
                         usage=usage(self.completion, metadata)))
        out.append(event("message_stop"))
        return out
