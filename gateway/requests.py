"""Request limits shared by the inference routes."""

from __future__ import annotations

from gateway.errors import Unprocessable
from gateway.protocol import GenerateRequest


def check_count(count: int, max_batch: int) -> None:
    if count > max_batch:
        raise Unprocessable(f"text has {count} items; the limit (max_user_batch_size) is {max_batch}")


def check_limits(req: GenerateRequest, max_batch: int, max_prompt_bytes: int) -> None:
    check_count(len(req.texts), max_batch)
    for index, text in enumerate(req.texts):
        size = len(text.encode())
        if size > max_prompt_bytes:
            where = f"text[{index}]" if req.batched else "text"
            raise Unprocessable(f"{where} is {size} bytes; the limit (max_prompt_string_bytes) is {max_prompt_bytes}")
