"""The bytes each token stands for, as the grammar engine sees them and as constrained rows' text is made from them.

A grammar checks bytes, so the text a constrained row returns must be exactly the bytes its grammar accepted. A Hugging
Face `decode` of the generated ids alone does not guarantee that: a WordPiece continuation piece (`##{`) decoded on
its own keeps its `##`, a word-start piece gets its separating space only after another token, and a SentencePiece
`▁x` loses its space at the start of a text. So each token's bytes are taken once, as it reads *after* other text:

- byte-level BPE (GPT-2, Llama 3, Qwen): the token's characters mapped back through the byte-to-unicode table, so a
  token holding half of a multi-byte character is exactly those bytes;
- SentencePiece byte fallback (`<0xE6>`): that byte;
- anything else (WordPiece, Metaspace/SentencePiece, ...): decode([reference, token]) minus decode([reference]),
  so `##{` is `{`, a word-start `{` is ` {` and `▁x` is ` x`;
- special tokens: 0xFF and their name (llguidance's convention; a grammar never allows them), ids past the
  tokenizer's end (a model's padded vocabulary): no bytes (never allowed).

Constrained rows' text (whole or streamed) is these bytes joined and decoded as UTF-8 (`TokenBytes.text`,
`ByteDetokenizer`), so the grammar's text and the returned text are the same by construction, for every tokenizer.
"""

from __future__ import annotations

import codecs
import json
from typing import Any

SPECIAL_PREFIX = b"\xff"


def _byte_level_table() -> dict[str, int]:
    """GPT-2's byte-to-unicode mapping, inverted: printable bytes stand for themselves, the others for code points
    from 256 up, in byte order."""
    printable = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255]
    table = {chr(b): b for b in printable}
    others = [b for b in range(256) if b not in set(printable)]
    table.update({chr(256 + k): b for k, b in enumerate(others)})
    return table


def _uses(component: Any, kind: str) -> bool:
    """Whether a tokenizer.json component (decoder, pre-tokenizer) is, or contains, `kind`."""
    if not isinstance(component, dict):
        return False
    if component.get("type") == kind:
        return True
    parts = component.get("decoders") or component.get("pretokenizers") or []
    return any(_uses(part, kind) for part in parts)


class TokenBytes:
    """Every token id's bytes (see the module's doc), for a Hugging Face fast tokenizer and a model vocabulary of
    `vocab_size` ids (at least the tokenizer's)."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = max(vocab_size, len(tokenizer))
        self.special_ids = sorted(set(tokenizer.all_special_ids) | _added_special_ids(tokenizer))
        spec = json.loads(tokenizer.backend_tokenizer.to_str())
        self.byte_level = _uses(spec.get("decoder"), "ByteLevel")
        self.tokens: list[bytes] = self._build(spec)
        self._by_bytes: dict[bytes, int] | None = None  # piece -> lowest id spelling it, for `_greedy`
        self._longest = 1

    def _build(self, spec: dict[str, Any]) -> list[bytes]:
        tok = self.tokenizer
        size = len(tok)
        special = set(self.special_ids)
        names = tok.convert_ids_to_tokens(list(range(size)))
        out: list[bytes | None] = [None] * self.vocab_size
        byte_map = _byte_level_table() if self.byte_level else {}
        fallback = bool((spec.get("model") or {}).get("byte_fallback"))
        rest: list[int] = []
        for token_id, name in enumerate(names):
            if token_id in special:
                out[token_id] = SPECIAL_PREFIX + str(name).encode()
            elif name is None:
                out[token_id] = b""
            elif byte_map and all(ch in byte_map for ch in name):
                out[token_id] = bytes(byte_map[ch] for ch in name)
            elif fallback and len(name) == 6 and name.startswith("<0x") and name.endswith(">"):
                out[token_id] = bytes([int(name[3:5], 16)])
            else:
                rest.append(token_id)
        if rest:
            for token_id, text in zip(rest, self._after_reference(rest, special), strict=True):
                out[token_id] = text.encode("utf-8")
        return [b if b is not None else b"" for b in out]

    def _after_reference(self, ids: list[int], special: set[int]) -> list[str]:
        """Each token's text as it reads after a plain reference token (its separating space, no `##`)."""
        tok = self.tokenizer
        reference = next((i for i in tok.encode("0", add_special_tokens=False) if i not in special), None)
        if reference is None:
            reference = next(i for i in range(len(tok)) if i not in special)
        before = tok.decode([reference], clean_up_tokenization_spaces=False)
        pairs = tok.batch_decode([[reference, i] for i in ids], clean_up_tokenization_spaces=False)
        texts = []
        for token_id, pair in zip(ids, pairs, strict=True):
            if pair.startswith(before):
                texts.append(pair[len(before):])
            else:  # a normalising decoder changed the reference: the token alone is the best left
                texts.append(tok.decode([token_id], clean_up_tokenization_spaces=False))
        return texts

    def piece(self, token_id: int) -> bytes:
        """The bytes a generated token adds to a constrained row's text (special tokens and unknown ids: none)."""
        if 0 <= token_id < len(self.tokens):
            raw = self.tokens[token_id]
            return b"" if raw.startswith(SPECIAL_PREFIX) else raw
        return b""

    def text(self, ids: list[int]) -> str:
        return b"".join(self.piece(i) for i in ids).decode("utf-8", errors="replace")

    def encode(self, text: str | bytes) -> list[int]:
        """Tokens whose bytes join to `text`, or to as much of its start as the vocabulary can spell (llguidance
        tokenizes the bytes a grammar forces, and relies on the tokens spelling exactly those bytes): the
        tokenizer's own encoding where it does (byte-level BPE), else the longest table pieces left to right
        (WordPiece encodes `{` as the word-start piece, ` {` here, where the text needs `##{`). A byte no piece
        spells (a newline, for a WordPiece vocabulary) ends the encoding there, so that the tokens never claim bytes
        they do not hold; a row whose grammar needs such a byte is refused with a 422 (`Scheduler._advance`)."""
        data = text if isinstance(text, bytes) else text.encode("utf-8")
        ids = list(self.tokenizer.encode(data.decode("utf-8", errors="replace"), add_special_tokens=False))
        if b"".join(self.piece(i) for i in ids) == data:
            return ids
        return self._greedy(data)

    def _greedy(self, data: bytes) -> list[int]:
        if self._by_bytes is None:
            by_bytes = {}
            for token_id in range(len(self.tokens) - 1, -1, -1):  # the lowest id wins among equal pieces
                if self.piece(token_id):
                    by_bytes[self.tokens[token_id]] = token_id
            self._by_bytes, self._longest = by_bytes, max(map(len, by_bytes), default=1)
        ids, at = [], 0
        while at < len(data):
            for size in range(min(self._longest, len(data) - at), 0, -1):
                token_id = self._by_bytes.get(data[at:at + size])
                if token_id is not None:
                    ids.append(token_id)
                    at += size
                    break
            else:
                return ids  # a byte no piece spells: the start that can be spelled
        return ids


def _added_special_ids(tokenizer: Any) -> set[int]:
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    return {int(i) for i, added in decoder.items() if getattr(added, "special", False)}


class ByteDetokenizer:
    """A constrained row's streamed text: its tokens' bytes through an incremental UTF-8 decoder, so a character
    split over tokens comes out whole, and the pieces join to `TokenBytes.text` of the row's tokens."""

    def __init__(self, table: TokenBytes) -> None:
        self._table = table
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, token_id: int) -> str:
        return self._decoder.decode(self._table.piece(token_id))

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)
