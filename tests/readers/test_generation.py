"""The generation engine on a tiny random-weight Llama: sampling semantics, streaming, continuous batching."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from liftoff.core.reader_config import ReaderConfig
from liftoff.readers.engines.generation import GenerationEngine

from support.models import CollectingSink, build_llama, make_job, run_jobs

PROMPTS = ["Hello world", "The quick brown fox", "Le café 日本語", "A reader holds a model and answers"]


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_llama(tmp_path_factory.mktemp("models") / "tiny-llama")


def load(path: Path, **config) -> GenerationEngine:
    config.setdefault("max_batch_size", 8)
    engine = GenerationEngine(ReaderConfig(model_name=str(path), **config))
    asyncio.run(engine.load())
    return engine


@pytest.fixture(scope="module")
def engine(llama: Path):
    engine = load(llama)
    yield engine
    engine.close()



def text_of(engine: GenerationEngine, prompt: str, **params) -> str:
    sink = run_jobs(engine, make_job("r", prompt, **params))
    kind, texts, *_ = sink.finals["r"]
    assert kind == "done", sink.finals["r"]
    return texts[0]


def hf_generate(engine: GenerationEngine, prompt: str, **kwargs) -> list[int]:
    ids = engine.tokenizer(prompt, return_tensors="pt")
    out = engine.model.generate(**ids, do_sample=False, pad_token_id=engine.tokenizer.pad_token_id, **kwargs)
    return out[0, ids.input_ids.shape[1]:].tolist()


def hf_text(engine: GenerationEngine, ids: list[int]) -> str:
    eos = engine.tokenizer.eos_token_id
    ids = ids[: ids.index(eos)] if eos in ids else ids
    return engine.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


def test_greedy_is_deterministic_and_matches_static_generate(engine: GenerationEngine) -> None:
    jobs = [make_job(f"r{i}", p, max_new_tokens=20) for i, p in enumerate(PROMPTS)]
    first, second = run_jobs(engine, *jobs), run_jobs(engine, *[make_job(j.item.id, j.item.texts, max_new_tokens=20)
                                                               for j in jobs])
    for i, prompt in enumerate(PROMPTS):
        assert first.finals[f"r{i}"] == second.finals[f"r{i}"]
        expected = hf_text(engine, hf_generate(engine, prompt, max_new_tokens=20))
        assert first.finals[f"r{i}"][1] == [expected]
    assert text_of(engine, PROMPTS[0], max_new_tokens=20, sampling_temperature=0.0, sampling_topk=0) == \
        first.finals["r0"][1][0]


def test_max_new_tokens_and_metadata(engine: GenerationEngine) -> None:
    sink = run_jobs(engine, make_job("r", PROMPTS[1], max_new_tokens=7, return_metadata=True))
    metadata = sink.finals["r"][2]
    assert metadata[0]["generated_tokens"] == 7
    assert metadata[0]["finish_reason"] == "length"
    assert metadata[0]["prompt_tokens"] == len(engine.tokenize_ids(PROMPTS[1]))
    assert metadata[0]["time_to_first_token_ms"] >= 0


@pytest.mark.parametrize("stream", [False, True])
def test_a_stop_string_ends_the_row_at_the_reader(engine: GenerationEngine, stream: bool) -> None:
    """The row stops at the token that completes its first stop string: no token is generated after it, and what
    it wrote up to there is what it writes without the stop string (greedy)."""
    free = run_jobs(engine, make_job("f", PROMPTS[1], max_new_tokens=24, return_metadata=True))
    text = free.finals["f"][1][0]
    stop = text[len(text) // 2: len(text) // 2 + 3]  # three characters from the middle, perhaps across tokens
    assert len(stop) == 3 and stop in text, text
    job = make_job("s", PROMPTS[1], max_new_tokens=24, return_metadata=True, stop=[stop, "never appears"],
                   stream=stream)
    sink = run_jobs(engine, job)
    kind, texts, metadata, _ = sink.finals["s"]
    stopped = "".join(sink.tokens.get(("s", 0), [])) if stream else texts[0]
    assert kind == "done" and metadata[0]["finish_reason"] == "stop", sink.finals["s"]
    assert stop in stopped and text.startswith(stopped), (text, stopped)
    assert metadata[0]["generated_tokens"] < free.finals["f"][2][0]["generated_tokens"]
    tokens = metadata[0]["generated_tokens"]  # the last one completed the stop string: one fewer would not hold it
    shorter = run_jobs(engine, make_job("t", PROMPTS[1], max_new_tokens=tokens - 1, return_metadata=True))
    assert stop not in shorter.finals["t"][1][0], shorter.finals["t"]


def test_prompt_max_tokens_keeps_the_end(engine: GenerationEngine) -> None:
    sink = run_jobs(engine, make_job("r", PROMPTS[3], max_new_tokens=3, prompt_max_tokens=4, return_metadata=True))
    assert sink.finals["r"][2][0]["prompt_tokens"] == 4


@pytest.fixture(scope="module")
def eos_engine(llama: Path, tmp_path_factory: pytest.TempPathFactory, engine: GenerationEngine):
    """The same weights, with the 4th greedy token of PROMPTS[0] made an end-of-sequence token."""
    greedy = hf_generate(engine, PROMPTS[0], max_new_tokens=30)
    k = next(k for k in range(3, 30) if greedy[k] not in greedy[:k])
    copy = tmp_path_factory.mktemp("models") / "tiny-llama-eos"
    shutil.copytree(llama, copy)
    config_path = copy / "generation_config.json"
    config = json.loads(config_path.read_text())
    config["eos_token_id"] = [engine.tokenizer.eos_token_id, greedy[k]]
    config_path.write_text(json.dumps(config))
    eos_engine = load(copy)
    yield eos_engine, k
    eos_engine.close()


def test_eos_stops_and_min_new_tokens_holds_it_off(eos_engine) -> None:
    eos_engine, k = eos_engine
    sink = run_jobs(eos_engine, make_job("a", PROMPTS[0], max_new_tokens=30, return_metadata=True),
                    make_job("b", PROMPTS[0], max_new_tokens=30, min_new_tokens=k + 4, return_metadata=True))
    assert sink.finals["a"][2][0] | {} == sink.finals["a"][2][0]
    assert sink.finals["a"][2][0]["finish_reason"] == "stop"
    assert sink.finals["a"][2][0]["generated_tokens"] == k
    assert sink.finals["b"][2][0]["generated_tokens"] >= k + 4


def test_no_repeat_ngram_and_repetition_penalty_match_hugging_face(engine: GenerationEngine) -> None:
    for prompt in PROMPTS[:2]:
        ids = hf_generate(engine, prompt, max_new_tokens=30, no_repeat_ngram_size=2)
        assert text_of(engine, prompt, max_new_tokens=30, no_repeat_ngram_size=2) == hf_text(engine, ids)
        full = engine.tokenize_ids(prompt) + ids
        grams = [tuple(full[i : i + 2]) for i in range(len(full) - 1)]
        assert len(grams) == len(set(grams))
        ids = hf_generate(engine, prompt, max_new_tokens=30, repetition_penalty=1.5)
        assert text_of(engine, prompt, max_new_tokens=30, repetition_penalty=1.5) == hf_text(engine, ids)


def test_sampling_parameters(engine: GenerationEngine) -> None:
    greedy = text_of(engine, PROMPTS[1], max_new_tokens=12)
    assert text_of(engine, PROMPTS[1], max_new_tokens=12, sampling_temperature=1.0, sampling_topk=1) == greedy
    # top-p so small that only the most likely token survives: greedy again, whatever the temperature.
    assert text_of(engine, PROMPTS[1], max_new_tokens=12, sampling_temperature=2.0, sampling_topk=0,
                   sampling_topp=1e-6) == greedy
    hot = [make_job(f"s{i}", PROMPTS[1], max_new_tokens=12, sampling_temperature=3.0, sampling_topk=0)
           for i in range(6)]
    sink = run_jobs(engine, *hot)
    outputs = {sink.finals[f"s{i}"][1][0] for i in range(6)}
    assert len(outputs) > 1 and outputs != {greedy}


def test_user_batch_answers_together_in_order(engine: GenerationEngine) -> None:
    singles = [text_of(engine, p, max_new_tokens=10) for p in PROMPTS[:3]]
    sink = run_jobs(engine, make_job("b", PROMPTS[:3], max_new_tokens=10, return_metadata=True))
    kind, texts, metadata, _ = sink.finals["b"]
    assert kind == "done" and texts == singles and len(metadata) == 3


def test_chat_template(engine: GenerationEngine) -> None:
    templated = engine.chat_prompt("Hello world")
    assert templated.startswith("<s><|user|>Hello world</s><|assistant|>")
    sink = run_jobs(engine, make_job("c", "Hello world", max_new_tokens=8, use_chat_template=True,
                                     return_metadata=True))
    _, texts, metadata, _ = sink.finals["c"]
    ids = engine.tokenizer(templated, add_special_tokens=False, return_tensors="pt")
    out = engine.model.generate(**ids, do_sample=False, max_new_tokens=8, pad_token_id=0)
    assert texts[0] == hf_text(engine, out[0, ids.input_ids.shape[1]:].tolist())
    assert metadata[0]["prompt_tokens"] == ids.input_ids.shape[1]


def test_streamed_tokens_join_to_the_final_text(engine: GenerationEngine) -> None:
    jobs = [make_job(f"s{i}", p, stream=True, max_new_tokens=25) for i, p in enumerate(PROMPTS)]
    jobs.append(make_job("batch", PROMPTS[:2], stream=True, max_new_tokens=25))
    sink = run_jobs(engine, *jobs)
    for i, prompt in enumerate(PROMPTS):
        assert sink.finals[f"s{i}"][0] == "done" and sink.finals[f"s{i}"][1] is None
        assert sink.streamed(f"s{i}") == text_of(engine, prompt, max_new_tokens=25)
        # a piece is sent only once its characters are complete (random bytes may still decode to U+FFFD inside)
        assert not any(piece.endswith("\ufffd") for piece in sink.tokens[(f"s{i}", 0)][:-1])
    assert sink.streamed("batch", 1) == text_of(engine, PROMPTS[1], max_new_tokens=25)


def test_logprobs_streamed_or_not_one_entry_per_generated_token(engine: GenerationEngine) -> None:
    """Rows with and without log probabilities share the batch; the entries are the same streamed or not."""
    jobs = [make_job("plain", PROMPTS[0], max_new_tokens=12, logprobs=2, return_metadata=True),
            make_job("streamed", PROMPTS[0], stream=True, max_new_tokens=12, logprobs=2),
            make_job("none", PROMPTS[1], max_new_tokens=12)]
    sink = run_jobs(engine, *jobs)
    plain, streamed = sink.logprobs[("plain", 0)], sink.logprobs[("streamed", 0)]
    assert len(plain) == sink.finals["plain"][2][0]["generated_tokens"]
    assert [(e["token"], round(e["logprob"], 5)) for e in plain] == \
        [(e["token"], round(e["logprob"], 5)) for e in streamed]
    for e in plain:
        assert len(e["top_logprobs"]) == 2 and e["top_logprobs"][0]["token"] == e["token"]  # greedy
        assert e["top_logprobs"][0]["logprob"] >= e["top_logprobs"][1]["logprob"] and e["logprob"] <= 0
    assert ("none", 0) not in sink.logprobs


def test_a_short_request_joins_a_running_batch_and_leaves_first(engine: GenerationEngine) -> None:
    alone = text_of(engine, PROMPTS[2], max_new_tokens=5)

    async def scenario() -> CollectingSink:
        sink = CollectingSink()
        long = asyncio.create_task(engine.run([make_job("long", PROMPTS[0], stream=True, max_new_tokens=300)], sink))
        while len(sink.tokens.get(("long", 0), [])) < 5:  # noqa: ASYNC110 — polls the sink
            await asyncio.sleep(0.002)
        steps_before = engine.scheduler.steps
        await engine.run([make_job("short", PROMPTS[2], max_new_tokens=5)], sink)
        assert "long" not in sink.finals, "the long request should still be running"
        assert engine.scheduler.steps - steps_before < 50
        await long
        return sink

    sink = asyncio.run(scenario())
    order = [e[1] for e in sink.events if e[0] == "done"]
    assert order == ["short", "long"]
    assert sink.finals["short"][1] == [alone]
    assert sink.streamed("long") == text_of(engine, PROMPTS[0], max_new_tokens=300)


def test_more_rows_than_slots_all_finish(llama: Path) -> None:
    small = load(llama, max_batch_size=2)
    try:
        jobs = [make_job(f"r{i}", PROMPTS[i % 4], max_new_tokens=6 + i) for i in range(5)]
        sink = run_jobs(small, *jobs)
        for i in range(5):
            assert sink.finals[f"r{i}"][1] == [text_of(small, PROMPTS[i % 4], max_new_tokens=6 + i)]
    finally:
        small.close()


def test_max_sequence_length(llama: Path) -> None:
    short = load(llama, max_sequence_length=12)
    try:
        sink = run_jobs(short, make_job("long", "word " * 30), make_job("ok", "Hi", max_new_tokens=50,
                                                                         return_metadata=True))
        kind, status, message = sink.finals["long"]
        assert (kind, status) == ("error", 422)
        assert "max_sequence_length is 12" in message and "prompt_max_tokens" in message
        metadata = sink.finals["ok"][2][0]
        assert metadata["finish_reason"] == "length"
        assert metadata["prompt_tokens"] + metadata["generated_tokens"] <= 12
    finally:
        short.close()


def test_constrained_decoding(engine: GenerationEngine) -> None:
    assert re.fullmatch(r"[0-9]{3}", text_of(engine, PROMPTS[0], max_new_tokens=10, regex_string="[0-9]{3}"))
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    sink = run_jobs(engine, make_job("s", PROMPTS[1], max_new_tokens=40, json_schema=schema, return_metadata=True))
    out, reason = sink.finals["s"][1][0], sink.finals["s"][2][0]["finish_reason"]
    if reason == "stop":  # a random model may be cut by the limit; tests/readers/test_constrained.py has the rest
        assert set(json.loads(out)) == {"n"}, out
        assert isinstance(json.loads(out)["n"], (int, float)), out
    assert out.startswith("{"), out
    sink = run_jobs(engine, make_job("bad", "x", json_schema="{not json"))
    assert sink.finals["bad"][:2] == ("error", 422)


def test_cancel_ends_the_job(engine: GenerationEngine) -> None:
    async def scenario() -> CollectingSink:
        sink = CollectingSink()
        task = asyncio.create_task(engine.run([make_job("c", PROMPTS[0], stream=True, max_new_tokens=400)], sink))
        while not sink.tokens:  # noqa: ASYNC110 — polls the sink
            await asyncio.sleep(0.002)
        assert engine.cancel("c")
        await task
        return sink

    sink = asyncio.run(scenario())
    assert sink.finals["c"][:2] == ("error", 499)


def test_tokenizer_helpers(engine: GenerationEngine) -> None:
    ids = engine.tokenize_ids("Hello world")
    tokens = engine.tokenize("Hello world")
    assert len(ids) == len(tokens) and tokens[0] == "<s>"
    assert engine.tokenize("Hello world", skip_special_tokens=True) == tokens[1:]
    assert engine.detokenize(ids, skip_special_tokens=True) == "Hello world"
    assert engine.detokenize(tokens[1:]) == "Hello world"
    rendered = engine.apply_chat_template([[{"role": "user", "content": "hi"}]], add_generation_prompt=False)
    assert rendered == ["<s><|user|>hi</s>"]


def test_tokenizer_operations(engine: GenerationEngine) -> None:
    from liftoff.readers.engines.base import EngineRequestError

    out = engine.tokenizer_op("tokenize", {"text": "Hello world", "skip_special_tokens": True})
    assert out["tokens_count"] == len(out["tokens"]) and out["tokens"][0] != "<s>"
    assert engine.tokenizer_op("detokenize", {"tokens": out["tokens"]}) == {"text": "Hello world"}
    messages = engine.tokenizer_op("chat_template", {"inputs": [[{"role": "user", "content": "hi"}]],
                                                     "add_generation_prompt": True})
    assert messages == {"messages": ["<s><|user|>hi</s><|assistant|>"]}
    with pytest.raises(EngineRequestError) as info:
        engine.tokenizer_op("detokenize", {"tokens": [10**9]})
    assert info.value.status == 422


def test_a_cancelled_job_is_dropped_at_the_next_step(engine: GenerationEngine) -> None:
    async def scenario() -> CollectingSink:
        sink = CollectingSink()
        job = make_job("c", PROMPTS[0], stream=True, max_new_tokens=400)
        task = asyncio.create_task(engine.run([job], sink))
        while not sink.tokens:  # noqa: ASYNC110 — polls the sink
            await asyncio.sleep(0.002)
        job.cancelled = True
        await task
        return sink

    assert asyncio.run(scenario()).finals["c"][:2] == ("error", 499)


def test_sampling_defaults_are_what_generation_config_writes(tmp_path: Path) -> None:
    from liftoff.readers.engines.generation import read_sampling_defaults

    assert read_sampling_defaults(tmp_path) is None  # no file
    (tmp_path / "generation_config.json").write_text('{"bos_token_id": 1, "eos_token_id": 2}')
    assert read_sampling_defaults(tmp_path) is None  # nothing about sampling
    (tmp_path / "generation_config.json").write_text('{"do_sample": true, "temperature": 0.7, "top_p": 0.8, '
                                                     '"top_k": 20, "repetition_penalty": 1.05}')
    assert read_sampling_defaults(tmp_path) == {"temperature": 0.7, "top_p": 0.8, "top_k": 20.0}
