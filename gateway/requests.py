"""Checks shared by the inference routes: request limits, and turning a reader's error reply into an ApiError."""

from __future__ import annotations

from gateway.errors import Unprocessable, error_for_status
from gateway.protocol import GenerateRequest
from liftoff.wire import Reply


def check_limits(req: GenerateRequest, max_batch: int, max_prompt_bytes: int) -> None:
    if len(req.texts) > max_batch:
        raise Unprocessable(f"text has {len(req.texts)} items; the limit (max_user_batch_size) is {max_batch}")
    for index, text in enumerate(req.texts):
        size = len(text.encode())
        if size > max_prompt_bytes:
            where = f"text[{index}]" if req.batched else "text"
            raise Unprocessable(f"{where} is {size} bytes; the limit (max_prompt_string_bytes) is {max_prompt_bytes}")


def raise_if_error(reply: Reply) -> None:
    if reply.kind == "error":
        raise error_for_status(reply.status or 500, reply.message or "the reader reported an error")
