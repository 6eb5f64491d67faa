"""The prefill chunk's size and contents, from measured step times (liftoff/readers/engines/chunk_plan.py)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from liftoff.readers.engines.chunk_plan import MIN_CHUNK, UNCHUNKED_BUDGET, ChunkPlan


def row(prompt: int, computed: int = 0) -> Any:
    return SimpleNamespace(prompt=list(range(prompt)), computed=computed)


def width(positions: int) -> int:
    return -(-positions // 16) * 16


def test_the_budget_keeps_a_running_streams_pause_near_two_steps() -> None:
    plan = ChunkPlan(512, width)
    assert plan.budget(0) == 512  # nothing decoding: the whole bound
    assert plan.budget(4) == 512  # decoding, nothing measured yet
    plan.decode_step(0.010, 4)
    # a decode row's cost stands in for a chunk token's: about 4 tokens, at least MIN_CHUNK
    assert plan.budget(4) == MIN_CHUNK
    plan.chunk_forward(0.010 + 0.005, 100)  # each chunk token adds 50 us beyond the step
    assert plan.budget(4) == 192  # (2 - 1) * 10 ms / 50 us = 200, in whole MIN_CHUNKs
    plan.decode_step(10.0, 4)  # a very slow step: the bound caps the chunk
    assert plan.budget(4) == 512
    assert ChunkPlan(0, width).budget(4) == UNCHUNKED_BUDGET


def test_fewest_tokens_left_first_and_the_long_prompt_takes_the_rest() -> None:
    plan = ChunkPlan(64, width)
    long, short, done_half = row(1000), row(10), row(40, computed=32)
    chosen = plan.choose([long, short, done_half], [], 64)
    assert [(r is done_half, r is short, r is long, take) for r, take in chosen] == [
        (True, False, False, 8), (False, True, False, 10), (False, False, True, 46)]


def test_a_chunk_is_measured_before_merging() -> None:
    plan = ChunkPlan(64, width)
    running = [row(8, computed=8) for _ in range(4)]
    assert plan.mode(running) == "measure"
    plan.decode_step(0.01, 4)
    assert plan.mode(running) == "merge"
    assert plan.mode(running * 4) == "measure"  # four times the rows: the step's time is measured again
