"""The engine interface the reader loop drives."""

from __future__ import annotations

import abc

from liftoff.settings import ReaderConfig
from readers.jobs import Job
from readers.replies import ReplySink


class EngineLoadError(RuntimeError):
    """The model cannot be loaded; the reader reports the reason and exits without a restart loop."""


class Engine(abc.ABC):
    model_type: str = "generation"
    device: str = "cpu"

    def __init__(self, config: ReaderConfig) -> None:
        self.config = config
        self.max_batch_size = config.max_batch_size

    async def load(self) -> None:  # noqa: B027 — engines without weights need not override it
        """Load weights. Runs before the reader turns live."""

    @abc.abstractmethod
    async def run(self, jobs: list[Job], sink: ReplySink) -> None:
        """Serve `jobs`; every job must end with exactly one `sink.done` or `sink.error`."""
