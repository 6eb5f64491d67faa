"""Planned, paged KV memory for the generation scheduler: the plan, the block manager and the cache tensors.

Why blocks. A contiguous slot per row must either be sized for the longest sequence up front (gigabytes for a
long-context model, most of it never used) or grow, which is how one request used to take a reader's memory. Here
the KV cache is planned once, at load, from a budget (`page_cache_size`: bytes or a percentage of free memory) and
the model's shape, as `num_blocks` fixed blocks of `BLOCK_SIZE` token positions; it never grows past the plan. Each
row holds a block table (the ids of its blocks, in order). Fixed blocks give three things at once:

- **admission by capacity**: a row is admitted only when the blocks for its prompt plus `max_new_tokens` can be
  reserved, so a running row can never run out of KV memory (no preemption, no recomputation); a request that could
  never fit is refused at once with the numbers;
- **automatic prefix caching**: a full block is named by a content key chained over every token before it (the
  BLAKE2 digest of the previous block's key and its own token ids), so two prompts that share a prefix share its
  blocks. Blocks nobody references stay cached and are evicted least recently used, only when a block is needed;
- **static shapes**: the tensors never change size, and a decode step reads through block tables, which is what a
  CUDA graph of the decode step needs later.

Attention reads a row's blocks through a gather (`index_select` over the block table) into the layout Hugging Face
attention expects, then runs the model's own SDPA with a boolean mask that is at most [rows, 1, chunk, context]:
no O(L²) mask is ever built. On a CPU the gather copies each layer's keys and values once per step, about what
transformers' own dynamic cache costs when it concatenates.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from liftoff.core.sizes import parse_cache_size

BLOCK_SIZE = 16  # token positions per block: the prefix cache's granularity
DEFAULT_CPU_BUDGET = "10%"  # of the memory available at load, on a CPU (shared with everything else there)
DEFAULT_GPU_BUDGET = "80%"  # of the GPU memory free once the weights are in

@dataclass(frozen=True, slots=True)
class ModelShape:
    """What one token position costs in the KV cache."""

    layers: int
    kv_heads: int
    head_dim: int
    dtype: torch.dtype

    @classmethod
    def of(cls, config: Any, dtype: torch.dtype) -> ModelShape:
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        heads = int(text.num_attention_heads)
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        kv_heads = getattr(text, "num_key_value_heads", None) or heads
        return cls(int(text.num_hidden_layers), int(kv_heads), int(head_dim), dtype)

    @property
    def bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * torch.empty((), dtype=self.dtype).element_size()


@dataclass(frozen=True, slots=True)
class KVPlan:
    block_size: int
    num_blocks: int
    bytes_per_token: int
    budget_bytes: int  # what the budget allowed (the plan uses at most this)
    source: str  # how the budget was set, for the log

    @property
    def tokens(self) -> int:
        return self.num_blocks * self.block_size

    @property
    def bytes(self) -> int:
        return self.tokens * self.bytes_per_token

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)


def plan_kv(shape: ModelShape, page_cache_size: str | int | None, device: torch.device,
            most_tokens: int, block_size: int = BLOCK_SIZE) -> KVPlan:
    """The KV plan for a model of `shape` on `device`. `most_tokens` caps it: more than that could never be used
    (the most rows times the longest sequence)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        import psutil

        free = psutil.virtual_memory().available
    source = str(page_cache_size) if page_cache_size is not None else \
        (DEFAULT_GPU_BUDGET if device.type == "cuda" else DEFAULT_CPU_BUDGET)
    budget = parse_cache_size(page_cache_size if page_cache_size is not None else source, free)
    per_block = shape.bytes_per_token * block_size
    blocks = min(budget // per_block, -(-most_tokens // block_size))
    if blocks < 1:
        raise ValueError(f"page_cache_size {source!r} ({budget} bytes) holds no KV block of this model "
                         f"({per_block} bytes per {block_size} tokens)")
    return KVPlan(block_size, int(blocks), shape.bytes_per_token, budget, source)


def block_key(previous: bytes, tokens: list[int]) -> bytes:
    """The content key of a full block: its tokens and, through `previous`, every token before it."""
    return hashlib.blake2b(previous + array("q", tokens).tobytes(), digest_size=16).digest()


class BlockManager:
    """Which blocks are free, referenced, or cached for reuse; and the blocks promised to admitted rows.

    Invariant: `reserved` (blocks promised to admitted rows and not yet taken) never exceeds the free blocks plus
    the cached blocks nobody references, so every admitted row can always take what it was promised.
    """

    def __init__(self, num_blocks: int, block_size: int, prefix_caching: bool = True) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.prefix_caching = prefix_caching
        self.free = list(range(num_blocks - 1, -1, -1))  # a stack: low ids first
        self.refs = [0] * num_blocks
        self.reserved = 0
        self._key_of: dict[int, bytes] = {}
        self._by_key: dict[bytes, int] = {}
        self._idle: OrderedDict[int, None] = OrderedDict()  # cached, unreferenced blocks, least recently used first

    @property
    def available(self) -> int:
        return len(self.free) + len(self._idle) - self.reserved

    @property
    def used(self) -> int:
        """Blocks referenced by rows (cached idle blocks are reclaimable and not counted)."""
        return self.num_blocks - len(self.free) - len(self._idle)

    @property
    def cached(self) -> int:
        return len(self._key_of)

    def keys_for(self, tokens: list[int], root: bytes = b"") -> list[bytes]:
        """The content keys of the full blocks of `tokens` (none when prefix caching is off), chained from `root`
        (a LoRA adapter's: the same tokens under another adapter have other keys and values)."""
        keys: list[bytes] = []
        if self.prefix_caching:
            size, key = self.block_size, root
            for start in range(0, len(tokens) - size + 1, size):
                key = block_key(key, tokens[start:start + size])
                keys.append(key)
        return keys

    def match(self, keys: list[bytes]) -> list[int]:
        """Take a reference on the cached blocks holding the longest prefix of `keys` (from `keys_for`)."""
        out: list[int] = []
        for key in keys:
            block = self._by_key.get(key)
            if block is None:
                break
            if self.refs[block] == 0:
                del self._idle[block]
            self.refs[block] += 1
            out.append(block)
        return out

    def reserve(self, blocks: int) -> bool:
        if blocks > self.available:
            return False
        self.reserved += blocks
        return True

    def unreserve(self, blocks: int) -> None:
        self.reserved -= blocks

    def take(self) -> int:
        """One block for an admitted row, out of its reservation; evicts the least recently used cached block when
        none is free."""
        self.reserved -= 1
        if self.free:
            block = self.free.pop()
        else:
            block, _ = self._idle.popitem(last=False)
            del self._by_key[self._key_of.pop(block)]
        self.refs[block] = 1
        return block

    def publish(self, block: int, key: bytes) -> None:
        """`block` is full and its content key is `key`: later prompts with the same prefix may share it."""
        if self.prefix_caching and key not in self._by_key and block not in self._key_of:
            self._by_key[key] = block
            self._key_of[block] = key

    def release(self, blocks: list[int]) -> None:
        """Drop a reference on each of `blocks` (a row's table). The last blocks of a chain go idle first, so they
        are evicted before the blocks they follow: a prefix is only usable from its first block on."""
        for block in reversed(blocks):
            self.refs[block] -= 1
            if self.refs[block] == 0:
                if block in self._key_of:
                    self._idle[block] = None
                else:
                    self.free.append(block)


class PagedKVCache:
    """The KV tensors, [num_blocks, block_size, kv_heads, head_dim] per layer, behind the cache interface that
    Hugging Face attention layers call (`update`).

    Before each forward the scheduler calls `begin` with where the new tokens' keys and values go (block, offset),
    which of the forward's query positions they come from, and the block tables to read; every layer's `update` then
    writes its new keys/values there and returns the rows' context gathered into [rows, kv_heads, width, head_dim].
    """

    is_compileable = False

    def __init__(self, plan: KVPlan, shape: ModelShape, device: torch.device) -> None:
        self.plan = plan
        self.shape = shape
        size = (plan.num_blocks, plan.block_size, shape.kv_heads, shape.head_dim)
        # empty, not zeros: pages are touched only as blocks are used, so memory grows to the plan, never past it;
        # each block is zeroed when a row takes it (`clear`)
        self.keys = [torch.empty(size, dtype=shape.dtype, device=device) for _ in range(shape.layers)]
        self.values = [torch.empty(size, dtype=shape.dtype, device=device) for _ in range(shape.layers)]
        self._rows = 0
        self._width = 0
        self._blocks_read: torch.Tensor | None = None
        self._write_block: torch.Tensor | None = None
        self._write_offset: torch.Tensor | None = None
        self._source: torch.Tensor | None = None

    def clear(self, block: int) -> None:
        """Zero a block before a row writes into it: masked positions are still read, and uninitialised memory (or
        what an earlier row left) may hold NaN or inf, which a zero attention weight does not cancel."""
        for store in (*self.keys, *self.values):
            store[block].zero_()

    def begin(self, rows: int, block_table: torch.Tensor, write_block: torch.Tensor, write_offset: torch.Tensor,
              source: torch.Tensor | None) -> None:
        """`block_table`: [rows, blocks] ids to read (padded with any valid id; the mask hides them).
        `write_block`/`write_offset`: where each new token's key/value goes. `source`: for each of them, its index
        in the forward's flattened [rows * query_length] positions (None: one new token per row, in row order)."""
        self._rows = rows
        self._width = block_table.shape[1] * self.plan.block_size
        self._blocks_read = block_table.reshape(-1)
        self._write_block, self._write_offset, self._source = write_block, write_offset, source

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        rows, heads, length, dim = key_states.shape
        if heads != self.shape.kv_heads or dim != self.shape.head_dim:
            raise RuntimeError(f"layer {layer_idx} gives keys of {heads} heads x {dim} but the KV plan has "
                               f"{self.shape.kv_heads} x {self.shape.head_dim}; this model's attention is not one "
                               "the paged cache knows")
        out = []
        for store, states in ((self.keys[layer_idx], key_states), (self.values[layer_idx], value_states)):
            new = states.transpose(1, 2)  # [rows, length, heads, dim]
            new = new[:, 0] if self._source is None else new.reshape(rows * length, heads, dim)[self._source]
            store[self._write_block, self._write_offset] = new
            context = store.index_select(0, self._blocks_read)  # [rows * blocks, block, heads, dim]
            out.append(context.view(rows, self._width, heads, dim).transpose(1, 2))
        return out[0], out[1]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._width

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        return self._width, 0

    def __len__(self) -> int:
        return self.shape.layers
