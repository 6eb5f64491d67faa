"""Dynamic batching for one-shot engines (embeddings, classification).

Jobs submit their inputs; one collector task merges what arrives within `batch_duration_millis` of the oldest
waiting input (or until `max_items` inputs wait) into one call of `process` on the engine's torch thread. Work that
arrives while a batch computes waits for the next one, so under load batches fill without waiting at all. A job's
inputs may be split over two batches when they do not fit; its future resolves when all are done.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class _Pending:
    inputs: list[Any]
    future: asyncio.Future[list[Any]]
    arrived_s: float
    results: list[Any] = field(default_factory=list)
    taken: int = 0


class DynamicBatcher:
    def __init__(self, max_items: int, duration_ms: int, process: Callable[[list[Any]], Awaitable[list[Any]]]) -> None:
        self.max_items = max(1, max_items)
        self.duration_s = duration_ms / 1000.0
        self._process = process
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches = 0

    async def submit(self, inputs: list[Any]) -> list[Any]:
        """The outputs for `inputs`, in order; raises what `process` raised for their batch."""
        loop = asyncio.get_running_loop()
        if not inputs:
            return []
        if loop is not self._loop:  # an engine reused under a new event loop (tools, tests) starts afresh
            self._loop, self._pending, self._wake, self._task = loop, [], asyncio.Event(), None
        entry = _Pending(list(inputs), loop.create_future(), time.monotonic())
        self._pending.append(entry)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._collect())
        return await entry.future

    def _waiting_items(self) -> int:
        return sum(len(p.inputs) - p.taken for p in self._pending)

    async def _collect(self) -> None:
        while self._pending:
            deadline = self._pending[0].arrived_s + self.duration_s
            while self._waiting_items() < self.max_items:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except TimeoutError:
                    break
            batch, parts = self._take()
            try:
                outputs = await self._process(batch)
            except Exception as exc:  # noqa: BLE001 — handed to every job of the batch
                for entry, _, _ in parts:
                    if not entry.future.done():
                        entry.future.set_exception(exc)
                    if entry in self._pending:
                        self._pending.remove(entry)
                continue
            for entry, start, end in parts:
                entry.results.extend(outputs[start:end])
                if len(entry.results) == len(entry.inputs) and not entry.future.done():
                    entry.future.set_result(entry.results)
            self.batches += 1

    def _take(self) -> tuple[list[Any], list[tuple[_Pending, int, int]]]:
        batch: list[Any] = []
        parts = []
        while self._pending and len(batch) < self.max_items:
            entry = self._pending[0]
            count = min(len(entry.inputs) - entry.taken, self.max_items - len(batch))
            parts.append((entry, len(batch), len(batch) + count))
            batch.extend(entry.inputs[entry.taken : entry.taken + count])
            entry.taken += count
            if entry.taken == len(entry.inputs):
                self._pending.pop(0)
        return batch, parts
