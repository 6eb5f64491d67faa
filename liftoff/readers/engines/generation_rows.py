"""What the generation scheduler works on: a request (one job, whose rows answer together) and its rows (one
prompt each, with its sampling state, its KV blocks and its output so far), and the events it hands to the event
loop."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from liftoff.readers.engines.constrained import RowGrammar
from liftoff.readers.engines.grammar_tokens import ByteDetokenizer
from liftoff.readers.engines.sampling import NoRepeatNGrams, RowSampling
from liftoff.readers.engines.tokenizer_tools import IncrementalDetokenizer, decode_text
from liftoff.readers.jobs import Job


@dataclass(eq=False)
class Request:
    """One job: its rows answer together."""

    job: Job
    sink: Any
    rows_left: int
    texts: list[str] = field(default_factory=list)
    metadata: list[dict[str, Any]] = field(default_factory=list)
    logprobs: list[list[dict[str, Any]]] | None = None  # per row, when asked for and the request does not stream
    future: Any = None  # asyncio.Future, resolved on the event loop when the terminal reply is sent
    failed: bool = False
    cancel_reason: str | None = None


@dataclass(eq=False, slots=True)
class Row:
    request: Request
    index: int
    prompt: list[int]
    sampling: RowSampling
    max_new: int
    min_new: int
    stream: bool
    no_repeat: NoRepeatNGrams | None = None
    grammar: RowGrammar | None = None  # json_schema / regex_string: the row's grammar state (constrained.py)
    # streams, and rows with log probabilities (for text offsets); a constrained row's reads its grammar's bytes
    detok: IncrementalDetokenizer | ByteDetokenizer | None = None
    logprobs: int | None = None  # None: no log probabilities; k: the chosen token's and the k most likely
    keep: frozenset[int] = frozenset()  # special tokens written into the text (a tool request's call markers)
    adapter: str | None = None  # the LoRA adapter it runs with (liftoff.readers.engines.lora); None: the base model
    root: bytes = b""  # its prefix-cache chains' first key: the adapter's, so that no KV is shared across adapters
    pending: list[dict[str, Any]] = field(default_factory=list)  # entries of tokens whose text is not out yet
    emitted: int = 0  # characters of text the detokenizer has given so far
    generated: list[int] = field(default_factory=list)
    slot: int = -1  # sampling slot while running
    # KV: the row's blocks in order; `computed` positions hold keys/values; `reserved` blocks are promised to it
    blocks: list[int] = field(default_factory=list)
    computed: int = 0
    cached: int = 0  # prompt tokens that came from the prefix cache
    reserved: int = 0
    published: int = 0  # leading blocks offered to the prefix cache
    prefix_keys: list[bytes] | None = None  # content keys of the prompt's full blocks, worked out once
    last_key: bytes = b""  # content key of block published - 1 (`root` before the first)
    first_token_ms: int | None = None
    finish: str | None = None
    stops: tuple[str, ...] = ()  # the row ends once its text holds one of these (after min_new tokens)
    stop_window: str = ""  # the end of its text, as long as a stop string could still be completing in it
    stopped: bool = False  # its text holds a stop string

    def kv_tokens(self, max_length: int) -> int:
        """KV positions the row may come to need: its prompt and every token it may generate."""
        return min(len(self.prompt) + self.max_new, max_length)


Event = tuple[Any, ...]


def record_token(row: Row, token: int, entry: dict[str, Any] | None, events: list[Event]) -> None:
    """A chosen token into its row: its log-probability entry (if asked for), the no-repeat window, and the text it
    completes, as a `token` event for a stream."""
    row.generated.append(token)
    if entry is not None:
        entry["offset"] = row.emitted  # where the token's text begins in the row's text
        row.pending.append(entry)
    if row.no_repeat is not None:
        row.no_repeat.add(token)
    if row.detok is not None:
        text = row.detok.add(token)
        row.emitted += len(text)
        if text and row.stops:
            watch_stops(row, text)
        if text and row.stream:
            events.append(("token", row.request, row.index, text, row.pending))
            row.pending = []


def watch_stops(row: Row, text: str) -> None:
    """Whether the row's text now holds one of its stop strings (one may span several tokens' text)."""
    window = row.stop_window + text
    row.stopped = row.stopped or any(stop in window for stop in row.stops)
    longest = max(len(stop) for stop in row.stops)
    row.stop_window = window[-(longest - 1):] if longest > 1 else ""


def finish_row(row: Row, reason: str, tokenizer: Any, events: list[Event]) -> None:
    """Record a finished row's answer in its request (text, metadata, log probabilities), with the stream's last
    text piece as an event, and the request's `done` event when it was the last row."""
    request = row.request
    if request.failed:
        return
    if row.detok is not None:
        tail = row.detok.flush()
        row.emitted += len(tail)
        if row.stream and (tail or row.pending):
            events.append(("token", request, row.index, tail, row.pending))
            row.pending = []
    if row.stream:
        request.texts[row.index] = ""
    elif row.grammar is not None:  # exactly the bytes the grammar accepted (grammar_tokens.py says why)
        request.texts[row.index] = row.grammar.text(row.generated)
    else:
        request.texts[row.index] = decode_text(tokenizer, row.generated, row.keep)
    if request.logprobs is not None:
        request.logprobs[row.index], row.pending = row.pending, []
    request.metadata[row.index] = request.job.row_metadata(len(row.prompt), row.cached, len(row.generated), reason,
                                                           row.first_token_ms)
    request.rows_left -= 1
    if request.rows_left == 0:
        events.append(("done", request))
