"""The Redis wire contract between gateway workers and readers. Nothing else builds or parses stream entries.

A request stream entry has one field, ``d``: a ``WorkItem`` as JSON. A reply stream entry has one field, ``d``: a
``Reply`` as JSON. Both carry ``v`` (the contract version); a peer that sees a version it does not know answers with
an error rather than guessing. The registry hash holds ``ReaderInfo`` JSON per reader id.

This module must stay free of torch and of any web framework: gateway and readers both import it.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

# 2: work items may carry `chats` (rendered by the reader), `params.seed` and `params.logprobs`. A reader serves
# every version up to its own (each adds optional fields only); an older reader refuses newer items instead of
# misreading them.
# The `alive` reply kind came without a new version: work items did not change, so a bump would only make older
# readers refuse the work of newer gateways. An older reader sends no beats (a newer gateway then treats its silences
# as it always did); an older gateway logs each beat as an undecodable reply and drops it.
# 3: work items may carry `tools` (passed to the chat template) and `params.lark_grammar`. Only items that use them
# are written as version 3 (`encode_work`), so version-2 readers keep serving everything else and refuse, by
# version, what they would misread (tools they would drop from the prompt, a grammar they cannot parse).
# 4: work items may carry `images` (image-to-text readers). Only items with images are version 4, so that a reader
# that would drop them refuses them by version instead.
# 5: params may carry `stop` (strings a row ends at, at the reader). Only items that carry it are version 5.
# 6: work items may carry `n` (answers per prompt or chat, OpenAI's `n`): each prompt travels once and the reader
# makes the copies (`decode_work`), which its scheduler prefills once. Only items with n > 1 are version 6: an older
# reader, which would ignore `n` and answer once, refuses them by version.
WIRE_VERSION = 6
MAX_TOP_LOGPROBS = 20  # most alternatives a request may ask for per generated token (params.logprobs)
FIELD = b"d"


class GenerationParams(BaseModel):
    """Generation parameters, validated and defaulted by the gateway before dispatch."""

    model_config = ConfigDict(extra="forbid")

    sampling_temperature: float = 1.0  # >= 0; 0, or sampling_topk == 1, means greedy decoding
    sampling_topp: float = 1.0  # nucleus mass in (0, 1]
    sampling_topk: int = 1  # tokens kept; 1 = greedy, 0 = no top-k cut
    repetition_penalty: float = 1.0  # > 0; 1 = off
    no_repeat_ngram_size: int = 0  # 0 = off
    max_new_tokens: int = 128  # tokens to generate at most
    min_new_tokens: int = 0  # tokens to generate before EOS may end the sequence
    regex_string: str | None = None
    json_schema: Any = None  # a schema object (or its JSON text); ignored when regex_string is set
    lark_grammar: str | None = None  # a grammar in llguidance's Lark syntax (wins over json_schema; v3)
    constrained_decoding_backend: str | None = None
    prompt_max_tokens: int | None = None  # keep only the last N prompt tokens
    use_chat_template: bool = False
    return_metadata: bool = False
    lora_id: str | None = None
    seed: int | None = None  # sampling draws from a generator seeded with this (batch item i: seed + i)
    logprobs: int | None = None  # None: none; k: each generated token's log probability and the k most likely
    # A row ends (finish_reason "stop") once its text holds one of these, after min_new_tokens: no token is spent
    # after it. The text returned still holds it; the port cuts its answer there (v5)
    stop: list[str] | None = None


WorkKind = Literal["generate", "embed", "classify", "tokenize", "detokenize", "chat_template", "lora_add",
                   "lora_remove"]
# Work for one particular reader (its tokenizer), sent to its direct group rather than to a consumer group.
TOKENIZER_KINDS = frozenset({"tokenize", "detokenize", "chat_template"})
# Also for one reader: load a LoRA adapter (args {name, source}) or remove one (args {name}); the management API's.
ADAPTER_KINDS = frozenset({"lora_add", "lora_remove"})


class WorkItem(BaseModel):
    """One request as a reader sees it."""

    model_config = ConfigDict(extra="ignore")

    v: int = WIRE_VERSION
    id: str  # request id, unique per gateway worker lifetime
    kind: WorkKind = "generate"
    reply_to: str  # the reply stream key of the gateway worker waiting for it
    stream: bool = False  # True: send one `token` reply per generated token before `done`
    texts: list[str]  # prompts (or texts to embed / classify); one per user-batch item
    pairs: list[list[str]] | None = None  # classify: text pairs (cross-encoders), instead of texts
    args: dict[str, Any] | None = None  # tokenizer work: its arguments (tokens, conversations, flags)
    # generate: conversations (lists of {role, content}) the reader renders with its model's chat template into
    # `texts`, one per batch item, ending with the assistant's turn when add_generation_prompt (the OpenAI port's chat)
    chats: list[list[dict[str, Any]]] | None = None
    add_generation_prompt: bool = True
    # generate with chats: the function tools ({type: function, function: {name, description, parameters}}) passed to
    # the chat template as `tools` (v3)
    tools: list[dict[str, Any]] | None = None
    # generate: images (base64 of the file, decoded, checked and bounded in size by the gateway) that every prompt or
    # chat of the item is asked about, in the order their placeholders appear (v4)
    images: list[str] | None = None
    batched: bool = False  # the user sent a list (affects only the response shape at the gateway)
    params: GenerationParams = Field(default_factory=GenerationParams)
    enqueued_ms: int  # epoch milliseconds when the gateway wrote it
    deadline_ms: int  # epoch milliseconds after which nobody waits for the answer
    # generate: answers per prompt (or chat), each its own batch item at the reader, in the order p0, p0, p1, p1, ...
    # (v6); `decode_work` expands them, so engines see one item per answer
    n: int = Field(default=1, ge=1, le=128)

    def with_copies(self) -> WorkItem:
        """The item as engines serve it: `n` consecutive copies of each prompt and chat."""
        if self.n == 1:
            return self
        n = self.n
        return self.model_copy(update={
            "n": 1, "texts": [t for t in self.texts for _ in range(n)],
            "chats": None if self.chats is None else [c for c in self.chats for _ in range(n)]})


ReplyKind = Literal["token", "done", "error", "alive"]


class Reply(BaseModel):
    """One message from a reader to the gateway worker that owns the request.

    ``token``: one piece of streamed text for batch item ``index``.
    ``done``: the terminal success; ``texts`` holds the full outputs unless the request streamed (then None);
    ``result`` holds what non-generative engines return.
    ``error``: the terminal failure, with the HTTP ``status`` the client should get and a ``message`` for people.
    ``alive``: no content, only a sign of life: the reader is still working on this stream (its engine is making
    progress) but has had nothing to send for a while. It restarts the gateway's silence clock like a token does and
    never reaches the client (see liftoff.readers.liveness). Sent only for streams that have had a reply already.
    """

    model_config = ConfigDict(extra="ignore")

    v: int = WIRE_VERSION
    id: str
    kind: ReplyKind
    index: int = 0
    text: str | None = None
    texts: list[str] | None = None
    result: Any = None  # embed: one vector per input; classify: one {label, score, scores} per input
    metadata: list[dict[str, Any]] | None = None  # per batch item, when return_metadata
    # When params.logprobs is set: `token`, the entries of the tokens behind `text`; `done` of a request that did not
    # stream, one list of entries per batch item. An entry: {token, logprob, bytes, top_logprobs: [{token, logprob,
    # bytes}, ...]}, log probabilities of the model's own distribution (before temperature and penalties).
    logprobs: list[Any] | None = None
    status: int | None = None
    message: str | None = None
    reader_id: str | None = None
    attempt: int = 1  # which delivery of the request produced this reply (> 1 after a reader died)


class DeadLetter(BaseModel):
    """A request that exhausted its deliveries, as kept in the dead-letter stream."""

    model_config = ConfigDict(extra="ignore")

    v: int = WIRE_VERSION
    group: str
    entry_id: str  # its id in the group's request stream when it failed
    reason: str
    failed_s: float  # epoch seconds
    payload: str  # the original request entry (a WorkItem as JSON), for retries


ReaderState = Literal["loading", "live", "stopping", "failed"]
REFERENCE_READER_FIELDS = {"consumer_groups", "consumer_name", "device", "model_name", "model_type", "pids"}


class ReaderInfo(BaseModel):
    """A reader's registry entry. The first six fields are the reference's ReaderInfo."""

    model_config = ConfigDict(extra="ignore")

    consumer_groups: list[str]
    consumer_name: str
    device: str
    model_name: str
    model_type: str
    pids: list[int]
    state: ReaderState = "loading"
    hostname: str = ""
    error: str | None = None  # why the reader failed or last exited
    progress: str | None = None  # while loading: what it is doing (converting a GGUF file, loading weights)
    registered_s: float = Field(default_factory=time.time)
    last_heartbeat_s: float | None = None
    heartbeat_interval_s: float = 1.0
    supervised: bool = False  # started by a `liftoff serve` supervisor (which marks it dead when it exits)
    reader_id: str = ""
    config: dict[str, Any] = Field(default_factory=dict)  # the ReaderConfig it runs, for GET /config/{reader_id}
    jobs: dict[str, int] = Field(default_factory=dict)  # counters: active, completed, failed, cancelled, reclaimed
    tool_call_parser: str | None = None  # the format its model writes tool calls in (liftoff.core.tool_calls)
    # the sampling its model's generation_config sets (temperature, top_p, top_k): the OpenAI-style ports' defaults
    sampling: dict[str, float] | None = None
    # the LoRA adapters requests may pick (`lora_id`): {name, source, rank, alpha, target_modules, parameters, bytes}
    loras: list[dict[str, Any]] = Field(default_factory=list)

    def reference_view(self) -> dict[str, Any]:
        """The reference's ReaderInfo fields, plus `error` when the reader failed (why it is dead) and `progress`
        while it loads."""
        view = self.model_dump(include=REFERENCE_READER_FIELDS)
        if self.error:
            view["error"] = self.error
        if self.progress and self.state == "loading":
            view["progress"] = self.progress
        return view


def now_ms() -> int:
    return int(time.time() * 1000)


def encode(model: BaseModel) -> dict[bytes, bytes]:
    return {FIELD: model.model_dump_json(exclude_none=True).encode()}


def encode_work(
    *,
    id: str,
    reply_to: str,
    stream: bool,
    texts: list[str],
    batched: bool,
    params: dict[str, Any],
    enqueued_ms: int,
    deadline_ms: int,
    kind: str = "generate",
    pairs: list[list[str]] | None = None,
    args: dict[str, Any] | None = None,
    chats: list[list[dict[str, Any]]] | None = None,
    add_generation_prompt: bool = True,
    tools: list[dict[str, Any]] | None = None,
    images: list[str] | None = None,
    n: int = 1,
) -> dict[bytes, bytes]:
    """The entry `encode(WorkItem(...))` writes, built without a model (the gateway's hot path).

    `params` holds GenerationParams fields the gateway has already validated; absent ones take their defaults when
    the reader decodes the entry. tests/core/test_wire.py checks that both encoders agree.
    """
    item: dict[str, Any] = {
        "v": 6 if n > 1 else 5 if "stop" in params else 4 if images is not None else 3 if tools is not None or
        params.get("lark_grammar") else 2,
        "id": id, "kind": kind, "reply_to": reply_to, "stream": stream, "texts": texts,
        "batched": batched, "params": params, "enqueued_ms": enqueued_ms, "deadline_ms": deadline_ms,
    }
    if pairs is not None:
        item["pairs"] = pairs
    if args is not None:
        item["args"] = args
    if chats is not None:
        item["chats"] = chats
        item["add_generation_prompt"] = add_generation_prompt
    if tools is not None:
        item["tools"] = tools
    if images is not None:
        item["images"] = images
    if n > 1:
        item["n"] = n
    return {FIELD: orjson.dumps(item)}


def _payload(fields: dict[bytes, bytes]) -> bytes:
    data = fields.get(FIELD)
    if data is None:
        raise ValueError(f"stream entry without the {FIELD!r} field: {sorted(fields)}")
    return data


def decode_work(fields: dict[bytes, bytes]) -> WorkItem:
    """The work item, with its `n` copies made (`WorkItem.with_copies`)."""
    return WorkItem.model_validate_json(_payload(fields)).with_copies()


def decode_reply(fields: dict[bytes, bytes]) -> Reply:
    return Reply.model_validate_json(_payload(fields))


def peek_ids(fields: dict[bytes, bytes]) -> tuple[str | None, str | None]:
    """Request id and reply stream of an entry that may not validate, so that its sender can still be answered."""
    try:
        raw = orjson.loads(_payload(fields))
        return raw.get("id"), raw.get("reply_to")
    except (ValueError, AttributeError):
        return None, None
