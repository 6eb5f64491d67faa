"""The echo engine: "generates" the prompt back, token by token, so the whole serving path runs without a model.

It batches like a generation engine: every step emits the next token of every running request, requests that are
cancelled leave at the next step, and `echo_token_delay_ms` sets the pace of a step (0: as fast as possible).

Its pause between tokens is an asyncio sleep on the reader's event loop, so it has no progress signal of its own
(`last_progress` is None): while the loop runs it is working, and its streams are kept alive however slow its pace.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

from liftoff.core import metrics
from liftoff.core.wire import now_ms
from liftoff.readers.engines.base import Engine, EngineRequestError
from liftoff.readers.engines.logprobs import entry
from liftoff.readers.jobs import Job
from liftoff.readers.replies import ReplySink

CANCELLED_STATUS = 499

# A token is a run of whitespace followed by a run of non-whitespace (trailing whitespace is a token of its own),
# so that joining the tokens gives back the text exactly, newlines included.
_TOKEN = re.compile(r"\s*\S+|\s+")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text)


@dataclass(slots=True)
class _Row:
    """One running request: the tokens each of its texts will emit."""

    job: Job
    outputs: list[list[str]]
    prompt_tokens: list[int]
    step: int = 0
    first_token_ms: int | None = None

    @property
    def done(self) -> bool:
        return all(self.step >= len(out) for out in self.outputs)


class EchoEngine(Engine):
    model_type = "generation"

    async def run(self, jobs: list[Job], sink: ReplySink) -> None:
        rows = []
        for job in jobs:
            try:
                rows.append(self._row(job))
            except EngineRequestError as exc:
                sink.error(job, exc.status, str(exc))
        delay_s = self.config.echo_token_delay_ms / 1000
        while rows:
            for row in rows:
                if row.job.cancelled:
                    sink.error(row.job, CANCELLED_STATUS, "cancelled: the client went away")
                    continue
                if row.job.item.stream:
                    for index, out in enumerate(row.outputs):
                        if row.step < len(out):
                            token = out[row.step]
                            logprobs = None
                            if row.job.item.params.logprobs is not None:  # the offset only when it is asked for
                                logprobs = self._logprobs(row.job, [token], sum(len(t) for t in out[: row.step]))
                            sink.token(row.job, index, token, logprobs)
                if row.first_token_ms is None:
                    row.first_token_ms = now_ms()
                row.step += 1
                if row.done:
                    self._finish(row, sink)
            rows = [row for row in rows if not row.job.finished]
            if rows and delay_s > 0:
                await asyncio.sleep(delay_s)

    def tokenizer_op(self, kind: str, args: dict[str, Any]) -> dict[str, Any]:
        """The echo tokenizer: whitespace-led words; a chat is rendered as `role: content` lines."""
        if kind == "tokenize":
            tokens = tokenize(args["text"])
            return {"tokens": tokens, "tokens_count": len(tokens)}
        if kind == "detokenize":
            if any(not isinstance(t, str) for t in args["tokens"]):
                raise EngineRequestError(422, "the echo tokenizer has no token ids; send tokens as strings")
            return {"text": "".join(args["tokens"])}
        prompt = "assistant: " if args.get("add_generation_prompt", True) else ""
        try:
            chats = ["".join(f"{m['role']}: {m['content']}\n" for m in chat) + prompt for chat in args["inputs"]]
        except (KeyError, TypeError) as exc:
            raise EngineRequestError(422, f"chat_template: every message needs a role and a content ({exc})") from exc
        return {"messages": chats}

    def _row(self, job: Job) -> _Row:
        params = job.item.params
        outputs, prompt_tokens = [], []
        for text in self.prompt_texts(job.item):
            tokens = tokenize(text)
            if params.prompt_max_tokens is not None:
                tokens = tokens[-params.prompt_max_tokens :]
            prompt_tokens.append(len(tokens))
            outputs.append(tokens[: params.max_new_tokens])
        return _Row(job, outputs, prompt_tokens)

    def _finish(self, row: _Row, sink: ReplySink) -> None:
        job = row.job
        texts = ["".join(out) for out in row.outputs]
        metadata = [
            {
                "prompt_tokens": prompt,
                "generated_tokens": len(out),
                "finish_reason": "length" if len(out) < prompt else "stop",
                "queue_ms": job.started_ms - job.item.enqueued_ms,
                "time_to_first_token_ms": (row.first_token_ms or now_ms()) - job.started_ms,
            }
            for prompt, out in zip(row.prompt_tokens, row.outputs, strict=True)
        ]
        metrics.observe_job_metadata(job.group, metadata)
        logprobs = None if job.item.stream or job.item.params.logprobs is None else \
            [self._logprobs(job, out) or [] for out in row.outputs]
        sink.done(job, None if job.item.stream else texts, metadata if job.item.params.return_metadata else None,
                  logprobs=logprobs)

    @staticmethod
    def _logprobs(job: Job, tokens: list[str], offset: int = 0) -> list[dict[str, Any]] | None:
        """The echo "model" is certain of every token: log probability 0, and it is its own most likely one."""
        k = job.item.params.logprobs
        if k is None:
            return None
        out = []
        for token in tokens:
            out.append({**entry(token, 0.0, [(token, 0.0)] if k > 0 else []), "offset": offset})
            offset += len(token)
        return out
