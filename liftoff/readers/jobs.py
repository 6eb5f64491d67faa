"""A unit of work as the reader loop hands it to an engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from liftoff.core.wire import WorkItem, now_ms


@dataclass(slots=True)
class Job:
    group: str  # consumer group the entry was read from
    stream: str  # request stream key, for the XACK
    entry_id: bytes  # stream entry id, for the XACK
    item: WorkItem
    started_ms: int = field(default_factory=now_ms)
    finished: bool = False  # set by the reply sink when the terminal reply is queued
    deliveries: int = 1  # 1 on first delivery; more when reclaimed from a reader that died
    cancelled: bool = False  # the client went away; engines end the job at their next step
    failed: bool = False  # set by the reply sink when the terminal reply is an error
    last_reply_s: float | None = None  # time.monotonic() of the last reply the sink queued for it; None: none yet

    @property
    def expired(self) -> bool:
        return now_ms() > self.item.deadline_ms

    def row_metadata(self, prompt_tokens: int, cached_prompt_tokens: int, generated_tokens: int, finish_reason: str,
                     first_token_ms: int | None) -> dict[str, Any]:
        """A generated row's reply metadata: its token counts, why it ended, the job's time queued and the time to
        the row's first token (until now, for a row that produced none)."""
        return {
            "prompt_tokens": prompt_tokens,
            "cached_prompt_tokens": cached_prompt_tokens,
            "generated_tokens": generated_tokens,
            "finish_reason": finish_reason,
            "queue_ms": max(0, self.started_ms - self.item.enqueued_ms),
            "time_to_first_token_ms": (first_token_ms or now_ms()) - self.started_ms,
        }
