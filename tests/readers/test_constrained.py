"""Structured outputs through the generation engine (llguidance): JSON schemas, regexes and OpenAI's json_object, on
tiny random Llamas with byte-level BPE, WordPiece and Metaspace (SentencePiece-style) tokenizers."""

from __future__ import annotations

import asyncio
import json
import os
import re
from pathlib import Path

import jsonschema
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from liftoff.core.reader_config import ReaderConfig
from liftoff.readers.engines.generation import GenerationEngine

from support.models import CORPUS, CollectingSink, build_llama, llama_over, make_job, run_jobs, wordpiece_tokenizer

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "ok": {"type": "boolean"},
    },
    "required": ["name", "age", "ok"],
    "additionalProperties": False,
}
PROMPTS = ["Hello world", "The quick brown fox", "A reader holds a model", "Numbers 0 1 2"]
JSON_TEXT = ['{"name": "ab", "age": 12, "ok": true}', '{ "a" : [1, 2.5, "x"], "b": {"c": null, "d": false} }']


def _wordpiece(path: Path):
    return wordpiece_tokenizer(CORPUS + JSON_TEXT)


def _metaspace_tokenizer(path: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  show_progress=False)
    tok.train_from_iterator(CORPUS + JSON_TEXT * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>")


@pytest.fixture(scope="module", params=["bpe", "wordpiece", "metaspace"])
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "bpe":
        path = build_llama(root / "model")
    else:
        build = _wordpiece if request.param == "wordpiece" else _metaspace_tokenizer
        path = llama_over(root / "model", build(root))
    engine = GenerationEngine(ReaderConfig(model_name=str(path), max_batch_size=8))
    asyncio.run(engine.load())
    yield engine
    engine.close()



def outputs(sink: CollectingSink, ids: list[str]) -> list[tuple[str, str]]:
    """(text, finish_reason) of each job, which must have succeeded."""
    out = []
    for rid in ids:
        kind, texts, metadata, _ = sink.finals[rid]
        assert kind == "done", sink.finals[rid]
        out.append((texts[0], metadata[0]["finish_reason"]))
    return out


def jobs_for(prefix: str, count: int, **params) -> list:
    params.setdefault("return_metadata", True)
    return [make_job(f"{prefix}{i}", PROMPTS[i % len(PROMPTS)], sampling_temperature=0.0 if i % 2 else 1.0,
                     sampling_topk=0, seed=i, **params) for i in range(count)]


def test_json_schema_outputs_validate(engine: GenerationEngine) -> None:
    jobs = jobs_for("s", 8, max_new_tokens=64, json_schema=SCHEMA)
    results = outputs(run_jobs(engine, *jobs), [j.item.id for j in jobs])
    stops = 0
    for text, reason in results:
        if reason == "stop":
            jsonschema.validate(json.loads(text), SCHEMA)
            stops += 1
        else:
            assert reason == "length", (text, reason)
    assert stops >= 4, results


def test_a_schema_silent_on_other_keys_gets_exactly_the_listed_ones(engine: GenerationEngine) -> None:
    """No `additionalProperties`: only the listed keys are written (the Takeoff server's and vLLM's behaviour), so
    every answer closes its object and stops, rather than a random model adding keys until max_new_tokens."""
    schema = {"type": "object", "properties": {"a": {"type": "string", "maxLength": 6},
                                               "b": {"type": "integer", "minimum": 0, "maximum": 99}},
              "required": ["a", "b"]}
    jobs = jobs_for("k", 8, max_new_tokens=64, json_schema=schema)
    for text, reason in outputs(run_jobs(engine, *jobs), [j.item.id for j in jobs]):
        assert reason == "stop" and set(json.loads(text)) == {"a", "b"}, (text, reason)
    allowed = {**schema, "additionalProperties": True}  # a schema that allows more keeps what it says
    jobs = jobs_for("m", 2, max_new_tokens=64, json_schema=allowed)
    for text, reason in outputs(run_jobs(engine, *jobs), [j.item.id for j in jobs]):
        assert reason == "length" or {"a", "b"} <= set(json.loads(text)), (text, reason)


def test_the_grammar_view_is_ready_when_the_engine_is(engine: GenerationEngine) -> None:
    assert engine.grammars._view is not None  # built at load: the first constrained request pays no more


def test_json_object_is_a_json_object(engine: GenerationEngine) -> None:
    """OpenAI's response_format json_object arrives as json_schema {"type": "object"}. WordPiece: the text the
    grammar checked is the text returned (no `##` left on a continuation piece)."""
    jobs = jobs_for("o", 4, max_new_tokens=48, json_schema={"type": "object"})
    for text, reason in outputs(run_jobs(engine, *jobs), [j.item.id for j in jobs]):
        assert text.startswith("{"), text
        if reason == "stop":
            assert isinstance(json.loads(text), dict), text


def test_regex_string(engine: GenerationEngine) -> None:
    jobs = jobs_for("r", 4, max_new_tokens=20, regex_string=r"[0-9]{3}-[a-z]{2}")
    for text, reason in outputs(run_jobs(engine, *jobs), [j.item.id for j in jobs]):
        assert reason == "stop" and re.fullmatch(r"[0-9]{3}-[a-z]{2}", text), (text, reason)


def test_streamed_constrained_text_joins_to_the_checked_text(engine: GenerationEngine) -> None:
    job = make_job("st", PROMPTS[0], stream=True, max_new_tokens=64, json_schema=SCHEMA, return_metadata=True)
    sink = run_jobs(engine, job)
    assert sink.finals["st"][0] == "done", sink.finals["st"]
    text = "".join(sink.tokens.get(("st", 0), []))
    if sink.finals["st"][2][0]["finish_reason"] == "stop":
        jsonschema.validate(json.loads(text), SCHEMA)
    assert text.startswith("{"), text


def test_cut_by_the_token_limit_says_length(engine: GenerationEngine) -> None:
    job = make_job("cut", PROMPTS[1], max_new_tokens=3, json_schema=SCHEMA, return_metadata=True)
    [(text, reason)] = outputs(run_jobs(engine, job), ["cut"])
    assert reason == "length" and text.startswith("{"), (text, reason)


def test_unusable_constraints_are_refused_by_name(engine: GenerationEngine) -> None:
    sink = run_jobs(engine, make_job("f", "x", json_schema={"type": "string", "format": "bogus"}),
               make_job("l", "x", regex_string="(?<=a)b"),
               make_job("b", "x", json_schema={"type": "object"}, constrained_decoding_backend="lmfe"),
               make_job("j", "x", json_schema="{not json"))
    for rid, words in (("f", "bogus"), ("l", "look-around"), ("b", "lmfe"), ("j", "not valid JSON")):
        kind, status, message = sink.finals[rid]
        assert (kind, status) == ("error", 422) and words in message, sink.finals[rid]


def test_a_second_request_hits_the_grammar_cache(engine: GenerationEngine) -> None:
    schema = {"type": "object", "properties": {"k": {"type": "integer"}}, "required": ["k"]}
    grammars = engine.grammars
    assert grammars is not None
    run_jobs(engine, make_job("c1", "x", max_new_tokens=8, json_schema=schema))
    compiles, hits = grammars.compiles, grammars.hits
    run_jobs(engine, make_job("c2", "y", max_new_tokens=8, json_schema=json.dumps(schema)))
    assert (grammars.compiles, grammars.hits) == (compiles, hits + 1)
