"""Every engine's tokenizer is entered by one thread at a time (fast tokenizers fail with "Already borrowed"
otherwise): the event loop's tokenizer work and the torch thread's batches and detokenizing share one lock."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from liftoff.core.reader_config import ReaderConfig
from liftoff.readers.engines.classification import ClassificationEngine
from liftoff.readers.engines.embedding import EmbeddingEngine
from liftoff.readers.engines.generation import GenerationEngine
from liftoff.readers.engines.tokenizer_tools import LockedTokenizer

from support.models import build_bert_classifier, build_llama


class Overlap:
    """Counts how many threads are inside the instrumented methods at once (each call lingers a little)."""

    def __init__(self) -> None:
        self.inside = 0
        self.most = 0
        self.calls = 0
        self._count = threading.Lock()

    def wrap(self, fn: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            with self._count:
                self.inside += 1
                self.calls += 1
                self.most = max(self.most, self.inside)
            try:
                time.sleep(0.002)
                return fn(*args, **kwargs)
            finally:
                with self._count:
                    self.inside -= 1

        return counted


def instrument(tokenizer: Any, overlap: Overlap) -> Any:
    """A tokenizer object whose call, encode and decode go through `overlap` (the real tokenizer underneath)."""

    class Instrumented:
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return overlap.wrap(self._inner)(*args, **kwargs)

        def __len__(self) -> int:
            return len(self._inner)

        def __getattr__(self, name: str) -> Any:
            value = getattr(self._inner, name)
            return overlap.wrap(value) if name in ("encode", "decode", "apply_chat_template") else value

    return Instrumented(tokenizer)


def hammer(*work: Any, seconds: float = 1.0) -> None:
    """Run each callable in a loop on its own thread for `seconds`; re-raise the first failure."""
    failures: list[BaseException] = []
    until = time.monotonic() + seconds

    def loop(fn: Any) -> None:
        try:
            while time.monotonic() < until:
                fn()
        except BaseException as exc:  # noqa: BLE001 — reported below
            failures.append(exc)

    threads = [threading.Thread(target=loop, args=(fn,)) for fn in work]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]


def test_locked_tokenizer_lets_one_thread_in_at_a_time(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    raw = AutoTokenizer.from_pretrained(build_llama(tmp_path / "llama"))
    unlocked = Overlap()
    bare = instrument(raw, unlocked)
    hammer(lambda: bare("hello world " * 20), lambda: bare.decode(list(range(40))), lambda: bare.encode("a b c"))
    assert unlocked.most > 1  # the instrument sees overlap when nothing serialises the calls ...
    locked_overlap = Overlap()
    locked = LockedTokenizer(instrument(raw, locked_overlap))
    hammer(lambda: locked("hello world " * 20), lambda: locked.decode(list(range(40))),
           lambda: locked.encode("a b c"))
    assert locked_overlap.calls > 30 and locked_overlap.most == 1  # ... and none through the lock
    plain = LockedTokenizer(raw)
    plain.padding_side = "left"  # attributes still reach the tokenizer itself
    assert raw.padding_side == "left" and len(plain) == len(raw) and plain.eos_token_id == raw.eos_token_id


def test_classification_batches_and_tokenizer_work_never_overlap(tmp_path: Path) -> None:
    engine = ClassificationEngine(ReaderConfig(model_name=str(build_bert_classifier(tmp_path / "bert"))))
    asyncio.run(engine.load())
    assert isinstance(engine.tokenizer, LockedTokenizer)
    overlap = Overlap()
    object.__setattr__(engine.tokenizer, "inner", instrument(engine.tokenizer.inner, overlap))
    hammer(lambda: engine._classify_sync(["the quick brown fox", "hello"]),
           lambda: engine.tokenizer_op("tokenize", {"text": "a reader holds a model"}),
           lambda: engine.tokenizer_op("detokenize", {"tokens": [5, 6, 7]}))
    assert overlap.calls > 30 and overlap.most == 1


def test_generation_detokenizing_and_tokenizer_work_never_overlap(tmp_path: Path) -> None:
    engine = GenerationEngine(ReaderConfig(model_name=str(build_llama(tmp_path / "llama")), max_batch_size=4))
    asyncio.run(engine.load())
    try:
        assert isinstance(engine.tokenizer, LockedTokenizer)
        overlap = Overlap()
        object.__setattr__(engine.tokenizer, "inner", instrument(engine.tokenizer.inner, overlap))
        detok = engine.tokenizer  # what the scheduler thread's detokenizers and answers decode with
        hammer(lambda: detok.decode([10, 11, 12, 13]),
               lambda: engine.tokenizer_op("tokenize", {"text": "hello there"}))
        assert overlap.calls > 30 and overlap.most == 1
    finally:
        engine.close()


@pytest.mark.parametrize("texts", [["A man is playing a guitar.", "Someone plays the guitar."]])
def test_embedding_batches_hold_the_tokenizer_lock(tmp_path: Path, texts: list[str]) -> None:
    engine = EmbeddingEngine(ReaderConfig(model_name="sentence-transformers/all-MiniLM-L6-v2"),
                             repository_path=tmp_path)
    asyncio.run(engine.load())
    assert isinstance(engine.tokenizer, LockedTokenizer)
    inside = threading.Event()
    original = engine.model.encode

    def encode(*args: Any, **kwargs: Any) -> Any:
        inside.set()
        time.sleep(0.2)
        return original(*args, **kwargs)

    engine.model.encode = encode
    batch = threading.Thread(target=engine._encode_sync, args=(texts,))
    batch.start()
    assert inside.wait(10)
    started = time.monotonic()
    engine.tokenizer_op("tokenize", {"text": "hello world"})  # waits for the batch's tokenizer use to end
    assert time.monotonic() - started > 0.1
    batch.join()
