"""Constrained decoding (`json_schema`, `regex_string`) with lm-format-enforcer, one token enforcer per row.

lm-format-enforcer is pure Python (its only compiled-free dependency is `interegular`), so it installs on any
machine, CPU-only included. The tokenizer's prefix tree is built once per engine, off the scheduler thread, on the
first constrained request. When the library is missing, `available` is False and the engine answers constrained
requests with 422.
"""

from __future__ import annotations

import json
import threading
from typing import Any

from liftoff.core.wire import GenerationParams

try:
    from lmformatenforcer import JsonSchemaParser, RegexParser, TokenEnforcer, TokenEnforcerTokenizerData
except ImportError:  # pragma: no cover — optional dependency
    TokenEnforcer = None  # type: ignore[assignment,misc]

BACKEND = "lm-format-enforcer"
REPLACEMENT = "\ufffd"


def constrained(params: GenerationParams) -> bool:
    return bool(params.regex_string) or params.json_schema is not None


class Grammars:
    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._data: Any = None
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        return TokenEnforcer is not None

    def enforcer(self, params: GenerationParams) -> Any:
        """A fresh token enforcer for one row; ValueError when the schema or regex is unusable."""
        if params.regex_string:
            try:
                parser = RegexParser(params.regex_string)
            except Exception as exc:  # interegular raises its own parse errors
                raise ValueError(f"regex_string is not a usable regular expression: {exc}") from exc
        else:
            schema = params.json_schema
            if isinstance(schema, str):
                try:
                    schema = json.loads(schema)
                except ValueError as exc:
                    raise ValueError(f"json_schema is not valid JSON: {exc}") from exc
            if not isinstance(schema, dict):
                raise ValueError("json_schema must be a JSON object (a JSON schema)")
            try:
                parser = JsonSchemaParser(schema)
            except Exception as exc:
                raise ValueError(f"json_schema is not a usable schema: {exc}") from exc
        return TokenEnforcer(self._tokenizer_data(), parser)

    def _tokenizer_data(self) -> Any:
        with self._lock:
            if self._data is None:
                self._data = tokenizer_data(self._tokenizer)
            return self._data


def tokenizer_data(tokenizer: Any) -> Any:
    """lm-format-enforcer's view of a Hugging Face tokenizer. Its own transformers integration imports modules that
    transformers 5 moved, so the (small) construction is done here: every regular token's text, decoded after a
    reference token so that a word-start token keeps its leading space."""
    vocab_size = len(tokenizer)
    special = set(tokenizer.all_special_ids)
    zero = tokenizer.encode("0", add_special_tokens=False)[-1]

    def decode(ids: list[int]) -> str:
        return tokenizer.decode(ids, clean_up_tokenization_spaces=False).rstrip(REPLACEMENT)

    regular = []
    for token_id in range(vocab_size):
        if token_id in special:
            continue
        after_zero = tokenizer.decode([zero, token_id], clean_up_tokenization_spaces=False)[1:]
        alone = tokenizer.decode([token_id], clean_up_tokenization_spaces=False)
        regular.append((token_id, after_zero, len(after_zero) > len(alone)))
    return TokenEnforcerTokenizerData(regular, decode, tokenizer.eos_token_id, False, vocab_size)


def allowed_tokens(enforcer: Any, generated: list[int]) -> list[int]:
    return list(enforcer.get_allowed_tokens(generated).allowed_tokens)
