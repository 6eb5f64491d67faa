"""The image-to-text engine: vision-language models loaded with transformers' image-text-to-text classes
(`AutoModelForImageTextToText`) and their processors (`AutoProcessor`, with Pillow image processors).

Why `generate` over batches rather than the generation engine's paged scheduler: that scheduler's forwards take
token ids over its own KV blocks, while a vision-language model's first forward also takes the processor's pixel
inputs (`pixel_values`, and per model image sizes or grids), which the model's own code encodes with its vision
tower and merges into the token embeddings. Wiring that into the paged forwards would mean one prefill path per
model family; `generate` runs them all. So this engine batches as the one-shot engines do, with a streamer:

- each job is prepared on a helper thread: images decoded (the gateway has checked and bounded them), prompts
  rendered (chats through the processor's chat template), each row processed alone, its length checked;
- rows wait in one queue; whenever the torch thread is free it takes what waits, and rows of the same sampling
  settings share one left-padded `generate` call (up to max_batch_size rows), so under load batches fill while one
  runs; rows of different settings run one batch after the other. A seeded row runs alone (its generator is seeded
  with seed + its index, as the generation engine does);
- a streamer sees every step's tokens and ends rows at their end of sequence or their own max_new_tokens (a
  stopping criterion per row), streams their text, and ends a cancelled row at the next step.

What it costs against the paged scheduler: no continuous batching (a batch runs until its longest row ends; new
rows wait for the next one) and no prefix reuse. Structured outputs, log probabilities, LoRA adapters, tools and
prompt_max_tokens (a cut could split an image's tokens) are refused by name (422).

Prompts, images and sampling settings are prepared by image_prompts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liftoff.core import metrics
from liftoff.core.reader_config import ReaderConfig
from liftoff.core.wire import now_ms
from liftoff.readers.engines.base import EngineLoadError, EngineRequestError
from liftoff.readers.engines.image_prompts import (
    decode_image,
    process_prompt,
    refuse_unsupported,
    render_prompts,
    sampling_settings,
)
from liftoff.readers.engines.model_engine import ModelEngine, end_of_sequence_ids
from liftoff.readers.engines.tokenizer_tools import IncrementalDetokenizer, decode_text
from liftoff.readers.jobs import Job
from liftoff.readers.replies import ReplySink

log = logging.getLogger(__name__)

# Per-token tensors of a processed row (left-padded when rows are batched); the processor's other outputs (pixel
# values, image sizes or grids) are concatenated in row order, which is the order of the image tokens they fill.
SEQUENCE_KEYS = frozenset({"input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids"})


@dataclass(eq=False)
class _Request:
    job: Job
    sink: ReplySink
    rows_left: int
    texts: list[str]
    metadata: list[dict[str, Any]]
    future: asyncio.Future[None]
    failed: bool = False


@dataclass(eq=False)
class _Row:
    request: _Request
    index: int
    inputs: dict[str, Any]  # the processor's tensors for this row alone
    length: int
    max_new: int
    key: tuple[Any, ...]  # rows with equal keys may share a batch
    settings: dict[str, Any]  # generate's sampling arguments
    seed: int | None
    detok: IncrementalDetokenizer | None
    generated: list[int] = field(default_factory=list)
    finish: str | None = None
    first_token_ms: int | None = None


class ImageToTextEngine(ModelEngine):
    model_type = "image-to-text"
    takes_images = True
    default_max_length = 4096

    def __init__(self, config: ReaderConfig, repository_path: str | Path = "./artefacts",
                 model_path: str | Path | None = None) -> None:
        super().__init__(config, repository_path, model_path)
        self.processor: Any = None
        self.eos: frozenset[int] = frozenset()
        self.pad_id = 0
        self._thread: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: list[_Row] = []
        self._worker: asyncio.Task[None] | None = None
        self._progress: float | None = None  # time.monotonic() of the last step while a batch runs; None when idle
        self._decode_s = 0.0
        self._decoded = 0

    # --- loading ----------------------------------------------------------------------------------------------------
    async def load(self) -> None:
        from liftoff.readers.engines.torch_device import TorchThread

        await asyncio.to_thread(self._load)
        self._thread = TorchThread("liftoff-vlm")

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from liftoff.readers.engines.load_options import loaded_label, model_load_options

        device = self.settle_device()
        path = self.resolved_path()
        try:
            self.processor = AutoProcessor.from_pretrained(path, backend="pil")
            model = AutoModelForImageTextToText.from_pretrained(path, **model_load_options(self.config, device, path))
        except (OSError, ValueError, KeyError) as exc:
            raise EngineLoadError(f"{str(path)!r} could not be loaded as an image-text-to-text model with its "
                                  f"processor: {exc}") from exc
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is None or getattr(self.processor, "image_processor", None) is None:
            raise EngineLoadError(f"{str(path)!r}: its processor has no tokenizer or no image processor")
        tokenizer.padding_side = "left"
        self.tokenizer = tokenizer
        self.loaded_dtype = loaded_label(model)
        self.model = model.to(device).eval()
        self.settle_max_length(model.config.get_text_config())
        self.eos = end_of_sequence_ids(model, tokenizer, path)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else model.generation_config.pad_token_id
        self.pad_id = int(pad) if pad is not None else min(self.eos)
        self.max_batch_size = self.config.batch_slots()
        torch.set_grad_enabled(False)
        log.info("image-to-text model %s (%s) on %s: max_length %d, batches of up to %d rows, weights %s",
                 path, type(model).__name__, device, self.max_length, self.max_batch_size, self.loaded_dtype)

    def last_progress(self) -> float | None:
        return self._progress

    def tokens_per_s(self) -> float | None:
        return self._decoded / self._decode_s if self._decode_s > 1.0 else None

    def close(self) -> None:
        if self._thread is not None:
            self._thread.close()

    # --- serving ----------------------------------------------------------------------------------------------------
    async def run(self, jobs: list[Job], sink: ReplySink) -> None:
        if self._thread is None:
            raise RuntimeError("the image-to-text engine is not loaded")
        loop = asyncio.get_running_loop()
        self._loop = loop
        prepared = await asyncio.to_thread(self._prepare_all, jobs)
        requests: list[_Request] = []
        for job, outcome in zip(jobs, prepared, strict=True):
            if isinstance(outcome, EngineRequestError):
                sink.error(job, outcome.status, str(outcome))
                continue
            request = _Request(job=job, sink=sink, rows_left=len(outcome), texts=[""] * len(outcome),
                               metadata=[{} for _ in outcome], future=loop.create_future())
            for row in outcome:
                row.request = request
            requests.append(request)
            self._waiting.extend(outcome)
        if not requests:
            return
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._work())
        try:
            await asyncio.gather(*(r.future for r in requests))
        except asyncio.CancelledError:
            for request in requests:
                request.job.cancelled = True
            raise

    async def _work(self) -> None:
        """Batches of waiting rows, one at a time on the torch thread, until none wait."""
        while self._waiting:
            batch = self._take()
            live = [r for r in batch if not self._dropped(r)]
            if not live:
                continue
            try:
                await self._thread.call(self._generate, live)
            except Exception as exc:  # handed to every request of the batch
                log.exception("image-to-text batch of %d rows failed", len(live))
                for row in live:
                    self._fail(row.request, 500, f"generation failed: {type(exc).__name__}: {exc}")
            finally:
                self._progress = None

    def _take(self) -> list[_Row]:
        """The oldest waiting row and the waiting rows that may share its batch (same key), up to max_batch_size."""
        first = self._waiting[0]
        batch = [r for r in self._waiting if r.key == first.key][: self.max_batch_size]
        taken = set(map(id, batch))
        self._waiting = [r for r in self._waiting if id(r) not in taken]
        return batch

    def _dropped(self, row: _Row) -> bool:
        """A row whose request failed already, or whose client went away (499) while it waited."""
        request = row.request
        if not request.failed and request.job.cancelled:
            self._fail(request, 499, "cancelled by the client")
        return request.failed

    def _fail(self, request: _Request, status: int, message: str) -> None:
        assert self._loop is not None
        if not request.failed:
            request.failed = True
            self._loop.call_soon_threadsafe(self._finish, request, status, message)

    def _finish(self, request: _Request, status: int | None = None, message: str = "") -> None:
        """The request's terminal reply (on the event loop): its error, or its texts and metadata."""
        job = request.job
        if not job.finished:
            if status is not None:
                request.sink.error(job, status, message)
            else:
                metrics.observe_job_metadata(job.group, request.metadata)
                request.sink.done(job, None if job.item.stream else request.texts,
                                  request.metadata if job.item.params.return_metadata else None)
        if not request.future.done():
            request.future.set_result(None)

    def _token(self, request: _Request, index: int, text: str) -> None:
        if not request.job.finished and not request.failed:
            request.sink.token(request.job, index, text)

    # --- the torch thread -------------------------------------------------------------------------------------------
    def _generate(self, rows: list[_Row]) -> None:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        engine = self

        class Steps(BaseStreamer):  # type: ignore[misc]
            """Every step's tokens into their rows; the first call is the prompts, which the rows have."""

            started = False

            def put(self, value: Any) -> None:
                if not self.started:
                    self.started = True
                    return
                engine._step(rows, [int(t) for t in value.reshape(-1).tolist()])

            def end(self) -> None:
                pass

        class RowsDone(StoppingCriteria):  # type: ignore[misc]
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.tensor([r.finish is not None for r in rows], dtype=torch.bool, device=input_ids.device)

        if rows[0].seed is not None:
            torch.manual_seed(rows[0].seed)
        inputs = self._collate(rows)
        self._progress = started = time.monotonic()
        self.model.generate(**inputs, **rows[0].settings, max_new_tokens=max(r.max_new for r in rows),
                            stopping_criteria=StoppingCriteriaList([RowsDone()]), streamer=Steps(),
                            eos_token_id=sorted(self.eos), pad_token_id=self.pad_id)
        self._decode_s += time.monotonic() - started
        for row in rows:
            if row.finish is None:
                self._end_row(row, "length")

    def _collate(self, rows: list[_Row]) -> dict[str, Any]:
        import torch

        width = max(r.length for r in rows)
        keys = list(dict.fromkeys(k for r in rows for k in r.inputs))
        out: dict[str, Any] = {}
        for key in keys:
            values = [r.inputs[key] for r in rows if key in r.inputs]
            if key in SEQUENCE_KEYS:
                pad = self.pad_id if key == "input_ids" else 0
                values = [torch.nn.functional.pad(v, (width - v.shape[-1], 0), value=pad) for v in values]
            out[key] = torch.cat(values).to(self.model.device)
        if "pixel_values" in out:
            out["pixel_values"] = out["pixel_values"].to(self.model.dtype)
        return out

    def _step(self, rows: list[_Row], tokens: list[int]) -> None:
        self._progress = time.monotonic()
        for row, token in zip(rows, tokens, strict=True):
            if row.finish is not None:
                continue
            if row.request.failed or row.request.job.cancelled:
                row.finish = "cancelled"
                self._fail(row.request, 499, "cancelled by the client")
                continue
            if row.first_token_ms is None:
                row.first_token_ms = now_ms()
            if token in self.eos:
                self._end_row(row, "stop")
                continue
            row.generated.append(token)
            self._decoded += 1
            if row.detok is not None:
                text = row.detok.add(token)
                if text:
                    self._emit_token(row, text)
            if len(row.generated) >= row.max_new:
                self._end_row(row, "length")

    def _emit_token(self, row: _Row, text: str) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._token, row.request, row.index, text)

    def _end_row(self, row: _Row, reason: str) -> None:
        row.finish = reason
        request = row.request
        if request.failed:
            return
        if row.detok is not None:
            tail = row.detok.flush()
            if tail:
                self._emit_token(row, tail)
        else:
            request.texts[row.index] = decode_text(self.tokenizer, row.generated)
        request.metadata[row.index] = request.job.row_metadata(row.length, 0, len(row.generated), reason,
                                                               row.first_token_ms)
        request.rows_left -= 1
        if request.rows_left == 0:
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._finish, request)

    # --- preparing jobs (a helper thread) ---------------------------------------------------------------------------
    def _prepare_all(self, jobs: list[Job]) -> list[list[_Row] | EngineRequestError]:
        out: list[list[_Row] | EngineRequestError] = []
        for job in jobs:
            try:
                out.append(self._prepare(job))
            except EngineRequestError as exc:
                out.append(exc)
        return out

    def _prepare(self, job: Job) -> list[_Row]:
        item, params = job.item, job.item.params
        refuse_unsupported(item.tools is not None, params)
        images = [decode_image(data, i) for i, data in enumerate(item.images or [])]
        prompts = render_prompts(self.processor, self.tokenizer, item.texts, item.chats, item.add_generation_prompt,
                                 params.use_chat_template, len(images))
        if not prompts:
            raise EngineRequestError(422, "text: no prompt given")
        settings, key = sampling_settings(params)
        rows = []
        for index, prompt in enumerate(prompts):
            where = f"text[{index}]" if len(prompts) > 1 else "text"
            templated = item.chats is not None or params.use_chat_template
            inputs = process_prompt(self.processor, self.tokenizer, prompt, images, templated=templated, where=where)
            length = int(inputs["input_ids"].shape[-1])
            if length >= self.max_length:
                raise EngineRequestError(422, f"{where}: the prompt has {length} tokens (its images' included) but "
                                         f"this reader's max_sequence_length is {self.max_length} tokens")
            seed = None if params.seed is None else params.seed + index
            rows.append(_Row(
                request=None,  # type: ignore[arg-type]  # set by run()
                index=index, inputs=dict(inputs), length=length,
                max_new=max(1, min(params.max_new_tokens, self.max_length - length)),
                key=key if seed is None else (*key, "seed", id(job), index), settings=settings, seed=seed,
                detok=IncrementalDetokenizer(self.tokenizer) if item.stream else None,
            ))
        return rows
