"""The server's limits on one request, checked by every service before anything is dispatched (422 when over)."""

from __future__ import annotations

from collections.abc import Iterable

from liftoff.core.http.errors import Unprocessable


def check_count(count: int, limit: int) -> None:
    """At most `limit` (max_user_batch_size) items in one request: texts, choices, instances or rows."""
    if count > limit:
        raise Unprocessable(f"text has {count} items; the limit (max_user_batch_size) is {limit}")


def check_prompt_sizes(prompts: Iterable[tuple[str, int]], limit: int) -> None:
    """Each prompt, named as the port's clients know it (`text[1]`, `prompt 0`, `messages`), with its size in UTF-8
    bytes, at most `limit` (max_prompt_string_bytes)."""
    for name, size in prompts:
        if size > limit:
            raise Unprocessable(f"{name} is {size} bytes; the limit (max_prompt_string_bytes) is {limit}")
