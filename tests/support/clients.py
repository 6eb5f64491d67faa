"""What the tests read from the official clients' answers: a streamed chat's texts and finish reasons, its log
probabilities, and the echo reader's tokens."""

from __future__ import annotations

import re
from typing import Any


def echo_tokens(text: str) -> list[str]:
    """The echo reader's tokens: whitespace-led words, a trailing run of whitespace its own token."""
    return re.findall(r"\s*\S+|\s+", text)


def collect_stream(stream: Any) -> tuple[dict[int, str], dict[int, str | None], list[object]]:
    texts: dict[int, str] = {}
    reasons: dict[int, str | None] = {}
    chunks = list(stream)
    for chunk in chunks:
        for c in chunk.choices:
            texts[c.index] = texts.get(c.index, "") + (c.delta.content or "")
            if c.finish_reason:
                reasons[c.index] = c.finish_reason
    return texts, reasons, chunks


def stream_logprobs(stream: Any) -> list[object]:
    return [e for chunk in stream for c in chunk.choices if c.logprobs and c.logprobs.content
            for e in c.logprobs.content]
