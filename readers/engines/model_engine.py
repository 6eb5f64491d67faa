"""What every engine that holds a Hugging Face model shares: where the model is and the device it lands on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from liftoff.settings import ReaderConfig
from readers.engines.base import Engine
from readers.engines.tokenizer_tools import TokenizerHelpers
from readers.models import resolve_model


class ModelEngine(TokenizerHelpers, Engine):
    def __init__(self, config: ReaderConfig, repository_path: str | Path = "./artefacts",
                 model_path: str | Path | None = None) -> None:
        super().__init__(config)
        self.repository_path = repository_path
        self.model_path = Path(model_path) if model_path is not None else None
        self.device = config.device  # the configured one until load() settles it
        self.model: Any = None
        self.tokenizer: Any = None

    def resolved_path(self) -> Path:
        """The model's directory; resolving may download it, so call this off the event loop (from load)."""
        if self.model_path is None:
            self.model_path = resolve_model(self.config.model_name, self.repository_path, self.config.access_token)
        return self.model_path
