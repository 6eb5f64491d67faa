"""A preallocated KV cache with one fixed slot per running row, for continuous batching.

Hugging Face attention layers call `past_key_values.update(key, value, layer_idx)` and attend over what it returns.
This cache answers that call in two modes:

- prefill of m new rows into slots s..s+m (left-padded to one length L): the keys/values are written to columns
  0..L of those slots and returned as they are;
- decode of the first n slots, one new token each: each row's key/value is written at that row's own column
  (`write_at`), and the first `width` columns of slots 0..n are returned.

Rows therefore sit at different lengths in one batch; the engine passes a 4D mask that lets each row see only its
own columns (from its first real prompt token up to the current one) and explicit position ids, so the model never
asks the cache for its length. Running rows are kept compact in slots 0..n (a leaving row's slot is filled by
moving the last row), so a step computes only live rows. Buffers are [slots, kv_heads, capacity, head_dim] per
layer; the capacity grows in powers of two up to the reader's maximum sequence length (allocating the maximum up
front would cost gigabytes on a CPU for long-context models). On a GPU, padding n to a few bucket sizes would make
the decode step shape-static for graph capture.
"""

from __future__ import annotations

from typing import Any

import torch

MIN_CAPACITY = 128


class SlotCache:
    is_compileable = False

    def __init__(self, slots: int, max_length: int, device: torch.device) -> None:
        self.slots = slots
        self.max_length = max_length
        self.device = device
        self.capacity = min(MIN_CAPACITY, max_length)
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self._mode = "decode"
        self._start = 0
        self._rows = 0
        self._width = 0
        self._row_index: torch.Tensor | None = None
        self._write_at: torch.Tensor | None = None

    # --- set up one forward pass --------------------------------------------------------------------------------
    def begin_prefill(self, start: int, rows: int, length: int) -> None:
        self.ensure_capacity(length)
        self._mode, self._start, self._rows, self._width = "prefill", start, rows, length

    def begin_decode(self, rows: int, write_at: torch.Tensor, width: int) -> None:
        self.ensure_capacity(width)
        self._mode, self._rows, self._width = "decode", rows, width
        self._row_index = torch.arange(rows, device=self.device)
        self._write_at = write_at

    def ensure_capacity(self, length: int) -> None:
        if length > self.max_length:
            raise ValueError(f"sequence length {length} is over the maximum {self.max_length}")
        if length <= self.capacity:
            return
        capacity = self.capacity
        while capacity < length:
            capacity *= 2
        capacity = min(capacity, self.max_length)
        for store in (self.keys, self.values):
            for i, old in enumerate(store):
                new = old.new_zeros(old.shape[0], old.shape[1], capacity, old.shape[3])
                new[:, :, : self.capacity] = old
                store[i] = new
        self.capacity = capacity

    # --- the interface attention layers use -----------------------------------------------------------------------
    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if layer_idx >= len(self.keys):
            self._allocate(layer_idx, key_states)
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        if self._mode == "prefill":
            rows = slice(self._start, self._start + self._rows)
            keys[rows, :, : self._width] = key_states
            values[rows, :, : self._width] = value_states
            return key_states, value_states
        index = (self._row_index, slice(None), self._write_at)
        keys[index] = key_states[:, :, 0]
        values[index] = value_states[:, :, 0]
        return keys[: self._rows, :, : self._width], values[: self._rows, :, : self._width]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._width

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        return self._width, 0

    def __len__(self) -> int:
        return len(self.keys)

    # --- slot bookkeeping -------------------------------------------------------------------------------------------
    def move(self, src: int, dst: int, length: int) -> None:
        """Copy the first `length` columns of slot `src` into slot `dst`."""
        for store in (self.keys, self.values):
            for buffer in store:
                buffer[dst, :, :length] = buffer[src, :, :length]

    def _allocate(self, layer_idx: int, like: torch.Tensor) -> None:
        while len(self.keys) <= layer_idx:
            shape = (self.slots, like.shape[1], self.capacity, like.shape[3])
            self.keys.append(torch.zeros(shape, dtype=like.dtype, device=like.device))
            self.values.append(torch.zeros(shape, dtype=like.dtype, device=like.device))
