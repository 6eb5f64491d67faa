"""How big each prefill chunk is, and which prompts it takes, while rows decode (the scheduler's pacing).

A running stream waits, for its next token, the decode step plus whatever prefill rides with it. The chunk is sized
so that this pause stays about PAUSE_STEPS of its decode steps, on any hardware: the decode step's time and what
each chunk token adds are measured as the reader runs (`ChunkPlan.decode_step`, `ChunkPlan.chunk_forward`), and the
chunk usually rides in the decode forward itself (one read of the weights for both). `prefill_chunk` is the upper
bound, and the chunk size when nothing is decoding.
"""

from __future__ import annotations

from collections.abc import Callable

from liftoff.readers.engines.generation_rows import Row

UNCHUNKED_BUDGET = 8192  # with chunking off: prompt tokens prefilled together (a longer prompt goes alone)
PAUSE_STEPS = 2.0
MIN_CHUNK = 16
EMA = 0.2  # weight of the newest measurement in the running averages
# Bound on one prefill chunk's attention workspace (beyond the KV plan): chunk tokens x context positions (a long
# context gets smaller chunks). The decode step's bound is paged_forward.GATHER_POSITIONS.
PREFILL_SCORES = 1 << 22


class ChunkPlan:
    """The measurements and the rules; `width(positions)` is the positions of the KV blocks that hold them."""

    def __init__(self, prefill_chunk: int, width: Callable[[int], int]) -> None:
        self.prefill_chunk = prefill_chunk  # 0: no chunking
        self.width = width
        self.step_s = 0.0  # running average of a decode-only step's time ...
        self.step_rows = 0  # ... at about this many rows
        self.token_s = 0.0  # running average of what each prefill token adds to a forward, at today's contexts

    def decode_step(self, spent_s: float, rows: int) -> None:
        """A decode-only forward of `rows` rows took `spent_s`."""
        self.step_s = _average(self.step_s, spent_s)
        self.step_rows = rows

    def chunk_forward(self, spent_s: float, prompt_tokens: int) -> None:
        """A forward with a chunk of `prompt_tokens` took `spent_s`: beyond a decode step (merged) or a forward's
        fixed cost, about a decode step (alone)."""
        if prompt_tokens:
            self.token_s = _average(self.token_s, max(spent_s - self.step_s, 0.1 * spent_s) / prompt_tokens, 0.5)

    def mode(self, running: list[Row]) -> str:
        """How this iteration runs while rows decode and prompts prefill: "merge" (the decode tokens ride in the
        chunk's forward), "measure" (a decode step alone, no chunk: its time at about this many rows is what sizes
        the chunks), or "apart" (two forwards: every token of a flat forward is scored against every context
        position in it, so merging only while that product stays small)."""
        n = len(running)
        if not self.step_s or abs(n - self.step_rows) > max(2, n // 4):
            return "measure"
        context = sum(self.width(row.computed + 1) for row in running)
        return "merge" if (n + MIN_CHUNK) * (context + MIN_CHUNK) <= PREFILL_SCORES else "apart"

    def budget(self, running: int) -> int:
        """Prompt tokens for the next chunk: `prefill_chunk`, or less while `running` rows decode, so that the
        chunk adds about PAUSE_STEPS - 1 of their decode steps to their pause (whole prompts when chunking is off).

        What a chunk token adds is measured on every chunk (it grows with the context the chunk attends to); until
        then a decode step's cost per row stands in, an overestimate that gives small chunks."""
        if not self.prefill_chunk:
            return UNCHUNKED_BUDGET
        if not running or not self.step_s:
            return self.prefill_chunk
        per_token = self.token_s or self.step_s / running
        fit = int((PAUSE_STEPS - 1) * self.step_s / per_token) // MIN_CHUNK * MIN_CHUNK
        return min(self.prefill_chunk, max(MIN_CHUNK, fit))

    def choose(self, prefilling: list[Row], decoding: list[Row], budget: int) -> list[tuple[Row, int]]:
        """The prefilling rows in this chunk and how many prompt tokens each: fewest prompt tokens left first, so
        short prompts finish in this chunk (their time to first token stays short) and a long one takes the rest of
        the budget, so it still advances every iteration."""
        chosen: list[tuple[Row, int]] = []
        total = len(decoding)
        context = sum(self.width(row.computed + 1) for row in decoding)
        prompt_tokens = 0
        for row in sorted(prefilling, key=lambda r: len(r.prompt) - r.computed):
            left = len(row.prompt) - row.computed
            take = min(left, budget - prompt_tokens) if self.prefill_chunk else left
            if self.prefill_chunk:
                # every token is scored against every context position of the forward: bound that product
                while take > MIN_CHUNK and (total + take) * (context + row.computed + take) > PREFILL_SCORES:
                    take = max(MIN_CHUNK, take // 2)
                if (chosen or decoding) and (total + take) * (context + row.computed + take) > PREFILL_SCORES:
                    break
            if chosen and (take <= 0 or prompt_tokens + take > budget):
                break
            chosen.append((row, take))
            total += take
            prompt_tokens += take
            context += self.width(row.computed + take)
        return chosen


def _average(current: float, sample: float, weight: float = EMA) -> float:
    return sample if not current else (1 - weight) * current + weight * sample
