"""Engines turn jobs into replies. The reader loop owns Redis; engines own the model (and torch, when they use it).

Model engines import torch and transformers lazily, so that the echo engine (and everything that only needs the
serving path) runs without them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from liftoff.core.reader_config import ReaderConfig
from liftoff.readers.engines.base import Engine, EngineLoadError
from liftoff.readers.engines.echo import EchoEngine

__all__ = ["Engine", "EngineLoadError", "load_engine"]


async def load_engine(config: ReaderConfig, echo: bool, repository_path: str,
                      progress: Callable[[str], None] | None = None) -> Engine:
    """The engine for a reader, not yet loaded. `echo` (the server setting) forces the echo engine everywhere.

    Resolving the model may download it into `repository_path`, so it runs off the event loop: the reader keeps
    heartbeating (as `loading`) meanwhile, and `progress` hears what a long step (a GGUF conversion) is doing.
    """
    if echo or config.model_name == "echo":
        return EchoEngine(config)
    from liftoff.readers.engines.models import detect_model_type, resolve_model

    path = await asyncio.to_thread(resolve_model, config.model_name, repository_path, config.access_token, progress)
    model_type = detect_model_type(path, config.model_type)
    if model_type == "generation":
        from liftoff.readers.engines.generation import GenerationEngine as cls
    elif model_type == "image-to-text":
        from liftoff.readers.engines.image_to_text import ImageToTextEngine as cls  # type: ignore[assignment]
    elif model_type == "embedding":
        from liftoff.readers.engines.embedding import EmbeddingEngine as cls  # type: ignore[assignment]
    else:
        from liftoff.readers.engines.classification import ClassificationEngine as cls  # type: ignore[assignment]
    return cls(config, repository_path=repository_path, model_path=path)
