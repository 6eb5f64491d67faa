"""The Responses API's objects: a Response (its status, output items, usage and the settings it echoes), its output
items (`message` with `output_text` content, `function_call`), built the same way for whole answers and streams."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from liftoff.core.tool_calls import ToolCall
from liftoff.gateway.chat.errors import OpenAIError
from liftoff.gateway.openai.responses.protocol import ResponsesRequest

Status = Literal["in_progress", "completed", "incomplete", "failed", "cancelled"]
# A failure's `error.code`, in the set OpenAI's Response objects use.
_ERROR_CODES = {429: "rate_limit_exceeded", 400: "invalid_prompt", 413: "invalid_prompt", 422: "invalid_prompt"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(24)}"


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": [text_part(text)]}


def call_item(item_id: str, call: ToolCall, status: str, arguments: str | None = None) -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call.id, "name": call.name,
            "arguments": call.arguments if arguments is None else arguments}


def usage(chat: dict[str, Any]) -> dict[str, Any]:
    """The chat completions' usage in the Responses API's names (no reasoning: no reasoning tokens)."""
    prompt, completion = int(chat["prompt_tokens"]), int(chat["completion_tokens"])
    return {"input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": int(chat["prompt_tokens_details"]["cached_tokens"])},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt + completion}


def error_body(err: OpenAIError) -> dict[str, Any]:
    """A failed response's `error`."""
    return {"code": _ERROR_CODES.get(err.status, "server_error"), "message": err.message}


@dataclass
class Draft:
    """One response as it is built: the request it answers, its output items so far, its status."""

    req: ResponsesRequest
    id: str = field(default_factory=lambda: new_id("resp"))
    created_at: int = field(default_factory=lambda: int(time.time()))
    status: Status = "in_progress"
    output: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    completed_at: int | None = None

    def finish(self, reason: str | None, chat_usage: dict[str, Any] | None) -> None:
        """Completed, or incomplete when the token budget (`max_output_tokens`) ended it."""
        self.status = "incomplete" if reason == "length" else "completed"
        self.usage = usage(chat_usage) if chat_usage is not None else None
        if self.status == "completed":
            self.completed_at = int(time.time())

    def fail(self, err: OpenAIError) -> None:
        self.status, self.error = "failed", error_body(err)

    @property
    def item_status(self) -> str:
        return "incomplete" if self.status == "incomplete" else "completed"

    def add_answer(self, message: dict[str, Any]) -> None:
        """A whole answer's chat message as output items: its text (when it has some, or no calls), its calls."""
        calls = message.get("tool_calls") or []
        if message.get("content") is not None or not calls:
            self.output.append(message_item(new_id("msg"), message.get("content") or "", self.item_status))
        for call in calls:
            function = call["function"]
            self.output.append(call_item(new_id("fc"), ToolCall(function["name"], function["arguments"], call["id"]),
                                         self.item_status))

    def body(self) -> dict[str, Any]:
        """The Response object, echoing the settings it was made with."""
        req = self.req
        sampling = req.sampling
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": self.status,
            "completed_at": self.completed_at,
            "error": self.error,
            "incomplete_details": {"reason": "max_output_tokens"} if self.status == "incomplete" else None,
            "instructions": req.instructions,
            "max_output_tokens": req.max_output_tokens,
            "model": req.model,
            "output": self.output,
            "parallel_tool_calls": req.parallel_tool_calls is not False,
            "previous_response_id": req.previous_response_id,
            "reasoning": None,
            "store": req.store is not False,
            "temperature": 1.0 if sampling.temperature is None else sampling.temperature,
            "text": {"format": req.format.echo(), "verbosity": "medium"},
            "tool_choice": _echo_choice(req),
            "tools": [t.model_dump(exclude_none=True) for t in req.tools or []],
            "top_p": 1.0 if sampling.top_p is None else sampling.top_p,
            "truncation": "disabled",
            "background": False,
            "usage": self.usage,
            "user": req.user,
            "metadata": req.metadata or {},
        }


def _echo_choice(req: ResponsesRequest) -> Any:
    choice = req.tool_choice
    if choice is None:
        return "auto"
    return choice if isinstance(choice, str) else choice.model_dump()
