"""A unit of work as the reader loop hands it to an engine."""

from __future__ import annotations

from dataclasses import dataclass, field

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
