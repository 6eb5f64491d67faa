"""Engines turn jobs into replies. The reader loop owns Redis; engines own the model (and torch, when they use it)."""

from __future__ import annotations

from liftoff.settings import ReaderConfig
from readers.engines.base import Engine, EngineLoadError
from readers.engines.echo import EchoEngine

__all__ = ["Engine", "EngineLoadError", "load_engine"]


def load_engine(config: ReaderConfig, echo: bool) -> Engine:
    """The engine for a reader. `echo` (the server setting) forces the echo engine for every reader."""
    if echo or config.model_name == "echo":
        return EchoEngine(config)
    raise EngineLoadError(
        f"model {config.model_name!r}: no engine can serve it in this build (only the 'echo' engine is available)"
    )
