"""Constrained decoding (`json_schema`, `regex_string`, `lark_grammar`, OpenAI `response_format`) with llguidance.

- **Per engine, once**: the tokenizer's view (every token's bytes, `grammar_tokens.TokenBytes`) and llguidance's
  `LLTokenizer` over it, built while the engine loads (so the first constrained request pays nothing more than the
  next).
- **Per schema, once**: the grammar compiled against that tokenizer (an `LLMatcher`), kept in an LRU cache of
  `CACHE_SIZE` (the key is the schema's JSON text or the regex). Compiling happens while the job is prepared, off
  the scheduler thread; each row gets a copy of the cached matcher (its own parser state, the compiled grammar
  shared).
- **Per step**: `GrammarMasks.fill` has llguidance write the masks of the rows that are constrained into one
  `[rows, ceil(vocab / 32)]` int32 bitmask (one call, which computes the rows in parallel in Rust with the GIL
  released); `sampling.SlotSampling.choose` unpacks it on the model's device and applies it to those rows' logits
  in one masked_fill. No Python touches the vocabulary per step. After the token is chosen each row's matcher
  consumes it (`RowGrammar.advance`).

A row ends with `stop` when the grammar is complete (nothing may follow) or it chose EOS where the grammar allowed
it, so a `stop` output always matches; a row cut by `max_new_tokens` ends with `length`.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from liftoff.core.grammar_check import backend_error, constraint_field, grammar_for
from liftoff.core.wire import GenerationParams
from liftoff.readers.engines.grammar_tokens import ByteDetokenizer, TokenBytes

CACHE_SIZE = 256  # compiled grammars kept per engine
BACKEND = "llguidance"

try:
    import llguidance
    from llguidance.torch import fill_next_token_bitmask_par
except ImportError:  # pragma: no cover — a declared dependency; a broken install answers constrained requests 422
    llguidance = None  # type: ignore[assignment]


def constrained(params: GenerationParams) -> bool:
    return bool(params.regex_string) or bool(params.lark_grammar) or params.json_schema is not None


@dataclass(eq=False, slots=True)
class RowGrammar:
    """One row's grammar state: its own matcher, and the bytes table its text is made from."""

    matcher: Any
    table: TokenBytes

    def advance(self, token: int) -> bool:
        """Consume the chosen token; False when the grammar refuses it (the mask makes that a bug)."""
        return bool(self.matcher.consume_token(token))

    @property
    def complete(self) -> bool:
        """Nothing may follow but EOS: the output is whole and valid."""
        return bool(self.matcher.is_stopped()) and not self.matcher.is_error()

    def detokenizer(self) -> ByteDetokenizer:
        return ByteDetokenizer(self.table)

    def text(self, ids: list[int]) -> str:
        return self.table.text(ids)


class Grammars:
    """One engine's grammar compiler and its cache of compiled grammars."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos_ids: list[int], cache_size: int = CACHE_SIZE) -> None:
        self._tokenizer = tokenizer
        self.vocab_size = vocab_size
        self._eos = list(eos_ids)
        self._cache_size = cache_size
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._view: tuple[TokenBytes, Any] | None = None
        self.hits = 0
        self.compiles = 0
        self.compile_s = 0.0

    @property
    def available(self) -> bool:
        return llguidance is not None

    def view(self) -> tuple[TokenBytes, Any]:
        """The token bytes table and llguidance's tokenizer over it (built once; about a second for 128k tokens)."""
        with self._lock:
            if self._view is None:
                table = TokenBytes(self._tokenizer, self.vocab_size)
                wrapper = _Wrapper(table, self._eos[0], getattr(self._tokenizer, "bos_token_id", None))
                lltok = llguidance.LLTokenizer(llguidance.TokenizerWrapper(wrapper), n_vocab=table.vocab_size,
                                               eos_token=self._eos)
                self._view = (table, lltok)
            return self._view

    def warm_up(self) -> None:
        """Build the view and compile one small schema (kept in the cache like any other), so that the first
        constrained request costs what the next ones do."""
        self.view()
        self.compiled(*grammar_for({"type": "object", "properties": {"a": {"type": "string"}}}, None), "json_schema")

    def row(self, params: GenerationParams) -> RowGrammar:
        """A fresh grammar state for one row; ValueError (answered 422) when the constraint cannot be used."""
        problem = backend_error(params.constrained_decoding_backend)
        if problem:
            raise ValueError(problem)
        key, grammar = grammar_for(params.json_schema, params.regex_string, params.lark_grammar)
        table, _ = self.view()
        field = constraint_field(params.json_schema, params.regex_string, params.lark_grammar)
        return RowGrammar(self.compiled(key, grammar, field).deep_copy(), table)

    def compiled(self, key: str, grammar: str, field: str) -> Any:
        """The matcher compiled for `grammar` (from the cache when it was compiled before)."""
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                self.hits += 1
                return cached
        _, lltok = self.view()
        started = time.perf_counter()
        matcher = llguidance.LLMatcher(lltok, grammar, log_level=0)  # compiles with the GIL released
        spent = time.perf_counter() - started
        if matcher.is_error():
            raise ValueError(f"{field} cannot be used for constrained decoding: {matcher.get_error()}")
        with self._lock:
            self.compiles += 1
            self.compile_s += spent
            self._cache[key] = matcher
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return matcher


class _Wrapper:
    """What llguidance.TokenizerWrapper reads: the token bytes, EOS/BOS, the special ids, and an encoder."""

    def __init__(self, table: TokenBytes, eos: int, bos: int | None) -> None:
        self.tokens = table.tokens
        self.eos_token_id = eos
        self.bos_token_id = bos
        self.special_token_ids = table.special_ids
        self._table = table

    def __call__(self, text: str | bytes) -> list[int]:
        return self._table.encode(text)


class GrammarMasks:
    """The scheduler's bitmask buffer ([slots, ceil(vocab / 32)] int32, on the CPU where llguidance writes it)."""

    def __init__(self, slots: int, vocab_size: int) -> None:
        self.words = (vocab_size + 31) // 32
        self.bitmask = torch.zeros(slots, self.words, dtype=torch.int32)
        self._executor = llguidance.LLExecutor() if llguidance is not None else None

    def fill(self, grammars: list[RowGrammar]) -> torch.Tensor:
        """The masks of these rows' next tokens, row j of the result for grammars[j] (one parallel call)."""
        out = self.bitmask[:len(grammars)]
        fill_next_token_bitmask_par(self._executor, [(g.matcher, j) for j, g in enumerate(grammars)], out)
        return out

    def for_rows(self, grammars: list[RowGrammar | None], device: torch.device) -> tuple[torch.Tensor | None,
                                                                                        torch.Tensor]:
        """(indices of the constrained rows, None when all are; their bitmask) for `sampling.SlotSampling.choose`."""
        picked = [i for i, g in enumerate(grammars) if g is not None]
        bitmask = self.fill([g for g in grammars if g is not None])
        index = None if len(picked) == len(grammars) else torch.tensor(picked, device=device)
        return index, bitmask
