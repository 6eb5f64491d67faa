"""What every engine that holds a Hugging Face model shares: where the model is, the device it lands on, and what
it loaded as (`loaded_dtype`, set by each engine's load from liftoff.readers.engines.load_options.loaded_label)."""

from __future__ import annotations

import abc
import asyncio
import logging
from pathlib import Path
from typing import Any

from liftoff.core import metrics
from liftoff.core.reader_config import ReaderConfig
from liftoff.readers.engines.base import Engine, EngineLoadError
from liftoff.readers.engines.batching import DynamicBatcher
from liftoff.readers.engines.models import resolve_model
from liftoff.readers.engines.tokenizer_tools import TokenizerHelpers
from liftoff.readers.jobs import Job
from liftoff.readers.replies import ReplySink

log = logging.getLogger(__name__)


class ModelEngine(TokenizerHelpers, Engine):
    serves_loras = False  # whether the `loras` setting (LoRA adapters, liftoff.readers.engines.lora) applies
    default_max_length = 2048  # the longest sequence before load, and where the model names none (settle_max_length)

    def __init__(self, config: ReaderConfig, repository_path: str | Path = "./artefacts",
                 model_path: str | Path | None = None) -> None:
        super().__init__(config)
        if config.loras and not self.serves_loras:
            raise EngineLoadError(f"loras: this reader's model is served by the {type(self).__name__}, which takes no "
                                  "LoRA adapters (generation readers do); remove loras from its settings")
        self.repository_path = repository_path
        self.model_path = Path(model_path) if model_path is not None else None
        self.device = config.device  # the configured one until load() settles it
        self.model: Any = None
        self.tokenizer = None
        # What the loaded weights are, read from the model: "F32", "BF16", "F16", "INT8", ...; None until loaded.
        self.loaded_dtype: str | None = None
        self.max_length = self.default_max_length

    def settle_max_length(self, model_config: Any) -> None:
        """The longest sequence this reader runs: the model's max_position_embeddings (default_max_length where its
        config names none), capped by the max_sequence_length setting."""
        limit = getattr(model_config, "max_position_embeddings", None) or self.default_max_length
        self.max_length = min(self.config.max_sequence_length or limit, limit)

    def settle_device(self) -> Any:
        """Apply the CPU thread setting and pick the torch device this reader runs on (call from load's thread)."""
        from liftoff.readers.engines.torch_device import configure_threads, pick_device

        configure_threads()
        device = pick_device(self.config.device)
        self.device = str(device)
        return device

    def resolved_path(self) -> Path:
        """The model's directory; resolving may download it, so call this off the event loop (from load)."""
        if self.model_path is None:
            self.model_path = resolve_model(self.config.model_name, self.repository_path, self.config.access_token)
        return self.model_path


def end_of_sequence_ids(model: Any, tokenizer: Any, path: Path) -> frozenset[int]:
    """The tokens a generating model stops at: its generation config's and its tokenizer's end-of-sequence ids;
    EngineLoadError when neither names one."""
    ids = frozenset(_ids(model.generation_config.eos_token_id) | _ids(tokenizer.eos_token_id))
    if not ids:
        raise EngineLoadError(f"{str(path)!r}: the model and tokenizer name no end-of-sequence token")
    return ids


def _ids(value: Any) -> set[int]:
    if value is None:
        return set()
    if isinstance(value, int):
        return {value}
    return {int(v) for v in value}


class BatchedModelEngine(ModelEngine):
    """Engines that answer a whole batch in one call (embeddings, classification): requests arriving within
    batch_duration_millis are merged, up to max_batch_size inputs, and run on one torch thread."""

    thread_name = "liftoff-batch"

    def __init__(self, config: ReaderConfig, repository_path: str | Path = "./artefacts",
                 model_path: str | Path | None = None) -> None:
        super().__init__(config, repository_path, model_path)
        self._thread: Any = None
        self._batcher: DynamicBatcher | None = None

    async def load(self) -> None:
        from liftoff.readers.engines.torch_device import TorchThread

        await asyncio.to_thread(self._load)
        self._thread = TorchThread(self.thread_name)
        self._batcher = DynamicBatcher(self.max_batch_size, self.config.batch_duration_millis, self.process_batch)

    @abc.abstractmethod
    def _load(self) -> None:
        """Load the model (runs off the event loop)."""

    @abc.abstractmethod
    async def process_batch(self, inputs: list[Any]) -> list[Any]:
        """One result per input, in order."""

    # The engine's work in messages: "nothing to embed", "embedding failed" (the verb and its noun).
    task, task_noun = "process", "processing"

    def job_inputs(self, job: Job) -> list[Any] | str:
        """The job's inputs for `process_batch`, or why they are not acceptable (a 422)."""
        return list(job.item.texts)

    async def run(self, jobs: list[Job], sink: ReplySink) -> None:
        assert self._batcher is not None, f"the {self.task_noun} engine is not loaded"
        await asyncio.gather(*(self._one(job, sink) for job in jobs))

    async def _one(self, job: Job, sink: ReplySink) -> None:
        """A job through the batcher: cancelled (499), nothing to do or bad inputs (422), failed (500), or done."""
        if job.cancelled:
            sink.error(job, 499, "cancelled by the client")
            return
        inputs = self.job_inputs(job)
        if isinstance(inputs, str) or not inputs:
            sink.error(job, 422, inputs if isinstance(inputs, str) else f"text: nothing to {self.task}")
            return
        assert self._batcher is not None
        try:
            result = await self._batcher.submit(inputs)
        except Exception as exc:
            log.exception("%s batch failed", self.task_noun)
            sink.error(job, 500, f"{self.task_noun} failed: {type(exc).__name__}: {exc}")
            return
        metrics.observe_job(job.group, (job.started_ms - job.item.enqueued_ms) / 1000, batch_size=len(inputs))
        sink.done(job, None, None, result=result)
