"""The continuous-batching scheduler: one thread that owns the model, with chunked prefill over paged KV memory.

Every iteration:
1. drop rows whose request was cancelled or expired (their KV blocks go back at once);
2. admit waiting rows, in arrival order, while a batch slot is free and the KV blocks for the row's prompt plus its
   `max_new_tokens` can be reserved (`kv_blocks.BlockManager`); the longest cached prefix of the prompt is reused
   from the prefix cache, and only the rest is computed;
3. one decode step for every running row (one token each);
4. one prefill chunk: at most `prefill_chunk` prompt tokens of the admitted rows still prefilling, fewest left
   first (several short prompts share one chunk; a long one is cut into chunks over several iterations), and
   while rows are decoding, no more than about two of their decode steps' worth (chunk_plan). Rows
   whose prompt is complete choose their first token and join the running rows.

Steps 3 and 4 are usually one forward (`_plan`): the decode tokens ride in the chunk's flat sequence, so the
weights are read once for both.

So a running stream waits at most one chunk for its next token, whatever arrives; admission by KV blocks bounds
the memory (docs/generation-engine.md has the why). Running rows stay compact in sampling slots 0..n; events (token,
done, error) go to the event loop through `emit` as soon as the forward that made them ends.

`progress_at` is the monotonic time of the last module the model entered (a forward pre-hook on every leaf module):
the reader's liveness beats go out only while it is recent, so a step that hangs is still caught.

What rows and requests hold is generation_rows; the forwards over paged KV are paged_forward; the KV blocks and the
prefix cache are kv_blocks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import torch

from liftoff.core import metrics
from liftoff.core.wire import now_ms
from liftoff.readers.engines.chunk_plan import ChunkPlan
from liftoff.readers.engines.constrained import GrammarMasks
from liftoff.readers.engines.generation_rows import Event, Request, Row, finish_row, record_token
from liftoff.readers.engines.kv_blocks import BlockManager, PagedKVCache
from liftoff.readers.engines.logprobs import TokenTexts, step_entries
from liftoff.readers.engines.lora import LoraAdapters
from liftoff.readers.engines.paged_forward import PagedForward, progress_hooks
from liftoff.readers.engines.sampling import SlotSampling

log = logging.getLogger(__name__)



class Scheduler:
    def __init__(self, model: Any, tokenizer: Any, device: torch.device, max_rows: int, max_length: int,
                 eos_ids: list[int], vocab_size: int, emit: Callable[[list[Event]], None], kv: PagedKVCache,
                 blocks: BlockManager, prefill_chunk: int, group: str = "", lora: LoraAdapters | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.max_rows = max_rows
        self.max_length = max_length
        self.eos = set(eos_ids)
        self.eos_ids = torch.tensor(sorted(self.eos), dtype=torch.long, device=device)
        self.emit = emit
        self.token_texts = TokenTexts(tokenizer)
        self.kv = kv
        self.blocks = blocks
        self.lora = lora
        self.paged = PagedForward(model, kv, blocks, device, lora)
        self.block_size = blocks.block_size
        self.chunks = ChunkPlan(prefill_chunk, self.paged.width)  # chunk sizes, from the measured step times
        self.group = group
        self.sampling = SlotSampling(max_rows, vocab_size, device)
        self.grammar_masks: GrammarMasks | None = None  # the bitmask buffer, from the first constrained row on
        self.running: list[Row] = []  # running[i].slot == i
        self.prefilling: list[Row] = []  # admitted, prompt not yet complete, in arrival order
        self.steps = 0
        self.prefills = 0  # prefill forwards (chunks)
        self.decoded_tokens = 0  # with decode_s: the decode speed the fit engine's calibration records
        self.decode_s = 0.0
        self.progress_at = time.monotonic()
        self._waiting: deque[Row] = deque()
        self._calls: deque[tuple[Callable[[], Any], Future[Any]]] = deque()  # run between iterations (`call`)
        self._detaching: set[str] = set()  # LoRA adapters removed, freed once no row uses them
        self._cond = threading.Condition()
        self._stop = False
        self._hooks = progress_hooks(model, self._progress)
        self._thread = threading.Thread(target=self._loop, name="liftoff-generate", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()

    def submit(self, rows: list[Row]) -> None:
        with self._cond:
            self._waiting.extend(rows)
            self._cond.notify()

    def cancel(self, request: Request, reason: str) -> None:
        request.cancel_reason = reason
        with self._cond:
            self._cond.notify()

    def call(self, fn: Callable[[], Any]) -> Future[Any]:
        """Run `fn` on the scheduler's thread between two iterations (what changes the model's modules: attaching
        a LoRA adapter); its result or exception in the future."""
        future: Future[Any] = Future()
        with self._cond:
            self._calls.append((fn, future))
            self._cond.notify()
        return future

    def detach(self, adapter: str) -> None:
        """Free a LoRA adapter once no row runs with it (rows already admitted finish with it)."""
        with self._cond:
            self._detaching.add(adapter)
            self._cond.notify()

    def fits(self, row: Row) -> bool:
        """Whether `row` could ever be admitted (the whole plan free)."""
        return self.kv.plan.blocks_for(row.kv_tokens(self.max_length)) <= self.blocks.num_blocks

    def _progress(self, *_: Any) -> None:
        self.progress_at = time.monotonic()

    # --- the loop ---------------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not self._stop and not self.running and not self.prefilling and not self._waiting \
                            and not self._calls and not self._detaching:
                        self._cond.wait()
                    if self._stop:
                        return
                    events: list[Event] = []
                    self._drop_gone(events)
                    self._between()
                    self._admit()
                    if not self.running and not self.prefilling:
                        self._hand_over(events)
                        continue
                self.progress_at = time.monotonic()
                try:
                    plan = self.chunks.mode(self.running) if self.running and self.prefilling else "apart"
                    if plan == "merge":
                        self._prefill(events, decoding=self.running)  # one forward: decode tokens + a chunk
                    else:
                        if self.running:
                            self._decode(events)
                            # the decode step's tokens go out now, not after the prefill chunk
                            events = self._hand_over(events)
                        if self.prefilling and plan == "apart":
                            self._prefill(events)
                except Exception as exc:  # a failed step fails its rows, never the scheduler
                    log.exception("generation step failed")
                    for row in self.running + self.prefilling:
                        self._fail(row.request, 500, f"generation failed: {type(exc).__name__}: {exc}", events)
                        self.paged.free(row)
                    self.running, self.prefilling = [], []
                self._hand_over(events)
                metrics.observe_kv(self.group, self.blocks.used, self.blocks.num_blocks)

    def _hand_over(self, events: list[Event]) -> list[Event]:
        """Give `events` to the event loop; a fresh list for what follows."""
        if events:
            try:
                self.emit(events)
            except Exception:  # the loop must outlive a failed hand-over, or every later request would hang
                log.exception("handing generation events to the event loop failed")
        return []

    def _drop_gone(self, events: list[Event]) -> None:
        now = now_ms()
        for row in self.running:
            self._check(row.request, now, events)
            if row.request.failed:
                row.finish = "dropped"
                self.paged.free(row)
        self._compact()
        for row in self.prefilling:
            self._check(row.request, now, events)
            if row.request.failed:
                self.paged.free(row)
        self.prefilling = [row for row in self.prefilling if not row.request.failed]
        if self._waiting:
            for row in self._waiting:
                self._check(row.request, now, events)
            if any(row.request.failed for row in self._waiting):
                self._waiting = deque(row for row in self._waiting if not row.request.failed)

    def _check(self, request: Request, now: int, events: list[Event]) -> None:
        if request.failed:
            return
        if request.cancel_reason is not None or request.job.cancelled:
            self._fail(request, 499, request.cancel_reason or "cancelled by the client", events)
        elif now > request.job.item.deadline_ms:
            self._fail(request, 504, "the request's deadline passed during generation", events)
        elif (adapter := request.job.item.params.lora_id) and (self.lora is None or adapter not in self.lora.loaded):
            self._fail(request, 404, f"lora_id: the LoRA adapter {adapter!r} was removed from this reader", events)

    def _between(self) -> None:
        """What waits for a pause between forwards: calls (`call`), and adapters no row uses any more (`detach`)."""
        while self._calls:
            fn, future = self._calls.popleft()
            try:
                future.set_result(fn())
            except Exception as exc:  # noqa: BLE001 — the caller gets it; the scheduler goes on
                future.set_exception(exc)
        if self._detaching and self.lora is not None:
            busy = {r.adapter for rows in (self.running, self.prefilling, self._waiting) for r in rows}
            for name in sorted(self._detaching - busy):
                self.lora.detach(name)
                self._detaching.discard(name)

    def _admit(self) -> None:
        """Waiting rows into the prefill set, in arrival order, while a slot and their KV blocks are free."""
        size = self.block_size
        while self._waiting and len(self.running) + len(self.prefilling) < self.max_rows:
            row = self._waiting[0]
            if row.prefix_keys is None:
                # The last prompt token is always computed: its logits choose the first token.
                row.prefix_keys = self.blocks.keys_for(row.prompt[:-1], row.root)
            if row.prefix_keys and self.blocks.prefix_caching and self._copy_prefilling(row):
                return  # its prompt's copy (OpenAI's `n`) is being prefilled: wait, then reuse its blocks
            total = self.kv.plan.blocks_for(row.kv_tokens(self.max_length))
            if total - len(row.prefix_keys) > self.blocks.available:
                return  # not even a full prefix hit would make it fit: wait for blocks
            shared = self.blocks.match(row.prefix_keys)
            need = total - len(shared)
            if not self.blocks.reserve(need):
                self.blocks.release(shared)
                return
            self._waiting.popleft()
            row.blocks, row.reserved = shared, need
            row.computed = row.cached = len(shared) * size
            row.published, row.last_key = len(shared), row.prefix_keys[len(shared) - 1] if shared else row.root
            metrics.observe_prefix_cache(self.group, len(row.prompt), row.cached)
            self.prefilling.append(row)

    def _copy_prefilling(self, row: Row) -> bool:
        """Whether another row of its request, with the same prompt, is being prefilled and has not yet published
        the blocks this one would reuse: `n` answers to one prompt prefill it once, the copies taking its blocks
        from the prefix cache (all but the last partial block) when they are in it."""
        return any(other.request is row.request and other.published < len(row.prefix_keys)
                   and other.root == row.root and other.prompt == row.prompt for other in self.prefilling)

    # --- forward passes ---------------------------------------------------------------------------------------------
    def _prefill(self, events: list[Event], decoding: list[Row] | None = None) -> None:
        """One chunk of prompt tokens for the rows still prefilling, as one flat sequence, with the decode token
        of each row in `decoding` in front of it when given (one forward, one read of the weights, for both).

        The rows' tokens are laid end to end in a single batch row (no padding: the linear layers compute exactly
        these tokens), and so are their contexts' blocks; the mask lets each token see its own row's context up to
        itself (paged_forward.PagedForward.flat)."""
        decoding = list(decoding or [])
        chosen = self.chunks.choose(self.prefilling, decoding, self.chunks.budget(len(self.running)))
        prompt_tokens = sum(take for _, take in chosen)
        for row in decoding:
            self.paged.grow(row, row.computed + 1)
        pieces = [(row, [row.generated[-1]], row.computed) for row in decoding]
        for row, take in chosen:
            self.paged.grow(row, row.computed + take)
            pieces.append((row, row.prompt[row.computed:row.computed + take], row.computed))
        started = time.perf_counter()
        logits = self.paged.flat(pieces)
        spent = time.perf_counter() - started
        self.chunks.chunk_forward(spent, prompt_tokens)
        if decoding:
            self._decoded(decoding, logits[:len(decoding)], events)
        self.prefills += 1
        metrics.observe_prefill(self.group, prompt_tokens)
        self._prefilled(chosen, logits[len(decoding):], events)

    def _prefilled(self, chosen: list[tuple[Row, int]], logits: torch.Tensor, events: list[Event]) -> None:
        """After a chunk's forward (`logits`: one per chosen row): rows whose prompt is complete choose their first
        token and join the running rows."""
        done: list[int] = []
        for i, (row, take) in enumerate(chosen):
            row.computed += take
            self.paged.publish(row)
            if row.computed == len(row.prompt):
                done.append(i)
        if not done:
            return
        finished = [chosen[i][0] for i in done]
        base = len(self.running)
        self.running.extend(finished)  # before anything can raise: a failed step must still find and free them
        self.prefilling = [row for row in self.prefilling if row.computed < len(row.prompt)]
        for slot, row in enumerate(finished, start=base):
            row.slot = slot
            self.sampling.set_row(slot, row.sampling, row.prompt)
        self._advance(finished, base, logits[torch.tensor(done, device=logits.device)], events)

    def _decode(self, events: list[Event]) -> None:
        started = time.perf_counter()
        rows = list(self.running)
        logits = self.paged.decode(rows)
        self.chunks.decode_step(time.perf_counter() - started, len(rows))
        self._decoded(rows, logits, events)
        self.decode_s += time.perf_counter() - started
        self.decoded_tokens += len(rows)  # with decode_s: steps that only decode (merged ones also prefill)

    def _decoded(self, rows: list[Row], logits: torch.Tensor, events: list[Event]) -> None:
        """After a forward that fed each running row its last token: its KV is in, choose the next ones."""
        for row in rows:
            row.computed += 1
            if row.computed % self.block_size == 0:
                self.paged.publish(row)
        self.steps += 1
        self._advance(rows, 0, logits, events)

    # --- KV blocks --------------------------------------------------------------------------------------------------
    # --- choosing tokens and finishing rows -----------------------------------------------------------------------
    def _advance(self, rows: list[Row], base: int, logits: torch.Tensor, events: list[Event]) -> None:
        ban_eos = None
        if any(len(r.generated) < r.min_new for r in rows):
            ban_eos = torch.tensor([len(r.generated) < r.min_new for r in rows], device=self.device)
        banned = [(i, r.no_repeat.banned()) for i, r in enumerate(rows) if r.no_repeat is not None]
        banned = [(i, ids) for i, ids in banned if ids]
        grammar = None
        if any(r.grammar is not None for r in rows):
            if self.grammar_masks is None:
                self.grammar_masks = GrammarMasks(self.max_rows, self.sampling.vocab_size)
            grammar = self.grammar_masks.for_rows([r.grammar for r in rows], self.device)
        wants = [i for i, r in enumerate(rows) if r.logprobs is not None]
        picks = None if len(wants) in (0, len(rows)) else torch.tensor(wants, device=logits.device)
        # The model's own distribution, taken before `choose` applies penalties and masks (in place).
        logprobs = None
        if wants:
            logprobs = torch.log_softmax((logits if picks is None else logits.index_select(0, picks)).float(), -1)
        chosen = self.sampling.choose(logits, base, ban_eos, self.eos_ids, banned, grammar)
        self.sampling.observe(base, chosen)
        tokens = chosen.tolist()
        entries: dict[int, dict[str, Any]] = {}
        if logprobs is not None:
            step = step_entries(self.token_texts, logprobs, chosen if picks is None else chosen.index_select(0, picks),
                                [rows[i].logprobs or 0 for i in wants])
            entries = dict(zip(wants, step, strict=True))
        now = now_ms()
        for i, (row, token) in enumerate(zip(rows, tokens, strict=True)):
            if row.first_token_ms is None:
                row.first_token_ms = now
            if token in self.eos and (len(row.generated) >= row.min_new or row.grammar is not None):
                self._finish(row, "stop", events)  # a grammar allows EOS only where its output is complete
                continue
            if row.grammar is not None and not row.grammar.advance(token):
                # Only a vocabulary that cannot spell what the grammar needs next (a newline, for WordPiece) gets
                # here: llguidance's mask then has nothing right to offer (grammar_tokens.TokenBytes.encode).
                self._fail(row.request, 422, f"this model's vocabulary cannot write what the constraint needs next "
                           f"({row.grammar.matcher.get_error().splitlines()[0]})", events)
                row.finish = "dropped"
                self.paged.free(row)
                continue
            record_token(row, token, entries.get(i), events)
            if row.grammar is not None and row.grammar.complete:
                self._finish(row, "stop", events)  # nothing may follow: no step spent on the forced EOS
            elif row.stopped and len(row.generated) >= row.min_new:
                self._finish(row, "stop", events)  # a stop string: nothing after it is worth a step
            elif len(row.generated) >= row.max_new or len(row.prompt) + len(row.generated) >= self.max_length:
                self._finish(row, "length", events)
        self._compact()

    def _finish(self, row: Row, reason: str, events: list[Event]) -> None:
        row.finish = reason
        self.paged.free(row)
        finish_row(row, reason, self.tokenizer, events)

    def _fail(self, request: Request, status: int, message: str, events: list[Event]) -> None:
        if not request.failed:
            request.failed = True
            events.append(("error", request, status, message))

    def _compact(self) -> None:
        """Remove finished rows, moving rows from the end into their slots so that slots 0..n stay in use."""
        keep = [r for r in self.running if r.finish is None]
        if len(keep) == len(self.running):
            return
        n = len(keep)
        holes = [r.slot for r in self.running[:n] if r.finish is not None]
        movers = [r for r in self.running[n:] if r.finish is None]
        for hole, row in zip(holes, movers, strict=True):
            self.sampling.move_row(row.slot, hole)
            row.slot = hole
        self.running = sorted(keep, key=lambda r: r.slot)

