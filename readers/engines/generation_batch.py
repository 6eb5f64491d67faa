"""The continuous-batching scheduler: one thread that owns the model and runs decode steps for the running rows.

Every iteration: drop rows whose request was cancelled or expired; admit waiting rows into free slots and prefill
them together (left-padded, one forward); run one decode step for every running row; choose each row's next token;
finish rows at EOS / max_new_tokens / the sequence limit and move the last rows into the freed slots. New requests
therefore join between decode steps and short ones leave while long ones continue. Replies are handed to the event
loop once per iteration through `emit` (token, done and error events); the scheduler never touches the sink.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from liftoff.wire import now_ms
from readers.engines.constrained import allowed_tokens
from readers.engines.logprobs import TokenTexts, step_entries
from readers.engines.sampling import NoRepeatNGrams, RowSampling, SlotSampling
from readers.engines.slot_cache import SlotCache
from readers.engines.tokenizer_tools import IncrementalDetokenizer, decode_all
from readers.jobs import Job

log = logging.getLogger(__name__)

PREFILL_TOKEN_BUDGET = 8192  # prompt tokens (padded) prefilled in one forward; more waits for the next iteration
WIDTH_STEP = 32  # attention width is rounded up to this many columns, so shapes change rarely


@dataclass(eq=False)
class Request:
    """One job: its rows answer together."""

    job: Job
    sink: Any
    rows_left: int
    texts: list[str] = field(default_factory=list)
    metadata: list[dict[str, Any]] = field(default_factory=list)
    logprobs: list[list[dict[str, Any]]] | None = None  # per row, when asked for and the request does not stream
    future: Any = None  # asyncio.Future, resolved on the event loop when the terminal reply is sent
    failed: bool = False
    cancel_reason: str | None = None


@dataclass(eq=False, slots=True)
class Row:
    request: Request
    index: int
    prompt: list[int]
    sampling: RowSampling
    max_new: int
    min_new: int
    stream: bool
    no_repeat: NoRepeatNGrams | None = None
    enforcer: Any = None
    detok: IncrementalDetokenizer | None = None  # streams, and rows with log probabilities (for text offsets)
    logprobs: int | None = None  # None: no log probabilities; k: the chosen token's and the k most likely
    pending: list[dict[str, Any]] = field(default_factory=list)  # entries of tokens whose text is not out yet
    emitted: int = 0  # characters of text the detokenizer has given so far
    generated: list[int] = field(default_factory=list)
    slot: int = -1
    start: int = 0  # first cache column holding this row's prompt (columns before it are padding)
    write_at: int = 0  # cache column the next fed token goes to
    position: int = 0  # rotary position of the next fed token
    first_token_ms: int | None = None
    finish: str | None = None


Event = tuple[Any, ...]


class Scheduler:
    def __init__(self, model: Any, tokenizer: Any, device: torch.device, max_rows: int, max_length: int,
                 eos_ids: list[int], vocab_size: int, emit: Callable[[list[Event]], None]) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.max_rows = max_rows
        self.max_length = max_length
        self.eos = set(eos_ids)
        self.eos_ids = torch.tensor(sorted(self.eos), dtype=torch.long, device=device)
        self.emit = emit
        self.token_texts = TokenTexts(tokenizer)
        # Left padding in a prefill puts a row's tokens after up to max_length - 1 padding columns, so a slot may
        # span up to twice the sequence limit (capacity still grows only as far as rows actually reach).
        self.cache = SlotCache(max_rows, 2 * max_length, device)
        self.sampling = SlotSampling(max_rows, vocab_size, device)
        self.mask_dtype = next(model.parameters()).dtype
        self.running: list[Row] = []  # running[i].slot == i
        self.steps = 0
        self.decoded_tokens = 0  # with decode_s: the decode speed the fit engine's calibration records
        self.decode_s = 0.0
        self._waiting: deque[Row] = deque()
        self._cond = threading.Condition()
        self._stop = False
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

    # --- the loop ---------------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cond:
                    while not self._stop and not self.running and not self._waiting:
                        self._cond.wait()
                    if self._stop:
                        return
                    events: list[Event] = []
                    self._drop_gone(events)
                    admitted = self._take_waiting()
                try:
                    if admitted:
                        self._prefill(admitted, events)
                    if self.running:
                        self._decode(events)
                except Exception as exc:  # a failed step fails its rows, never the scheduler
                    log.exception("generation step failed")
                    for row in self.running + admitted:
                        self._fail(row.request, 500, f"generation failed: {type(exc).__name__}: {exc}", events)
                    self.running = []
                if events:
                    self.emit(events)

    def _drop_gone(self, events: list[Event]) -> None:
        now = now_ms()
        for row in self.running:
            self._check(row.request, now, events)
            if row.request.failed:
                row.finish = "dropped"
        self._compact()
        if self._waiting:
            for row in self._waiting:
                self._check(row.request, now, events)
            self._waiting = deque(row for row in self._waiting if not row.request.failed)

    def _check(self, request: Request, now: int, events: list[Event]) -> None:
        if request.failed:
            return
        if request.cancel_reason is not None or request.job.cancelled:
            self._fail(request, 499, request.cancel_reason or "cancelled by the client", events)
        elif now > request.job.item.deadline_ms:
            self._fail(request, 504, "the request's deadline passed during generation", events)

    def _take_waiting(self) -> list[Row]:
        free = self.max_rows - len(self.running)
        taken: list[Row] = []
        longest = 0
        while self._waiting and len(taken) < free:
            row = self._waiting[0]
            longest_if = max(longest, len(row.prompt))
            if taken and longest_if * (len(taken) + 1) > PREFILL_TOKEN_BUDGET:
                break
            taken.append(self._waiting.popleft())
            longest = longest_if
        return taken

    # --- forward passes ---------------------------------------------------------------------------------------------
    def _prefill(self, rows: list[Row], events: list[Event]) -> None:
        m, length, base = len(rows), max(len(r.prompt) for r in rows), len(self.running)
        ids = torch.zeros(m, length, dtype=torch.long)
        offsets = torch.tensor([length - len(r.prompt) for r in rows])
        for i, row in enumerate(rows):
            ids[i, length - len(row.prompt):] = torch.tensor(row.prompt)
            row.slot, row.start = base + i, length - len(row.prompt)
            row.write_at, row.position = length, len(row.prompt)
            self.sampling.set_row(row.slot, row.sampling, row.prompt)
        cols = torch.arange(length)
        positions = (cols[None, :] - offsets[:, None]).clamp_(min=0)
        keep = (cols[None, None, :] <= cols[None, :, None]) & (cols[None, None, :] >= offsets[:, None, None])
        self.running.extend(rows)
        self.cache.begin_prefill(base, m, length)
        logits = self._forward(ids, positions, keep[:, None])
        self._advance(rows, base, logits, events)

    def _decode(self, events: list[Event]) -> None:
        started = time.perf_counter()
        rows = self.running
        n = len(rows)
        feed = torch.tensor([r.generated[-1] for r in rows], dtype=torch.long)[:, None]
        positions = torch.tensor([r.position for r in rows], dtype=torch.long)[:, None]
        write_at_host = [r.write_at for r in rows]
        width = min(-(-(max(write_at_host) + 1) // WIDTH_STEP) * WIDTH_STEP, self.cache.max_length)
        write_at = torch.tensor(write_at_host, dtype=torch.long)
        starts = torch.tensor([r.start for r in rows], dtype=torch.long)
        cols = torch.arange(width)
        keep = (cols[None, :] >= starts[:, None]) & (cols[None, :] <= write_at[:, None])
        self.cache.begin_decode(n, write_at.to(self.device), width)
        logits = self._forward(feed, positions, keep[:, None, None])
        for row in rows:
            row.write_at += 1
            row.position += 1
        self.steps += 1
        self._advance(list(rows), 0, logits, events)
        self.decode_s += time.perf_counter() - started
        self.decoded_tokens += n

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(keep.shape, dtype=self.mask_dtype)
        mask.masked_fill_(~keep, torch.finfo(self.mask_dtype).min)
        out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                         position_ids=positions.to(self.device), past_key_values=self.cache, use_cache=True,
                         logits_to_keep=1)
        return out.logits[:, -1]

    # --- choosing tokens and finishing rows -----------------------------------------------------------------------
    def _advance(self, rows: list[Row], base: int, logits: torch.Tensor, events: list[Event]) -> None:
        ban_eos = None
        if any(len(r.generated) < r.min_new for r in rows):
            ban_eos = torch.tensor([len(r.generated) < r.min_new for r in rows], device=self.device)
        banned = [(i, r.no_repeat.banned()) for i, r in enumerate(rows) if r.no_repeat is not None]
        banned = [(i, ids) for i, ids in banned if ids]
        allowed = [(i, allowed_tokens(r.enforcer, r.generated)) for i, r in enumerate(rows) if r.enforcer is not None]
        wants = [i for i, r in enumerate(rows) if r.logprobs is not None]
        picks = None if len(wants) in (0, len(rows)) else torch.tensor(wants, device=logits.device)
        # The model's own distribution, taken before `choose` applies penalties and masks (in place).
        logprobs = None
        if wants:
            logprobs = torch.log_softmax((logits if picks is None else logits.index_select(0, picks)).float(), -1)
        chosen = self.sampling.choose(logits, base, ban_eos, self.eos_ids, banned, allowed)
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
            if token in self.eos and len(row.generated) >= row.min_new:
                self._finish(row, "stop", events)
                continue
            row.generated.append(token)
            if i in entries:
                entries[i]["offset"] = row.emitted  # where the token's text begins in the row's text
                row.pending.append(entries[i])
            if row.no_repeat is not None:
                row.no_repeat.add(token)
            if row.detok is not None:
                text = row.detok.add(token)
                row.emitted += len(text)
                if text and row.stream:
                    events.append(("token", row.request, row.index, text, row.pending))
                    row.pending = []
            if len(row.generated) >= row.max_new or len(row.prompt) + len(row.generated) >= self.max_length:
                self._finish(row, "length", events)
        self._compact()

    def _finish(self, row: Row, reason: str, events: list[Event]) -> None:
        row.finish = reason
        request = row.request
        if request.failed:
            return
        if row.detok is not None:
            tail = row.detok.flush()
            row.emitted += len(tail)
            if row.stream and (tail or row.pending):
                events.append(("token", request, row.index, tail, row.pending))
                row.pending = []
        job = request.job
        request.texts[row.index] = "" if row.stream else decode_all(self.tokenizer, row.generated)
        if request.logprobs is not None:
            request.logprobs[row.index], row.pending = row.pending, []
        request.metadata[row.index] = {
            "prompt_tokens": len(row.prompt),
            "generated_tokens": len(row.generated),
            "finish_reason": reason,
            "queue_ms": max(0, job.started_ms - job.item.enqueued_ms),
            "time_to_first_token_ms": (row.first_token_ms or now_ms()) - job.started_ms,
        }
        request.rows_left -= 1
        if request.rows_left == 0:
            events.append(("done", request))

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
            self.cache.move(row.slot, hole, row.write_at)
            self.sampling.move_row(row.slot, hole)
            row.slot = hole
        self.running = sorted(keep, key=lambda r: r.slot)
