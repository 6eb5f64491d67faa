"""The classification engine: Hugging Face sequence classifiers and cross-encoders (rerankers), dynamically batched.

Inputs are `job.item.texts` (single texts) or `job.item.pairs` (text pairs, for cross-encoders). Result per input:
`{"label": str, "score": float, "scores": {label: score}}`: softmax over the labels, or for a one-logit model
(a reranker) the sigmoid of that logit under its single label.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from liftoff.core.reader_config import ReaderConfig
from liftoff.readers.engines.base import EngineLoadError
from liftoff.readers.engines.model_engine import BatchedModelEngine
from liftoff.readers.jobs import Job

log = logging.getLogger(__name__)

ClassifyInput = str | tuple[str, str]


class ClassificationEngine(BatchedModelEngine):
    model_type = "classification"
    thread_name = "liftoff-classify"
    task, task_noun = "classify", "classification"
    kinds = frozenset({"classify"})
    default_max_length = 512

    def __init__(self, config: ReaderConfig, repository_path: str | Path = "./artefacts",
                 model_path: str | Path | None = None) -> None:
        super().__init__(config, repository_path, model_path)
        self.labels: list[str] = []

    def _load(self) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from liftoff.readers.engines.load_options import loaded_label, model_load_options

        device = self.settle_device()
        path = self.resolved_path()
        options = model_load_options(self.config, device, path)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            model = AutoModelForSequenceClassification.from_pretrained(path, **options)
        except (OSError, ValueError, KeyError) as exc:
            raise EngineLoadError(f"{str(path)!r} could not be loaded as a sequence classifier: {exc}") from exc
        self.model = model.to(device).eval()
        self.loaded_dtype = loaded_label(self.model)
        id2label = model.config.id2label or {}
        self.labels = [str(id2label.get(i, f"LABEL_{i}")) for i in range(model.config.num_labels)]
        self.settle_max_length(model.config)
        log.info("classification model %s on %s, %s (labels %s)", path, device, self.loaded_dtype, self.labels)

    async def process_batch(self, inputs: list[ClassifyInput]) -> list[dict[str, Any]]:
        return await self._thread.call(self._classify_sync, inputs)

    def _classify_sync(self, inputs: list[ClassifyInput]) -> list[dict[str, Any]]:
        import torch

        results: list[dict[str, Any] | None] = [None] * len(inputs)
        singles = [i for i, x in enumerate(inputs) if isinstance(x, str)]
        pairs = [i for i, x in enumerate(inputs) if not isinstance(x, str)]
        for group in (singles, pairs):
            if not group:
                continue
            if group is singles:
                encoded = self.tokenizer([inputs[i] for i in group], padding=True, truncation=True,
                                         max_length=self.max_length, return_tensors="pt")
            else:
                encoded = self.tokenizer([inputs[i][0] for i in group], [inputs[i][1] for i in group],
                                         padding=True, truncation=True, max_length=self.max_length,
                                         return_tensors="pt")
            logits = self.model(**encoded.to(self.model.device)).logits.float()
            probs = torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=-1)
            for i, row in zip(group, probs.tolist(), strict=True):
                scores = dict(zip(self.labels, row, strict=True))
                best = max(range(len(row)), key=row.__getitem__)
                results[i] = {"label": self.labels[best], "score": row[best], "scores": scores}
        return results  # type: ignore[return-value]

    def job_inputs(self, job: Job) -> list[Any] | str:
        item = job.item
        if not item.pairs:
            return list(item.texts)
        bad = [i for i, pair in enumerate(item.pairs) if len(pair) != 2]
        if bad:
            return f"text[{bad[0]}]: a pair must hold exactly two texts"
        return [(a, b) for a, b in item.pairs]
