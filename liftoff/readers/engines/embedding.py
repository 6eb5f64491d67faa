"""The embedding engine: sentence-transformers models, dynamically batched.

Result per job: one vector (list of floats) per input text, `sink.done(job, None, None, result=vectors)`. Inputs
longer than the model's (or the reader's `max_sequence_length`) limit are truncated, as sentence-transformers does.
"""

from __future__ import annotations

import logging

from liftoff.readers.engines.base import EngineLoadError
from liftoff.readers.engines.model_engine import BatchedModelEngine

log = logging.getLogger(__name__)


class EmbeddingEngine(BatchedModelEngine):
    model_type = "embedding"
    thread_name = "liftoff-embed"
    task, task_noun = "embed", "embedding"
    kinds = frozenset({"embed"})

    def _load(self) -> None:
        from sentence_transformers import SentenceTransformer

        from liftoff.readers.engines.load_options import loaded_label, model_load_options

        device = self.settle_device()
        path = self.resolved_path()
        options = model_load_options(self.config, device, path)
        try:
            self.model = SentenceTransformer(str(path), device=str(device), local_files_only=True,
                                             model_kwargs=options)
        except (OSError, ValueError, KeyError) as exc:
            raise EngineLoadError(f"{str(path)!r} could not be loaded as a sentence-transformers model: {exc}") from exc
        self.loaded_dtype = loaded_label(self.model)
        if self.config.max_sequence_length:
            self.model.max_seq_length = min(self.model.max_seq_length or 10**9, self.config.max_sequence_length)
        self.tokenizer = self.model.tokenizer
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        log.info("embedding model %s on %s, %s (dimension %s)", path, device, self.loaded_dtype, dimension())

    async def process_batch(self, texts: list[str]) -> list[list[float]]:
        return await self._thread.call(self._encode_sync, texts)

    def _encode_sync(self, texts: list[str]) -> list[list[float]]:
        # sentence-transformers tokenizes inside encode, with the tokenizer itself (not this engine's locked view of
        # it): the whole call holds the tokenizer's lock, so the event loop's tokenizer work waits for the batch.
        with self.tokenizer.lock:
            vectors = self.model.encode(texts, batch_size=max(len(texts), 1), convert_to_numpy=True,
                                        show_progress_bar=False)
        return vectors.astype("float32").tolist()

    def encode(self, texts: list[str]) -> list[list[float]]:
        """Synchronous encode on the calling thread (benchmarks and tools)."""
        import torch

        with torch.inference_mode():
            return self._encode_sync(texts)
