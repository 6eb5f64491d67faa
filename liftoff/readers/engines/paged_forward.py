"""The model's forward passes over paged KV memory, for the generation scheduler (generation_batch).

Two shapes of forward: a decode step (one token per running row, batch rows = running rows, each row's context
gathered through its block table) and a flat forward (the tokens of several rows laid end to end in one batch row,
with the mask letting each token see its own row's context up to itself: prefill chunks, with the decode tokens
of the running rows in front of them when the scheduler merges the two). Both write the new tokens' keys and values
into the rows' blocks (`kv_blocks.PagedKVCache`). Blocks are taken from the reservation made at admission (`grow`),
offered to the prefix cache once full (`publish`) and given back when the row ends (`free`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

from liftoff.readers.engines.generation_rows import Row
from liftoff.readers.engines.kv_blocks import BlockManager, PagedKVCache, block_key
from liftoff.readers.engines.lora import LoraAdapters

# Bound on one decode forward's attention workspace (beyond the KV plan): positions gathered per forward.
GATHER_POSITIONS = 32768


class PagedForward:
    def __init__(self, model: Any, kv: PagedKVCache, blocks: BlockManager, device: torch.device,
                 lora: LoraAdapters | None = None) -> None:
        self.model = model
        self.lora = lora
        self.kv = kv
        self.blocks = blocks
        self.block_size = blocks.block_size
        self.device = device
        # transformers 5 names the cache argument `cache` (`past_key_values` before, deprecated since)
        self._cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def width(self, positions: int) -> int:
        """Positions of the blocks that hold `positions` positions."""
        return -(-positions // self.block_size) * self.block_size

    def decode(self, rows: list[Row]) -> torch.Tensor:
        """Logits of one decode step for `rows` (each fed its last token), in as few forwards as GATHER_POSITIONS
        allows (almost always one)."""
        for row in rows:
            self.grow(row, row.computed + 1)
        parts = [self.decode_part(rows[first:last]) for first, last in self.gather_groups(rows)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    def flat(self, pieces: list[tuple[Row, list[int], int]]) -> torch.Tensor:
        """Logits of the last token of each piece (row, its new tokens, their first position), all in one flat
        sequence; the new tokens' keys and values are written to the rows' blocks."""
        size = self.block_size
        ids: list[int] = []
        positions: list[int] = []
        write_block: list[int] = []
        write_offset: list[int] = []
        table: list[int] = []
        starts: list[int] = []  # per piece: its first key column
        for row, tokens, first in pieces:
            ids.extend(tokens)
            positions.extend(range(first, first + len(tokens)))
            for p in range(first, first + len(tokens)):
                write_block.append(row.blocks[p // size])
                write_offset.append(p % size)
            starts.append(len(table) * size)
            table.extend(row.blocks[:-(-(first + len(tokens)) // size)])
        columns = len(table) * size
        key_row = torch.empty(columns, dtype=torch.long)  # which piece each key column belongs to
        key_pos = torch.empty(columns, dtype=torch.long)  # its position in that piece's row
        query_row = torch.empty(len(ids), dtype=torch.long)
        last: list[int] = []
        at = 0
        for i, (_, tokens, _) in enumerate(pieces):
            end = starts[i + 1] if i + 1 < len(pieces) else columns
            key_row[starts[i]:end] = i
            key_pos[starts[i]:end] = torch.arange(end - starts[i])
            query_row[at:at + len(tokens)] = i
            at += len(tokens)
            last.append(at - 1)
        query_pos = torch.tensor(positions)
        keep = (key_row[None, :] == query_row[:, None]) & (key_pos[None, :] <= query_pos[:, None])
        if self.lora is not None:
            self.lora.route([(row.adapter, len(tokens)) for row, tokens, _ in pieces])
        self.kv.begin(1, torch.tensor([table], dtype=torch.long, device=self.device),
                      torch.tensor(write_block, device=self.device), torch.tensor(write_offset, device=self.device),
                      torch.arange(len(ids), device=self.device))
        return self.forward(torch.tensor([ids]), query_pos[None, :], keep[None, None], keep_rows=torch.tensor(last))

    def gather_groups(self, rows: list[Row]) -> list[tuple[int, int]]:
        """Consecutive slices of the running rows whose gathered context (rows x the longest row's blocks) stays
        within GATHER_POSITIONS, so the attention workspace is bounded whatever the mix of lengths; almost always
        one slice (one forward)."""
        groups, first, widest = [], 0, 0
        for i, row in enumerate(rows):
            width = self.width(row.computed + 1)
            if i > first and (i - first + 1) * max(widest, width) > GATHER_POSITIONS:
                groups.append((first, i))
                first, widest = i, 0
            widest = max(widest, width)
        groups.append((first, len(rows)))
        return groups

    def decode_part(self, rows: list[Row]) -> torch.Tensor:
        feed = torch.tensor([r.generated[-1] for r in rows], dtype=torch.long)[:, None]
        at = [r.computed for r in rows]
        table = self.table(rows, [p + 1 for p in at])
        position = torch.tensor(at, dtype=torch.long)
        cols = torch.arange(table.shape[1] * self.block_size)
        keep = cols[None, :] <= position[:, None]
        write_block = [r.blocks[p // self.block_size] for r, p in zip(rows, at, strict=True)]
        if self.lora is not None:
            self.lora.route([(row.adapter, 1) for row in rows])
        self.kv.begin(len(rows), table, torch.tensor(write_block, device=self.device),
                      (position % self.block_size).to(self.device), None)
        return self.forward(feed, position[:, None], keep[:, None, None])

    def forward(self, ids: torch.Tensor, positions: torch.Tensor, keep: torch.Tensor,
                 keep_rows: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of each batch row's last position, or (one flat row) of the positions in `keep_rows`."""
        out = self.model(input_ids=ids.to(self.device), attention_mask=keep.to(self.device),
                         position_ids=positions.to(self.device), use_cache=True, **{self._cache_arg: self.kv},
                         logits_to_keep=1 if keep_rows is None else keep_rows.to(self.device))
        return out.logits[:, -1] if keep_rows is None else out.logits[0]

    def table(self, rows: list[Row], lengths: list[int]) -> torch.Tensor:
        """Block tables of `rows`, covering their first `lengths` positions, padded to one width with each row's own
        last block (masked, and never uninitialised memory)."""
        width = -(-max(lengths) // self.block_size)
        table = [row.blocks[:width] + row.blocks[-1:] * (width - min(width, len(row.blocks))) for row in rows]
        return torch.tensor(table, dtype=torch.long, device=self.device)

    def grow(self, row: Row, positions: int) -> None:
        while len(row.blocks) * self.block_size < positions:
            block = self.blocks.take()
            self.kv.clear(block)
            row.blocks.append(block)
            row.reserved -= 1

    def publish(self, row: Row) -> None:
        """Offer the row's newly full blocks (prompt and generated tokens alike) to the prefix cache."""
        if not self.blocks.prefix_caching:
            return
        size = self.block_size
        full = row.computed // size
        if full <= row.published:
            return
        tokens = row.prompt + row.generated if row.computed > len(row.prompt) else row.prompt
        known = row.prefix_keys or []  # the prompt's keys, worked out at admission
        for b in range(row.published, full):
            row.last_key = known[b] if b < len(known) else block_key(row.last_key, tokens[b * size:(b + 1) * size])
            self.blocks.publish(row.blocks[b], row.last_key)
        row.published = full

    def free(self, row: Row) -> None:
        if row.blocks or row.reserved:
            self.blocks.release(row.blocks)
            self.blocks.unreserve(row.reserved)
            row.blocks, row.reserved = [], 0


def progress_hooks(model: Any, hook: Callable[..., None]) -> list[Any]:
    """A forward pre-hook on every module without children (each projection, norm, activation): a sign of progress
    every few milliseconds of a step, however long the step; a hook costs about a microsecond."""
    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    return [m.register_forward_pre_hook(hook) for m in (leaves or [model])]
