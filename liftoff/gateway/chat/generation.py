"""Chat and text completions: one user batch per request (each prompt repeated `n` times), answered whole or streamed
in OpenAI's chunk format.

Stop strings are applied here, at the gateway: an answer is cut before the first stop string and finishes with
`stop`; a stream holds back text that could still become a stop string and forwards nothing of a choice after its
stop string. Usage comes from the readers' metadata (always requested): prompt tokens once per prompt, completion
tokens as generated (past a stop string too: the model did generate them). Log probabilities, when asked for, go
out with the text of their tokens and end where a stop string cuts it. A stream never raises after its first
byte: a failure becomes a `data: {"error": ...}` event, and every stream ends with `data: [DONE]`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from starlette.responses import Response

from liftoff.core.adapters import split_model
from liftoff.core.tool_calls import ToolStream
from liftoff.core.wire import GenerationParams, Reply
from liftoff.gateway import sse
from liftoff.gateway.chat.errors import as_openai_error, invalid, openai_error_body
from liftoff.gateway.chat.protocol import SamplingRequest
from liftoff.gateway.chat.tools import ToolPlan
from liftoff.gateway.services import generate
from liftoff.gateway.services.generate import Generation, ReplyStream
from liftoff.http.context import Gateway
from liftoff.http.responses import json_response

Kind = Literal["chat", "text"]
LOGPROB_BUDGET = 1_000_000  # choices x tokens x (alternatives + 1) in one answer: about 60 MB of entries at most
DONE = b"data: [DONE]\n\n"


class StopCut:
    """Cuts one choice's text before the first of `stops`, feeding piece by piece."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self.longest = max((len(s) for s in stops), default=0)
        self.text = ""
        self.sent = 0
        self.hit = False

    def feed(self, piece: str) -> str:
        """What may be forwarded now: never a stop string, nor a tail that could still begin one."""
        if self.hit:
            return ""
        self.text += piece
        if not self.stops:
            out, self.sent = self.text[self.sent:], len(self.text)
            return out
        start = max(0, self.sent - self.longest + 1)
        found = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
        if found:
            cut = min(found)
            self.hit = True
            out, self.sent = self.text[self.sent:cut], cut
            return out
        hold = max((k for s in self.stops for k in range(1, len(s)) if self.text.endswith(s[:k])), default=0)
        safe = max(self.sent, len(self.text) - hold)
        out, self.sent = self.text[self.sent:safe], safe
        return out

    def flush(self) -> str:
        if self.hit:
            return ""
        out, self.sent = self.text[self.sent:], len(self.text)
        return out


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(found)], True) if found else (text, False)


class LogprobQueue:
    """One choice's log-probability entries, each placed at the offset in the choice's text where its token's text
    begins (the reader says where), so that they go out with the text they belong to and stop where a stop string
    cuts it."""

    def __init__(self) -> None:
        self.entries: list[tuple[int, dict[str, Any]]] = []  # (offset, entry)
        self.end = 0
        self.taken = 0

    def add(self, entries: list[dict[str, Any]] | None) -> None:
        for entry in entries or []:
            offset = entry.pop("offset", self.end)  # the reader's offset in the real text; not part of the answer
            self.entries.append((offset, entry))
            self.end = offset + len(entry.get("token", ""))

    def take(self, upto: int | None = None) -> list[tuple[int, dict[str, Any]]]:
        """The entries not yet taken that start before text offset `upto` (all of them when None)."""
        stop = self.taken
        while stop < len(self.entries) and (upto is None or self.entries[stop][0] < upto):
            stop += 1
        out, self.taken = self.entries[self.taken:stop], stop
        return out


@dataclass
class Completion:
    """One request's answer as it is built: the prompts, `n` choices per prompt, and the reader's metadata."""

    gw: Gateway
    kind: Kind
    req: SamplingRequest
    prompts: list[str]  # text completions; empty for a chat
    echo: bool = False
    chat: list[dict[str, Any]] | None = None  # a chat's messages, rendered by the reader that takes the request
    # a chat's tools (liftoff.gateway.chat.tools): the template's, the parser, the grammar
    tools: ToolPlan | None = None
    sampling: dict[str, float] | None = None  # the model's sampling defaults, for what the request leaves unset
    id: str = field(default_factory=lambda: secrets.token_hex(12))
    created: int = field(default_factory=lambda: int(time.time()))
    _frame: tuple[bytes, bytes] | None = field(default=None, init=False, repr=False)

    @property
    def n(self) -> int:
        return self.req.choices_per_prompt

    @property
    def count(self) -> int:
        """Choices in all: `n` per prompt (per conversation for a chat)."""
        return self.n * (1 if self.chat is not None else len(self.prompts))

    def generation(self) -> Generation:
        """The request for the generate service (the log-probability budget checked here, the server's limits by the
        service when it submits it): each prompt, or the chat, once, with `n` answers to each."""
        if self.chat is not None:
            prompts = [("messages", sum(len(str(m.get("content") or "").encode()) for m in self.chat))]
            chat = self.chat if self.tools is None else self.tools.chat(self.chat)
            work: dict[str, Any] = {"chats": [chat], "add_generation_prompt": self.req.add_generation_prompt}
            if self.tools is not None:
                work["tools"] = self.tools.tools
        else:
            prompts, work = [(f"prompt {i}", len(p.encode())) for i, p in enumerate(self.prompts)], {}
        if self.n > 1:
            work["n"] = self.n  # each prompt travels once; the reader makes the copies and prefills them once
        params = {**self.req.params(self.sampling), **(self.tools.params if self.tools is not None else {})}
        group, adapter = split_model(self.req.model)  # `group:adapter` runs the group's LoRA adapter
        if adapter is not None:
            params["lora_id"] = adapter
        self._check_logprob_budget()
        return Generation(group=group, texts=self.prompts, params=params, batched=True, count=self.count,
                          prompts=prompts, work=work or None, copies=self.n)

    def usage(self, metadata: list[dict[str, Any]] | None) -> dict[str, Any]:
        meta = metadata or []
        prompt = sum(int(m.get("prompt_tokens", 0)) for m in meta[:: self.n])
        cached = sum(int(m.get("cached_prompt_tokens", 0)) for m in meta[:: self.n])
        completion = sum(int(m.get("generated_tokens", 0)) for m in meta)
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": cached}}

    def prefix(self, index: int) -> str:
        return self.prompts[index // self.n] if self.echo else ""

    # --- whole answers --------------------------------------------------------------------------------------------
    async def answer(self) -> Response:
        choices, usage = await self.choices()
        return json_response(self._envelope(choices, usage=usage))

    async def choices(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The whole answer's choices and usage, for a port that shapes them its own way (the Responses API)."""
        reply = await generate.generate(self.gw, self.generation())
        texts, metadata = reply.texts or [], reply.metadata or []
        choices = []
        for index, raw in enumerate(texts):
            text, stopped = cut_at_stop(raw, self.req.stops)
            reason = "stop" if stopped else (metadata[index].get("finish_reason") if index < len(metadata) else None)
            logprobs = None
            if self.wants_logprobs:
                queue = LogprobQueue()
                queue.add(reply.logprobs[index] if reply.logprobs and index < len(reply.logprobs) else [])
                logprobs = self._logprobs(queue.take(len(text) if stopped else None))
            choices.append(self._choice(index, self.prefix(index) + text, reason or "stop", logprobs))
        return choices, self.usage(metadata)

    def _check_logprob_budget(self) -> None:
        """Each entry with k alternatives is ~60 bytes per token considered: bound what one answer may carry."""
        k = self.req.logprob_count()
        if k is None:
            return
        tokens = self.req.max_new_tokens or GenerationParams.model_fields["max_new_tokens"].default
        considered = self.count * tokens * (k + 1)
        if considered > LOGPROB_BUDGET:
            param = "top_logprobs" if self.kind == "chat" else "logprobs"
            raise invalid(f"{param}: {self.count} choices x {tokens} tokens x {k + 1} log probabilities each is "
                          f"{considered}, more than one answer may carry ({LOGPROB_BUDGET}); ask for fewer choices, "
                          f"tokens or alternatives", param)

    @property
    def wants_logprobs(self) -> bool:
        return self.req.logprob_count() is not None

    def _logprobs(self, placed: list[tuple[int, dict[str, Any]]]) -> dict[str, Any] | None:
        """A choice's `logprobs`: chat's {"content": [entries]}, or the completions API's legacy columns."""
        if not self.wants_logprobs:
            return None
        if self.kind == "chat":
            return {"content": [entry for _, entry in placed], "refusal": None}
        return {
            "tokens": [entry["token"] for _, entry in placed],
            "token_logprobs": [entry["logprob"] for _, entry in placed],
            "top_logprobs": [{top["token"]: top["logprob"] for top in entry.get("top_logprobs", [])}
                             for _, entry in placed],
            "text_offset": [offset for offset, _ in placed],
        }

    def _choice(self, index: int, text: str, reason: str | None, logprobs: dict[str, Any] | None) -> dict[str, Any]:
        if self.kind == "chat":
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if self.tools is not None:
                message, called = self.tools.message(text)
                reason = "tool_calls" if called else reason
            return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": reason}
        return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": reason}

    def _envelope(self, choices: list[dict[str, Any]], chunk: bool = False, **extra: Any) -> dict[str, Any]:
        # OpenAI names text-completion chunks like the whole answer.
        obj = ("chat.completion.chunk" if chunk else "chat.completion") if self.kind == "chat" else "text_completion"
        prefix = "chatcmpl-" if self.kind == "chat" else "cmpl-"
        body = {"id": prefix + self.id, "object": obj, "created": self.created, "model": self.req.model,
                "choices": choices, "system_fingerprint": None}
        body.update(extra)
        return body

    # --- streams --------------------------------------------------------------------------------------------------
    async def stream(self) -> Response:
        return sse.response(self._events(await generate.stream(self.gw, self.generation())))

    def _chunk(self, index: int, text: str | None, reason: str | None = None, role: bool = False,
               logprobs: list[tuple[int, dict[str, Any]]] | None = None, delta: dict[str, Any] | None = None) -> bytes:
        lp = self._logprobs(logprobs) if logprobs else None
        if self.kind == "chat":
            delta = delta or ({"role": "assistant", "content": ""} if role else {})
            if text is not None:
                delta["content"] = text
            choice = {"index": index, "delta": delta, "logprobs": lp, "finish_reason": reason}
        else:
            choice = {"index": index, "text": text or "", "logprobs": lp, "finish_reason": reason}
        head, tail = self._chunk_frame()
        return head + orjson.dumps(choice) + tail

    def _chunk_frame(self) -> tuple[bytes, bytes]:
        """A one-choice chunk's event as the bytes around its choice: the envelope (id, model, ...) is the same for
        every chunk of the stream, so it is encoded once, not once per token."""
        if self._frame is None:
            extra = {"usage": None} if self.req.include_usage else {}
            marker = "\x00choice\x00"
            whole = sse.json_event(self._envelope([marker], chunk=True, **extra))
            head, tail = whole.split(orjson.dumps(marker), 1)
            self._frame = (head, tail)
        return self._frame

    async def _events(self, replies: ReplyStream) -> AsyncIterator[bytes]:
        """The stream's bytes, one write per reply from the reader: the role chunks go out with the first token (and
        a choice cut by a stop string finishes in the same write), so that the client's first text costs one send
        (each send is a trip through the worker's event loop, behind every other stream's tokens). A reader's
        error, or a failure on the way, is an error event."""
        out: list[bytes] = []
        try:
            for index in range(self.count):
                prefix = self.prefix(index)
                if self.kind == "chat" or prefix:
                    out.append(self._chunk(index, prefix or None, role=self.kind == "chat"))
            state = _StreamState(self.count, self.req.stops, self.tools)
            async for reply in replies:
                self._consume(reply, state, out)
                if out:
                    yield b"".join(out)
                    out.clear()
                if not state.open_ and not self.req.include_usage:
                    break  # every choice has hit a stop string: the rest is withdrawn from the reader below
        except Exception as exc:  # noqa: BLE001 — after the first byte a failure can only be an event
            yield b"".join(out) + error_event(exc)
        finally:
            replies.close()
        yield DONE

    def _consume(self, reply: Reply, state: _StreamState, out: list[bytes]) -> None:
        """Append the chunks one reply (a token, or the final `done`) makes to `out`."""
        if reply.kind == "token":
            if reply.index not in state.open_:
                return
            cut, queue = state.cuts[reply.index], state.logprobs[reply.index]
            queue.add(reply.logprobs)
            text = cut.feed(reply.text or "")
            calls = state.calls[reply.index]
            if calls is not None:
                text = calls.feed(text)
            placed = queue.take(cut.sent) if self.wants_logprobs else []
            if text or placed:
                out.append(self._chunk(reply.index, text, logprobs=placed))
            if calls is not None:
                out.extend(self._chunk(reply.index, None, delta={"tool_calls": [piece.openai()]})
                           for piece in calls.pieces())
            if cut.hit:
                state.open_.discard(reply.index)
                out.append(self._chunk(reply.index, None, self._finish_calls(state, reply.index, "stop", out)))
            return
        metadata = reply.metadata or []
        for index in sorted(state.open_):
            tail = state.cuts[index].flush()
            held = state.calls[index]
            if held is not None:
                tail = held.feed(tail)
            placed = state.logprobs[index].take() if self.wants_logprobs else []
            if tail or placed:
                out.append(self._chunk(index, tail, logprobs=placed))
            meta = metadata[index] if index < len(metadata) else {}
            reason = self._finish_calls(state, index, meta.get("finish_reason") or "stop", out)
            out.append(self._chunk(index, None, reason))
        if self.req.include_usage:
            out.append(sse.json_event(self._envelope([], chunk=True, usage=self.usage(metadata))))


    def _finish_calls(self, state: _StreamState, index: int, reason: str, out: list[bytes]) -> str:
        """A choice's held-back text once it is whole: content that was no call, or its calls' deltas; the finish
        reason (`tool_calls` when it made calls)."""
        held = state.calls[index]
        if held is None or self.tools is None:
            return reason
        content, calls = held.finish()
        if content:
            out.append(self._chunk(index, content))
        out.extend(self._chunk(index, None, delta={"tool_calls": [piece.openai()]}) for piece in held.rest())
        if held.dropped and reason == "length":
            return "length"  # the stream holds the start of a call the token limit cut (the whole answer drops it)
        return "tool_calls" if calls else reason


@dataclass
class _StreamState:
    """Per choice of a stream: its stop-string cut, and whether its finish chunk is still to be sent."""

    count: int
    stops: list[str]
    tools: ToolPlan | None = None
    cuts: list[StopCut] = field(init=False)
    calls: list[ToolStream | None] = field(init=False)
    logprobs: list[LogprobQueue] = field(init=False)
    open_: set[int] = field(init=False)

    def __post_init__(self) -> None:
        self.cuts = [StopCut(self.stops) for _ in range(self.count)]
        self.calls = [self.tools.stream() if self.tools is not None else None for _ in range(self.count)]
        self.logprobs = [LogprobQueue() for _ in range(self.count)]
        self.open_ = set(range(self.count))


def error_event(exc: BaseException) -> bytes:
    err = as_openai_error(exc)
    return sse.json_event(openai_error_body(err.status, err.message, err.param, err.code))
