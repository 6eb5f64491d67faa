"""The embedding engine: sentence-transformers models, dynamically batched.

Result per job: one vector (list of floats) per input text, `sink.done(job, None, None, result=vectors)`. Inputs
longer than the model's (or the reader's `max_sequence_length`) limit are truncated, as sentence-transformers does.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from liftoff import metrics
from liftoff.settings import ReaderConfig
from readers.engines.base import EngineLoadError
from readers.engines.batching import DynamicBatcher
from readers.engines.model_engine import ModelEngine
from readers.jobs import Job
from readers.replies import ReplySink

log = logging.getLogger(__name__)


class EmbeddingEngine(ModelEngine):
    model_type = "embedding"
    kinds = frozenset({"embed"})

    def __init__(self, config: ReaderConfig, repository_path: str | Path = "./artefacts",
                 model_path: str | Path | None = None) -> None:
        super().__init__(config, repository_path, model_path)
        self._thread: Any = None
        self._batcher: DynamicBatcher | None = None

    async def load(self) -> None:
        from readers.engines.torch_device import TorchThread

        await asyncio.to_thread(self._load)
        self._thread = TorchThread("liftoff-embed")
        self._batcher = DynamicBatcher(self.max_batch_size, self.config.batch_duration_millis, self._encode)

    def _load(self) -> None:
        from sentence_transformers import SentenceTransformer

        from readers.engines.torch_device import configure_threads, pick_device

        configure_threads()
        device = pick_device(self.config.device)
        self.device = str(device)
        path = self.resolved_path()
        try:
            self.model = SentenceTransformer(str(path), device=str(device), local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise EngineLoadError(f"{str(path)!r} could not be loaded as a sentence-transformers model: {exc}") from exc
        if device.type == "cuda":
            self.model.half()
        if self.config.max_sequence_length:
            self.model.max_seq_length = min(self.model.max_seq_length or 10**9, self.config.max_sequence_length)
        self.tokenizer = self.model.tokenizer
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        log.info("embedding model %s on %s (dimension %s)", path, device, dimension())

    async def _encode(self, texts: list[str]) -> list[list[float]]:
        return await self._thread.call(self._encode_sync, texts)

    def _encode_sync(self, texts: list[str]) -> list[list[float]]:
        vectors = self.model.encode(texts, batch_size=max(len(texts), 1), convert_to_numpy=True,
                                    show_progress_bar=False)
        return vectors.astype("float32").tolist()

    def encode(self, texts: list[str]) -> list[list[float]]:
        """Synchronous encode on the calling thread (benchmarks and tools)."""
        import torch

        with torch.inference_mode():
            return self._encode_sync(texts)

    async def run(self, jobs: list[Job], sink: ReplySink) -> None:
        assert self._batcher is not None, "the embedding engine is not loaded"
        await asyncio.gather(*(self._one(job, sink) for job in jobs))

    async def _one(self, job: Job, sink: ReplySink) -> None:
        if job.cancelled:
            sink.error(job, 499, "cancelled by the client")
            return
        if not job.item.texts:
            sink.error(job, 422, "text: nothing to embed")
            return
        try:
            vectors = await self._batcher.submit(job.item.texts)
        except Exception as exc:
            log.exception("embedding batch failed")
            sink.error(job, 500, f"embedding failed: {type(exc).__name__}: {exc}")
            return
        metrics.observe_job(job.group, (job.started_ms - job.item.enqueued_ms) / 1000, batch_size=len(job.item.texts))
        sink.done(job, None, None, result=vectors)
