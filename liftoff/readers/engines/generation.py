"""The generation engine: Hugging Face causal LMs with continuous batching (see `generation_batch`).

`run` prepares each job on a helper thread (tokenize, chat template, length and parameter checks; a job that cannot
run is answered 422 at once), hands its rows to the scheduler thread and waits until every job has its terminal
reply. `run` may be called again while earlier calls wait: their rows join the running batch between decode steps.

Why our own scheduler rather than transformers' continuous-batching manager: a trial of that manager on CPU gave far
less throughput than a plain static batch of `generate()`, while this scheduler (slot cache, standard SDPA attention)
matches or beats the static batch on the same model (bench/generation_inprocess.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from liftoff.core import metrics
from liftoff.core.adapters import check_adapter_name, parse_loras
from liftoff.core.reader_config import ReaderConfig
from liftoff.core.wire import GenerationParams
from liftoff.readers.engines.base import EngineLoadError, EngineRequestError
from liftoff.readers.engines.constrained import Grammars, RowGrammar, constrained
from liftoff.readers.engines.generation_batch import Event, Request, Row, Scheduler
from liftoff.readers.engines.kv_blocks import BlockManager, KVPlan, ModelShape, PagedKVCache, plan_kv
from liftoff.readers.engines.lora import LoraAdapters
from liftoff.readers.engines.model_engine import ModelEngine, end_of_sequence_ids
from liftoff.readers.engines.sampling import NoRepeatNGrams, RowSampling
from liftoff.readers.engines.tokenizer_tools import IncrementalDetokenizer
from liftoff.readers.jobs import Job
from liftoff.readers.replies import ReplySink

log = logging.getLogger(__name__)

# Most prompt tokens per scheduler iteration (prefill_chunk_size's default). While rows decode, the scheduler sizes
# chunks to a couple of their decode steps (chunk_plan.ChunkPlan.budget); this bound is what a prompt gets when
# nothing else runs, large enough that prefill runs at nearly its unchunked speed (bench/README.md).
DEFAULT_PREFILL_CHUNK_SIZE = 512
# max_batch_size "auto": as many rows as the KV plan holds at AUTO_ROW_TOKENS each, capped where a bigger batch stops
# paying (a CPU's decode step is compute-bound well before a GPU's).
AUTO_ROW_TOKENS = 512
AUTO_MAX_ROWS_CPU = 64
AUTO_MAX_ROWS_GPU = 256


class PromptError(ValueError):
    """A job that cannot run as asked; answered with 422 and this message."""


class GenerationEngine(ModelEngine):
    model_type = "generation"
    serves_loras = True

    def __init__(self, config: ReaderConfig, repository_path: str | Path = "./artefacts",
                 model_path: str | Path | None = None) -> None:
        super().__init__(config, repository_path, model_path)
        self.scheduler: Scheduler | None = None
        self.kv_plan: KVPlan | None = None
        self.grammars: Grammars | None = None
        self.tool_markers: frozenset[int] = frozenset()  # the tool-call markers kept in a tool request's text
        self.lora: LoraAdapters | None = None
        self._removed: set[str] = set()  # adapters removed while rows still run with them
        self._loop: asyncio.AbstractEventLoop | None = None
        self._requests: dict[str, Request] = {}

    # --- loading ----------------------------------------------------------------------------------------------------
    async def load(self) -> None:
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from liftoff.readers.engines.load_options import loaded_label, model_load_options

        device = self.settle_device()
        path = self.resolved_path()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa",
                                                         **model_load_options(self.config, device, path))
            self.loaded_dtype = loaded_label(model)
        except (OSError, ValueError, KeyError) as exc:
            raise EngineLoadError(f"{str(path)!r} could not be loaded as a causal language model: {exc}") from exc
        self.model = model.to(device).eval()
        text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.settle_max_length(text_config)
        eos = end_of_sequence_ids(model, self.tokenizer, path)
        vocab = model.get_output_embeddings().weight.shape[0]
        self.grammars = Grammars(self.tokenizer, vocab, sorted(eos))
        if self.grammars.available:  # the grammar engine's view of the vocabulary, and its first compile (which
            self.grammars.warm_up()   # pays for lazily built tables): at load, not on the first constrained request
        self.tool_markers = self.tool_marker_ids()
        self.lora = LoraAdapters(self.model, self.repository_path, self.config.access_token)
        for name, source in parse_loras(self.config.loras).items():  # before the KV plan: their memory is taken
            self.lora.attach(self.lora.read(name, source))
        self.scheduler = self._plan_scheduler(device, sorted(eos), vocab)
        self.scheduler.start()
        torch.set_grad_enabled(False)
        self._sampling = read_sampling_defaults(path)

    def sampling_defaults(self) -> dict[str, float] | None:
        return self._sampling

    def _plan_scheduler(self, device: Any, eos: list[int], vocab: int) -> Scheduler:
        """Plan the KV memory from page_cache_size and the model's shape, size the batch from it when
        max_batch_size is "auto", and build the scheduler over that plan."""
        cfg = self.config
        shape = ModelShape.of(self.model.config, next(self.model.parameters()).dtype)
        rows_cap = cfg.batch_slots(AUTO_MAX_ROWS_GPU if device.type == "cuda" else AUTO_MAX_ROWS_CPU)
        try:
            plan = plan_kv(shape, cfg.page_cache_size, device, most_tokens=rows_cap * self.max_length)
        except ValueError as exc:
            raise EngineLoadError(str(exc)) from exc
        if cfg.max_batch_size == "auto":
            self.max_batch_size = max(1, min(rows_cap, plan.tokens // min(AUTO_ROW_TOKENS, self.max_length)))
        chunk = DEFAULT_PREFILL_CHUNK_SIZE if cfg.prefill_chunk_size is None else cfg.prefill_chunk_size
        blocks = BlockManager(plan.num_blocks, plan.block_size, prefix_caching=cfg.prefix_cache_on)
        kv = PagedKVCache(plan, shape, device)
        log.info("generation model %s on %s: max_length %d, %d slots; KV plan %d blocks of %d tokens (%d tokens, "
                 "%.0f MiB of page_cache_size %s), prefill chunk %s, prefix cache %s, weights %s", self.model_path,
                 device, self.max_length, self.max_batch_size, plan.num_blocks, plan.block_size, plan.tokens,
                 plan.bytes / 2**20, plan.source, chunk or "off", "on" if blocks.prefix_caching else "off",
                 self.loaded_dtype)
        self.kv_plan = plan
        return Scheduler(self.model, self.tokenizer, device, self.max_batch_size, self.max_length, eos, vocab,
                         self._emit, kv, blocks, chunk, group=cfg.consumer_group, lora=self.lora)

    def last_progress(self) -> float | None:
        """When the scheduler last entered one of the model's modules (or began an iteration): the liveness beats'
        source."""
        return self.scheduler.progress_at if self.scheduler is not None else None

    def tokens_per_s(self) -> float | None:
        s = self.scheduler
        return s.decoded_tokens / s.decode_s if s is not None and s.decode_s > 1.0 else None

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.close()

    # --- LoRA adapters ----------------------------------------------------------------------------------------------
    def adapters(self) -> list[dict[str, Any]]:
        """The adapters requests may pick (`lora_id`), for the registry, /status and /config."""
        return [v for v in self.lora.views() if v["name"] not in self._removed] if self.lora is not None else []

    def adapter_names(self) -> list[str]:
        return [a["name"] for a in self.adapters()]

    async def adapter_op(self, kind: str, args: dict[str, Any]) -> dict[str, Any]:
        """`lora_add` {name, source} → the adapter's view; `lora_remove` {name} → {removed: name}."""
        if self.lora is None or self.scheduler is None:
            raise EngineRequestError(503, "the generation engine is not loaded")
        name = args.get("name")
        try:
            check_adapter_name(name if isinstance(name, str) else repr(name), "name")
        except ValueError as exc:
            raise EngineRequestError(400, str(exc)) from None
        if kind == "lora_remove":
            if name not in self.adapter_names():
                raise EngineRequestError(404, f"no LoRA adapter {name!r} on this reader; loaded: "
                                         f"{self.adapter_names()}")
            self._removed.add(name)
            self.scheduler.detach(name)
            return {"removed": name}
        source = args.get("source")
        if not isinstance(source, str) or not source.strip():
            raise EngineRequestError(400, "source: the adapter's directory, a name in repository_path or a hub id")
        if name in self.lora.loaded:
            raise EngineRequestError(409, f"a LoRA adapter named {name!r} is already loaded"
                                     + (" (its removal waits for its last rows)" if name in self._removed else ""))
        lora = self.lora
        try:
            files = await asyncio.to_thread(lora.read, name, source.strip())
            adapter = await asyncio.wrap_future(self.scheduler.call(lambda: lora.attach(files)))
        except EngineLoadError as exc:
            raise EngineRequestError(422, str(exc)) from None
        self._removed.discard(name)
        return adapter.view()

    # --- serving ----------------------------------------------------------------------------------------------------
    async def run(self, jobs: list[Job], sink: ReplySink) -> None:
        if self.scheduler is None:
            raise RuntimeError("the generation engine is not loaded")
        self._loop = asyncio.get_running_loop()
        prepared = await asyncio.to_thread(self._prepare_all, jobs)
        requests: list[Request] = []
        rows: list[Row] = []
        for job, outcome in zip(jobs, prepared, strict=True):
            if isinstance(outcome, tuple):
                sink.error(job, *outcome)
                continue
            request = outcome[0].request
            request.sink, request.future = sink, self._loop.create_future()
            self._requests[job.item.id] = request
            requests.append(request)
            rows.extend(outcome)
        if not requests:
            return
        self.scheduler.submit(rows)
        try:
            await asyncio.gather(*(r.future for r in requests))
        except asyncio.CancelledError:
            for request in requests:
                self.scheduler.cancel(request, "the reader stopped before the generation finished")
            raise
        finally:
            for request in requests:
                self._requests.pop(request.job.item.id, None)

    def cancel(self, request_id: str, reason: str = "cancelled by the client") -> bool:
        """Stop generating for a request (its client went away); its job ends with a 499 error. False if unknown."""
        request = self._requests.get(request_id)
        if request is None or self.scheduler is None:
            return False
        self.scheduler.cancel(request, reason)
        return True

    def _emit(self, events: list[Event]) -> None:
        """Called on the scheduler thread; the replies are written on the event loop."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._deliver, events)

    def _deliver(self, events: list[Event]) -> None:
        for event in events:
            request: Request = event[1]
            job = request.job
            if job.finished:
                continue
            if event[0] == "token":
                request.sink.token(job, event[2], event[3], event[4] or None)
                continue
            try:
                if event[0] == "done":
                    texts = None if job.item.stream else request.texts
                    metrics.observe_job_metadata(job.group, request.metadata)
                    request.sink.done(job, texts, request.metadata if job.item.params.return_metadata else None,
                                      logprobs=request.logprobs)
                else:
                    request.sink.error(job, event[2], event[3])
            finally:
                if not request.future.done():
                    request.future.set_result(None)

    # --- preparing jobs ---------------------------------------------------------------------------------------------
    def _prepare_all(self, jobs: list[Job]) -> list[list[Row] | tuple[int, str]]:
        out: list[list[Row] | tuple[int, str]] = []
        for job in jobs:
            try:
                out.append(self._prepare(job))
            except PromptError as exc:
                out.append((422, str(exc)))
            except EngineRequestError as exc:
                out.append((exc.status, str(exc)))
        return out

    def _prepare(self, job: Job) -> list[Row]:
        item, params = job.item, job.item.params
        texts = self.prompt_texts(item)
        if not texts:
            raise PromptError("text: no prompt given")
        adapter = params.lora_id or None
        loaded = self.lora.loaded.get(adapter) if adapter is not None and self.lora is not None else None
        if adapter is not None and (loaded is None or adapter in self._removed):
            raise EngineRequestError(404, f"lora_id: no LoRA adapter {adapter!r} on this reader; loaded adapters: "
                                     f"{self.adapter_names()}")
        if params.use_chat_template and not self.has_chat_template():
            raise PromptError("use_chat_template: this model's tokenizer has no chat template")
        if constrained(params) and not (self.grammars and self.grammars.available):
            raise PromptError("json_schema / regex_string / lark_grammar: constrained decoding is not supported by "
                              "this reader")
        sampling = RowSampling(params.sampling_temperature, params.sampling_topk, params.sampling_topp,
                               params.repetition_penalty, params.seed)
        request = Request(job=job, sink=None, rows_left=len(texts), texts=[""] * len(texts),
                          metadata=[{} for _ in texts],
                          logprobs=None if params.logprobs is None or item.stream else [[] for _ in texts])
        keep = self.tool_markers if item.tools else frozenset()  # the parser must see its markers
        rows = []
        for index, text in enumerate(texts):
            ids = self.templated_ids(text) if item.chats is not None else \
                self.tokenize_ids(text, use_chat_template=params.use_chat_template)
            prompt = self._prompt_ids(ids, params.prompt_max_tokens, index, len(texts))
            grammar = self._row_grammar(params)
            rows.append(Row(
                request=request, index=index, prompt=prompt,
                sampling=sampling if params.seed is None else replace(sampling, seed=params.seed + index),
                max_new=max(1, params.max_new_tokens), min_new=max(0, params.min_new_tokens), stream=item.stream,
                no_repeat=NoRepeatNGrams(params.no_repeat_ngram_size, prompt) if params.no_repeat_ngram_size > 0
                else None,
                grammar=grammar,
                detok=None if not (item.stream or params.logprobs is not None or params.stop) else
                grammar.detokenizer() if grammar is not None else IncrementalDetokenizer(self.tokenizer, keep),
                stops=tuple(params.stop or ()),
                keep=keep,
                logprobs=params.logprobs,
                adapter=adapter,
                root=loaded.root if loaded is not None else b"",
            ))
            self._check_fits(rows[-1], index, len(texts))
        return rows

    def _row_grammar(self, params: GenerationParams) -> RowGrammar | None:
        """A row's grammar state, the grammar compiled (or taken from the engine's cache) here, on the helper
        thread that prepares jobs, never on the scheduler's."""
        if not constrained(params):
            return None
        assert self.grammars is not None
        try:
            return self.grammars.row(params)
        except ValueError as exc:
            raise PromptError(str(exc)) from exc

    def _check_fits(self, row: Row, index: int, count: int) -> None:
        assert self.scheduler is not None and self.kv_plan is not None
        if not self.scheduler.fits(row):
            where = f"text[{index}]" if count > 1 else "text"
            need = row.kv_tokens(self.max_length)
            capped = f", capped by max_sequence_length {self.max_length}" if need == self.max_length else ""
            raise PromptError(
                f"{where}: the request needs KV memory for {need} tokens ({len(row.prompt)} prompt + up to "
                f"{row.max_new} new{capped}) but this reader's KV cache holds {self.kv_plan.tokens} tokens "
                "(page_cache_size); shorten the prompt or lower max_new_tokens"
            )

    def _prompt_ids(self, ids: list[int], keep_last: int | None, index: int, count: int) -> list[int]:
        where = f"text[{index}]" if count > 1 else "text"
        if keep_last is not None and keep_last > 0:
            ids = ids[-keep_last:]
        if not ids:
            bos = self.tokenizer.bos_token_id
            if bos is None:
                raise PromptError(f"{where}: the prompt is empty")
            ids = [bos]
        if len(ids) > self.max_length:
            raise PromptError(
                f"{where}: the prompt has {len(ids)} tokens but this reader's max_sequence_length is "
                f"{self.max_length} tokens; shorten the prompt or set prompt_max_tokens"
            )
        return ids


SAMPLING_FIELDS = ("temperature", "top_p", "top_k")


def read_sampling_defaults(path: Path) -> dict[str, float] | None:
    """The sampling fields `generation_config.json` writes out (what the model's makers chose; a field transformers
    merely defaults is not in the file), for requests that set none (as vLLM takes them)."""
    try:
        config = json.loads((Path(path) / "generation_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or config.get("do_sample") is False:
        return None  # greedy by the model's own word is what it means without sampling fields too
    found = {k: float(config[k]) for k in SAMPLING_FIELDS if isinstance(config.get(k), int | float)}
    return found or None
