"""The echo engine: "generates" the prompt back, token by token, so the whole serving path runs without a model."""

from __future__ import annotations

import re

from liftoff.wire import now_ms
from readers.engines.base import Engine
from readers.jobs import Job
from readers.replies import ReplySink

# A token is a run of whitespace followed by a run of non-whitespace (trailing whitespace is a token of its own),
# so that joining the tokens gives back the text exactly, newlines included.
_TOKEN = re.compile(r"\s*\S+|\s+")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text)


class EchoEngine(Engine):
    model_type = "generation"

    async def run(self, jobs: list[Job], sink: ReplySink) -> None:
        for job in jobs:
            params = job.item.params
            outputs, metadata = [], []
            for index, text in enumerate(job.item.texts):
                tokens = tokenize(text)
                if params.prompt_max_tokens is not None:
                    tokens = tokens[-params.prompt_max_tokens :]
                generated = tokens[: params.max_new_tokens]
                if job.item.stream:
                    for token in generated:
                        sink.token(job, index, token)
                outputs.append("".join(generated))
                metadata.append(
                    {
                        "prompt_tokens": len(tokens),
                        "generated_tokens": len(generated),
                        "finish_reason": "length" if len(generated) < len(tokens) else "stop",
                        "queue_ms": job.started_ms - job.item.enqueued_ms,
                        "time_to_first_token_ms": now_ms() - job.started_ms,
                    }
                )
            sink.done(job, None if job.item.stream else outputs, metadata if params.return_metadata else None)
