"""The server's limits on one request, checked by every service before anything is dispatched (422 when over; 413
for more bytes to queue than `max_queued_bytes`)."""

from __future__ import annotations

from collections.abc import Iterable

from liftoff.core.errors import PayloadTooLarge, Unprocessable


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


def check_fanout(what: str, count: int, limit: int) -> None:
    """`count` answers `what` asks for (`n (4) x 300 prompts`), counted before any work fans out (a detokenize per
    token-id prompt, a copy per choice), at most `limit` (max_user_batch_size)."""
    if count > limit:
        raise Unprocessable(f"{what} is {count} answers; the limit (max_user_batch_size) is {limit}")


def check_queued_bytes(prompts: Iterable[tuple[str, int]], copies: int, limit: int, attached: int = 0) -> None:
    """The prompt text one request would queue, each prompt `copies` times (OpenAI's `n`), with the `attached`
    bytes (its images, base64) once, at most `limit` bytes (max_queued_bytes): a body within the body limit must not
    become a far larger stream entry."""
    total = 0
    for _, size in prompts:  # a loop, not sum() of a generator: this runs on every request
        total += size
    total = total * copies + attached
    if total > limit:
        times = f" ({copies} copies of each prompt, n)" if copies > 1 else ""
        images = f" and images ({attached} bytes)" if attached else ""
        raise PayloadTooLarge(f"the request would queue {total} bytes of prompt text{times}{images}; the limit "
                              f"(max_queued_bytes) is {limit}")
