"""Tokenizer helpers shared by the torch engines: incremental detokenizing for streams, and the /tokenize,
/detokenize and /chat_template operations.

Streaming text must join back to the final text exactly: a byte-level token may hold half of a multi-byte
character, and SentencePiece tokens carry their leading space in a way that only shows when decoded with their
neighbours. `IncrementalDetokenizer` decodes a short window of recent tokens and emits only text that is complete
(the offsets method of Hugging Face's text-generation-inference).

Fast (Rust) tokenizers must not be entered by two threads at once: encoding with truncation or padding changes the
tokenizer's own state, and a second thread inside it then fails with "Already borrowed". An engine's tokenizer is
used from the event loop (tokenize, chat templates, prompts) and from its torch thread (detokenizing streams,
classification batches, embedding batches), so every engine holds it as a `LockedTokenizer`.
"""

from __future__ import annotations

import threading
from typing import Any

from liftoff.core.tool_calls import MARKER_TOKENS, detect_parser
from liftoff.readers.engines.base import EngineRequestError

REPLACEMENT = "\ufffd"


# Methods of a Hugging Face tokenizer that reach the Rust tokenizer, taken under the lock.
_LOCKED_METHODS = frozenset({
    "__call__", "encode", "encode_plus", "batch_encode_plus", "decode", "batch_decode", "tokenize", "pad",
    "convert_ids_to_tokens", "convert_tokens_to_ids", "apply_chat_template",
})


class LockedTokenizer:
    """A tokenizer that one thread at a time uses: its methods that reach the Rust tokenizer run under `lock` (a
    re-entrant lock, so code holding it may call them); anything else is the wrapped tokenizer's own attribute."""

    def __init__(self, inner: Any) -> None:
        object.__setattr__(self, "inner", inner)
        object.__setattr__(self, "lock", threading.RLock())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return self.inner(*args, **kwargs)

    def __len__(self) -> int:
        return len(self.inner)

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.inner, name)
        if name not in _LOCKED_METHODS or not callable(value):
            return value
        lock = self.lock

        def locked(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return value(*args, **kwargs)

        return locked

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.inner, name, value)


def locked_tokenizer(tokenizer: Any) -> Any:
    """`tokenizer` as a LockedTokenizer (None stays None; a locked one stays itself)."""
    return tokenizer if tokenizer is None or isinstance(tokenizer, LockedTokenizer) else LockedTokenizer(tokenizer)


def decode_text(tokenizer: Any, ids: list[int], keep: frozenset[int] = frozenset()) -> str:
    """Generated text: special tokens skipped, but those in `keep` (a tool-call format's markers, for a request
    with tools), which are written as their own text."""
    if not keep or keep.isdisjoint(ids):
        return str(tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))
    parts: list[str] = []
    run: list[int] = []
    for token_id in [*ids, -1]:
        if token_id in keep or token_id == -1:
            if run:
                parts.append(tokenizer.decode(run, skip_special_tokens=True, clean_up_tokenization_spaces=False))
                run = []
            if token_id != -1:
                parts.append(tokenizer.convert_ids_to_tokens(token_id))
        else:
            run.append(token_id)
    return "".join(parts)


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Any, keep: frozenset[int] = frozenset()) -> None:
        self._tokenizer = tokenizer
        self._keep = keep
        self.ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def _decode(self, ids: list[int]) -> str:
        return decode_text(self._tokenizer, ids, self._keep)

    def add(self, token_id: int) -> str:
        """The new complete text after `token_id` ('' while a character is still incomplete)."""
        self.ids.append(token_id)
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        if len(after) > len(before) and not after.endswith(REPLACEMENT):
            self._prefix, self._read = self._read, len(self.ids)
            return after[len(before) :]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end)."""
        before = self._decode(self.ids[self._prefix : self._read])
        after = self._decode(self.ids[self._prefix :])
        self._prefix = self._read = len(self.ids)
        return after[len(before) :] if len(after) > len(before) else ""


class TokenizerHelpers:
    """Mixin for engines with a Hugging Face tokenizer in `self.tokenizer`, which is always held as a LockedTokenizer
    (whatever is assigned is wrapped), so that every thread's use of it is serialised."""

    _tokenizer: Any = None

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, value: Any) -> None:
        self._tokenizer = locked_tokenizer(value)

    def tokenizer_op(self, kind: str, args: dict[str, Any]) -> dict[str, Any]:
        """The reader's tokenizer work: `tokenize` {text, use_chat_template?, skip_special_tokens?, templated?} →
        {tokens, tokens_count} (`templated`: text a chat template rendered, counted as a chat's prompt is);
        `detokenize` {tokens, skip_special_tokens?} → {text}; `chat_template` {inputs, add_generation_prompt?} →
        {messages}. Bad arguments raise EngineRequestError(422)."""
        try:
            if kind == "tokenize" and args.get("templated"):
                ids = self.templated_ids(str(args["text"]))
                return {"tokens": list(self.tokenizer.convert_ids_to_tokens(ids)), "tokens_count": len(ids)}
            if kind == "tokenize":
                tokens = self.tokenize(str(args["text"]), bool(args.get("use_chat_template", False)),
                                       bool(args.get("skip_special_tokens", False)))
                return {"tokens": tokens, "tokens_count": len(tokens)}
            if kind == "detokenize":
                return {"text": self.detokenize(list(args["tokens"]), bool(args.get("skip_special_tokens", False)))}
            if kind == "chat_template":
                return {"messages": self.apply_chat_template(list(args["inputs"]),
                                                             bool(args.get("add_generation_prompt", True)),
                                                             args.get("tools"))}
        except KeyError as exc:
            raise EngineRequestError(422, f"{kind}: missing field {exc.args[0]!r}") from exc
        except (ValueError, TypeError) as exc:
            raise EngineRequestError(422, f"{kind}: {exc}") from exc
        except Exception as exc:  # template rendering errors (jinja) and tokenizer errors are the caller's input
            raise EngineRequestError(422, f"{kind}: {type(exc).__name__}: {exc}") from exc
        raise EngineRequestError(400, f"unknown tokenizer operation {kind!r}")

    def chat_prompt(self, text: str) -> str:
        """`text` as one user message through the model's chat template, ready for the assistant's turn."""
        return self.apply_chat_template([[{"role": "user", "content": text}]], add_generation_prompt=True)[0]

    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def apply_chat_template(self, conversations: list[list[dict[str, Any]]], add_generation_prompt: bool = True,
                            tools: list[dict[str, Any]] | None = None) -> list[str]:
        """Each conversation (a list of {role, content}, with assistant `tool_calls` and `tool` messages) rendered as
        prompt text by the model's chat template; `tools` (OpenAI's function tools) go to it as `tools`."""
        if not self.has_chat_template():
            raise ValueError("this model's tokenizer has no chat template")
        extra = {"tools": tools} if tools else {}
        return [
            self.tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False,
                                               **extra)
            for messages in conversations
        ]

    def tool_call_parser(self) -> str | None:
        """The reader's `tool_call_parser` setting, or ("auto") the format its chat template's text shows."""
        setting = getattr(getattr(self, "config", None), "tool_call_parser", "auto")
        if setting == "none":
            return None
        if setting != "auto":
            return str(setting)
        template = getattr(self.tokenizer, "chat_template", None) if self.tokenizer is not None else None
        return detect_parser(template if isinstance(template, str) else None)

    def tool_marker_ids(self) -> frozenset[int]:
        """The ids of this model's tool-call markers that its vocabulary holds as special tokens (kept in the text
        of requests with tools, so that the gateway's parser sees them)."""
        parser = self.tool_call_parser()
        if parser is None or self.tokenizer is None:
            return frozenset()
        special = set(getattr(self.tokenizer, "all_special_ids", []) or [])
        special |= {i for i, t in (getattr(self.tokenizer, "added_tokens_decoder", {}) or {}).items()
                    if getattr(t, "special", False)}
        ids = {self.tokenizer.convert_tokens_to_ids(marker) for marker in MARKER_TOKENS.get(parser, ())}
        return frozenset(i for i in ids if isinstance(i, int) and i in special)

    def tokenize_ids(self, text: str, use_chat_template: bool = False, skip_special_tokens: bool = False) -> list[int]:
        """Token ids of `text` (after the chat template when asked; the template adds its own special tokens)."""
        if use_chat_template:
            ids = self.templated_ids(self.chat_prompt(text))
        else:
            ids = list(self.tokenizer(text, add_special_tokens=True)["input_ids"])
        if skip_special_tokens:
            special = set(self.tokenizer.all_special_ids)
            ids = [i for i in ids if i not in special]
        return ids

    def templated_ids(self, rendered: str) -> list[int]:
        """Token ids of text a chat template rendered: the template wrote the special tokens it wants already."""
        return list(self.tokenizer(rendered, add_special_tokens=False)["input_ids"])

    def tokenize(self, text: str, use_chat_template: bool = False, skip_special_tokens: bool = False) -> list[str]:
        """Token strings of `text`, as the tokenizer's vocabulary spells them."""
        ids = self.tokenize_ids(text, use_chat_template, skip_special_tokens)
        return list(self.tokenizer.convert_ids_to_tokens(ids))

    def detokenize(self, tokens: list[str] | list[int], skip_special_tokens: bool = False) -> str:
        """Text of token ids or token strings."""
        if tokens and isinstance(tokens[0], str):
            unknown = [t for t in tokens if self.tokenizer.convert_tokens_to_ids(t) is None]
            if unknown:
                raise ValueError(f"unknown tokens: {unknown[:5]}")
            ids = list(self.tokenizer.convert_tokens_to_ids(tokens))
        else:
            ids = [int(t) for t in tokens]
            size = len(self.tokenizer)
            bad = [i for i in ids if i < 0 or i >= size]
            if bad:
                raise ValueError(f"token ids out of the vocabulary (size {size}): {bad[:5]}")
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=False)
