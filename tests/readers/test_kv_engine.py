"""The generation engine's planned KV memory, chunked prefill and prefix cache, in process on random-weight Llamas."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"

from liftoff.core.reader_config import ReaderConfig
from liftoff.readers.engines.generation import GenerationEngine
from liftoff.readers.engines.kv_blocks import BlockManager, ModelShape, plan_kv

from support.models import CollectingSink, build_llama, long_text, make_job

PREFIX = "The quick brown fox jumps over the lazy dog. A reader holds a model and answers requests. " * 12


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_llama(tmp_path_factory.mktemp("models") / "tiny-llama", max_positions=2048)


def load(path: Path, **config) -> GenerationEngine:
    engine = GenerationEngine(ReaderConfig(model_name=str(path), **config))
    asyncio.run(engine.load())
    return engine


def run(engine: GenerationEngine, prompts: list[str], **params) -> list[tuple]:
    sink = CollectingSink()
    params.setdefault("max_new_tokens", 24)
    jobs = [make_job(f"r{i}", p, return_metadata=True, **params) for i, p in enumerate(prompts)]
    asyncio.run(engine.run(jobs, sink))
    return [sink.finals[f"r{i}"] for i in range(len(prompts))]


def test_greedy_output_is_the_same_with_chunking_and_the_prefix_cache_on_and_off(llama: Path) -> None:
    prompts = [PREFIX + "Hello world", PREFIX + "Numbers 0 1 2", "short one", PREFIX[:100]]
    outputs = {}
    for name, config in {
        "whole prompts, no cache": {"prefill_chunk_size": 0, "prefix_caching": False},
        "chunks of 16, no cache": {"prefill_chunk_size": 16, "prefix_caching": False},
        "chunks of 7, cache": {"prefill_chunk_size": 7},
        "chunks of 64, cache": {"prefill_chunk_size": 64},
    }.items():
        engine = load(llama, **config)
        try:
            if not outputs:
                hf = [hf_greedy(engine, prompt, 24) for prompt in prompts]
            cold, warm = run(engine, prompts), run(engine, prompts)
            assert engine.scheduler is not None
            assert engine.scheduler.blocks.used == 0 and engine.scheduler.blocks.reserved == 0, "blocks leaked"
        finally:
            engine.close()
        outputs[name] = ([c[1] for c in cold], [w[1] for w in warm])
        cached = [w[2][0]["cached_prompt_tokens"] for w in warm]
        if config.get("prefix_caching", True):
            # every full block but the one holding the last prompt token comes from the cache the second time
            assert cached[0] >= len(engine.tokenizer(prompts[0]).input_ids) - 16 - 1 > 0
        else:
            assert cached == [0, 0, 0, 0]
    reference = outputs["whole prompts, no cache"][0]
    assert reference == [[text] for text in hf], "the engine's greedy output differs from transformers' generate"
    for name, (cold, warm) in outputs.items():
        assert cold == reference, name
        assert warm == reference, name


@pytest.mark.parametrize("chunk", [0, 16])
def test_copies_of_one_prompt_prefill_it_once(llama: Path, chunk: int) -> None:
    """OpenAI's `n`: four rows of one request with the same prompt. The first prefills it; the others wait for its
    blocks and take them from the prefix cache, computing only the last partial block; greedy answers agree."""
    engine = load(llama, prefill_chunk_size=chunk)
    try:
        prompt = PREFIX + "Hello world"
        sink = CollectingSink()
        asyncio.run(engine.run([make_job("n", [prompt] * 4, max_new_tokens=12, return_metadata=True)], sink))
        kind, texts, metadata, _ = sink.finals["n"]
        assert kind == "done" and len(set(texts)) == 1, sink.finals["n"]
        length = len(engine.tokenizer(prompt).input_ids)
        full = (length - 1) // 16 * 16  # the blocks before the one holding the last prompt token
        assert [m["cached_prompt_tokens"] for m in metadata] == [0, full, full, full] and full > 0, metadata
    finally:
        engine.close()


def hf_greedy(engine: GenerationEngine, prompt: str, new: int) -> str:
    ids = engine.tokenizer(prompt, return_tensors="pt")
    out = engine.model.generate(**ids, do_sample=False, max_new_tokens=new, pad_token_id=engine.tokenizer.pad_token_id)
    tokens = out[0, ids.input_ids.shape[1]:].tolist()
    eos = engine.tokenizer.eos_token_id
    tokens = tokens[: tokens.index(eos)] if eos in tokens else tokens
    return engine.tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def test_long_contexts_split_the_decode_step_and_shrink_the_chunk(llama: Path, monkeypatch) -> None:
    from liftoff.readers.engines import chunk_plan, paged_forward

    prompts = [PREFIX * 2, "short", PREFIX, "hi there"]
    engine = load(llama, prefix_caching=False)
    try:
        expected = run(engine, prompts, max_new_tokens=16)
    finally:
        engine.close()
    monkeypatch.setattr(paged_forward, "GATHER_POSITIONS", 256)  # forces several decode forwards per step
    monkeypatch.setattr(chunk_plan, "PREFILL_SCORES", 64 * 256)  # and chunks of a few dozen tokens
    engine = load(llama, prefix_caching=False)
    try:
        assert [f[1] for f in run(engine, prompts, max_new_tokens=16)] == [f[1] for f in expected]
        assert engine.scheduler is not None and engine.scheduler.prefills > 10
    finally:
        engine.close()


def test_a_request_that_can_never_fit_is_refused_with_the_numbers(llama: Path) -> None:
    engine = load(llama, page_cache_size="128KiB")  # 512 bytes per token on this model: 256 tokens
    try:
        assert engine.kv_plan is not None and engine.kv_plan.tokens == 256
        prompt = len(engine.tokenizer("hello").input_ids)
        refused = run(engine, ["hello"], max_new_tokens=400)[0]
        assert refused[0] == "error" and refused[1] == 422
        assert f"{prompt + 400} tokens ({prompt} prompt + up to 400 new)" in refused[2], refused
        assert "holds 256 tokens" in refused[2], refused
        assert run(engine, ["hello"], max_new_tokens=200)[0][0] == "done"
    finally:
        engine.close()


def test_requests_beyond_the_plan_wait_for_blocks_and_all_finish(llama: Path) -> None:
    # 512 tokens of KV: each request reserves ~140, so only three run at once; the rest wait, none fails
    engine = load(llama, page_cache_size="256KiB", prefix_caching=False)
    try:
        assert engine.scheduler is not None
        kv_bytes = [t.numel() * t.element_size() for t in engine.scheduler.kv.keys + engine.scheduler.kv.values]
        finals = run(engine, [f"{i} {PREFIX[:60]}" for i in range(12)], max_new_tokens=120, min_new_tokens=120)
        assert [f[0] for f in finals] == ["done"] * 12
        assert all(f[2][0]["generated_tokens"] == 120 for f in finals)
        after = [t.numel() * t.element_size() for t in engine.scheduler.kv.keys + engine.scheduler.kv.values]
        assert after == kv_bytes and sum(after) <= 256 * 1024, "the KV cache grew past its plan"
        assert engine.scheduler.blocks.used == 0
    finally:
        engine.close()


def test_max_batch_size_auto_is_sized_from_the_plan(llama: Path) -> None:
    engine = load(llama, page_cache_size="1MiB", max_sequence_length=1024)  # 2,048 tokens of KV
    try:
        assert engine.max_batch_size == 2048 // 512
    finally:
        engine.close()
    engine = load(llama, page_cache_size="1MiB", max_batch_size=3)
    try:
        assert engine.max_batch_size == 3  # an explicit number wins
    finally:
        engine.close()


def test_cancelled_and_expired_rows_give_their_blocks_back(llama: Path) -> None:
    engine = load(llama, prefill_chunk_size=8)
    try:
        sink = CollectingSink()
        jobs = [make_job("long", long_text(600, engine.tokenizer), max_new_tokens=50),
                make_job("gone", "hello", max_new_tokens=500, min_new_tokens=500, timeout_s=0.3)]

        async def go() -> None:
            task = asyncio.ensure_future(engine.run(jobs[:1], sink))
            await asyncio.sleep(0.05)
            engine.cancel("long")
            await task
            await engine.run(jobs[1:], sink)

        asyncio.run(go())
        assert sink.finals["long"][:2] == ("error", 499)
        assert sink.finals["gone"][:2] == ("error", 504)
        assert engine.scheduler is not None and engine.scheduler.blocks.used == 0
        assert engine.scheduler.blocks.reserved == 0
    finally:
        engine.close()


def test_block_manager_reuses_shares_and_evicts_least_recently_used() -> None:
    blocks = BlockManager(num_blocks=4, block_size=2)
    keys = blocks.keys_for([1, 2, 3, 4, 5])
    assert len(keys) == 2 and blocks.match(keys) == [] and blocks.reserve(3)
    row = [blocks.take(), blocks.take(), blocks.take()]
    blocks.publish(row[0], keys[0])
    blocks.publish(row[1], keys[1])
    blocks.release(row)
    assert blocks.used == 0 and blocks.cached == 2 and blocks.available == 4
    again = blocks.match(blocks.keys_for([1, 2, 3, 4, 9]))
    assert again == row[:2] and blocks.used == 2
    assert blocks.match(blocks.keys_for([9, 9, 3, 4])) == []  # same second block, other prefix: no match
    assert not blocks.reserve(3)  # 2 free blocks left: the shared ones are referenced
    blocks.release(again)
    assert blocks.reserve(3)
    taken = [blocks.take() for _ in range(3)]  # two free blocks, then one eviction: the chain's tail goes first
    assert row[1] in taken and row[0] not in taken and blocks.cached == 1
    assert blocks.match(keys) == [row[0]]  # what is left of the prefix is still usable
    blocks.release([row[0], *taken])
    assert blocks.reserve(4) and sorted(blocks.take() for _ in range(4)) == [0, 1, 2, 3] and blocks.cached == 0


def test_the_plan_follows_the_budget_and_the_model_shape(llama: Path) -> None:
    from transformers import AutoConfig

    shape = ModelShape.of(AutoConfig.from_pretrained(llama), torch.float32)
    assert shape.bytes_per_token == 2 * 2 * 2 * 16 * 4  # K and V, 2 layers, 2 KV heads of 16, fp32
    plan = plan_kv(shape, "1MiB", torch.device("cpu"), most_tokens=10**9)
    assert plan.num_blocks == 2**20 // (shape.bytes_per_token * 16) and plan.bytes <= 2**20
    assert plan_kv(shape, "1MiB", torch.device("cpu"), most_tokens=100).tokens == 112  # capped, whole blocks
    with pytest.raises(ValueError, match="holds no KV block"):
        plan_kv(shape, 1000, torch.device("cpu"), most_tokens=100)
