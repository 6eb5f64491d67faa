"""The engine interface the reader loop drives."""

from __future__ import annotations

import abc
from typing import Any

from liftoff.core.reader_config import ReaderConfig
from liftoff.core.wire import WorkItem
from liftoff.readers.jobs import Job
from liftoff.readers.replies import ReplySink


class EngineLoadError(RuntimeError):
    """The model cannot be loaded; the reader reports the reason and exits without a restart loop."""


def failure_reason(exc: BaseException) -> str:
    """A failure of a library in one line, for an `EngineLoadError`: its kind and the first line of its message."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


class Engine(abc.ABC):
    model_type: str = "generation"
    kinds: frozenset[str] = frozenset({"generate"})  # the WorkItem kinds run() serves
    takes_images: bool = False  # whether run() serves work items with `images` (the reader refuses them otherwise)
    device: str = "cpu"

    def __init__(self, config: ReaderConfig) -> None:
        self.config = config
        self.max_batch_size = config.batch_slots()  # engines that plan their own memory resolve "auto" at load

    async def load(self) -> None:  # noqa: B027 — engines without weights need not override it
        """Load weights. Runs before the reader turns live."""

    def tokens_per_s(self) -> float | None:
        """Decode speed reached so far (generated tokens per second of decoding), for the fit engine's calibration."""
        return None

    def last_progress(self) -> float | None:
        """The `time.monotonic()` of this engine's last sign of progress on its work (a model step, a layer of
        one), or None when the engine gives no such signal.

        The reader keeps the streams it is working on alive at the gateway (`alive` replies, liftoff.readers.liveness)
        only
        while this is None or no older than reader_message_timeout_ms: an engine whose step hangs goes silent and
        its streams are timed out. Called on the event loop thread, possibly while the engine's own threads run, so
        it must be cheap and must not lock (reading one float attribute is enough). An engine that answers None is
        taken as progressing whenever the reader's event loop runs.
        """
        return None

    def close(self) -> None:  # noqa: B027 — engines without threads or devices need not override it
        """Release threads and devices; called once the reader has drained."""

    @abc.abstractmethod
    async def run(self, jobs: list[Job], sink: ReplySink) -> None:
        """Serve `jobs`; every job must end with exactly one `sink.done` or `sink.error`."""

    def tokenizer_op(self, kind: str, args: dict[str, Any]) -> dict[str, Any]:
        """`tokenize` → {tokens, tokens_count}; `detokenize` → {text}; `chat_template` → {messages}."""
        raise EngineRequestError(400, f"this reader's engine ({type(self).__name__}) has no tokenizer")

    def adapters(self) -> list[dict[str, Any]]:
        """The LoRA adapters loaded (liftoff.readers.engines.lora.Adapter.view); none for engines that take none."""
        return []

    async def adapter_op(self, kind: str, args: dict[str, Any]) -> dict[str, Any]:
        """`lora_add` / `lora_remove` (liftoff.core.wire.ADAPTER_KINDS)."""
        raise EngineRequestError(400, f"this reader's engine ({type(self).__name__}) serves no LoRA adapters")

    def tool_call_parser(self) -> str | None:
        """The format this engine's model writes tool calls in (liftoff.core.tool_calls.PARSERS), or None."""
        return None

    def sampling_defaults(self) -> dict[str, float] | None:
        """The sampling its model's `generation_config.json` sets (temperature, top_p, top_k), which the OpenAI-style
        ports use where a request sets none; None when it sets none."""
        return None


    def prompt_texts(self, item: WorkItem) -> list[str]:
        """A generate item's prompts: its texts, or its chats rendered by the model's chat template (one hop for the
        OpenAI port's chat: the gateway need not ask a reader for the rendering first). EngineRequestError(422)
        when a conversation can't be rendered."""
        if item.chats is None:
            return item.texts
        args: dict[str, Any] = {"inputs": item.chats, "add_generation_prompt": item.add_generation_prompt}
        if item.tools:
            args["tools"] = item.tools
        return list(self.tokenizer_op("chat_template", args)["messages"])


class EngineRequestError(Exception):
    """A request this engine cannot serve as asked; `status` is the HTTP status its client gets."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
