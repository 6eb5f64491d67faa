"""The echo engine's tokenizer gives back the text exactly, whatever its whitespace."""

from __future__ import annotations

import pytest

from liftoff.readers.engines.echo import tokenize


@pytest.mark.parametrize("text", ["", "a", "hello world", "  lead", "trail  ", "a\nb\n\nc", "tabs\tand\r\nCRLF", " "])
def test_tokens_join_back_to_the_text(text: str) -> None:
    assert "".join(tokenize(text)) == text


def test_one_token_per_word() -> None:
    assert tokenize("one two\nthree") == ["one", " two", "\nthree"]
