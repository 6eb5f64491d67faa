"""A model whose vocabulary holds its tool-call marker as a special token (Mistral's `[TOOL_CALLS]`): decoding skips
special tokens, so a request with tools keeps that marker in its text (the gateway's parser needs it), and a
request without tools does not."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from liftoff.core.reader_config import ReaderConfig
from liftoff.readers.engines.generation import GenerationEngine
from liftoff.readers.engines.tokenizer_tools import IncrementalDetokenizer, decode_text

from support.models import build_tokenizer, llama_over, make_job, run_jobs

MARKER = "[TOOL_CALLS]"
TEMPLATE = ("{{ bos_token }}{% if tools %}[AVAILABLE_TOOLS]x[/AVAILABLE_TOOLS]{% endif %}"
            "{% for m in messages %}{% if m.tool_calls %}[TOOL_CALLS]{{ m.tool_calls | tojson }}{% else %}"
            "[INST]{{ m.content }}[/INST]{% endif %}{% endfor %}")
TOOLS = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
PROMPT = "Hello world"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory):
    import torch
    from transformers import AutoModelForCausalLM

    work = tmp_path_factory.mktemp("markers")
    tok = build_tokenizer(work / "tok")
    tok.add_tokens([MARKER], special_tokens=True)
    tok.chat_template = TEMPLATE
    path = llama_over(work / "mistral-like", tok)
    prompt = _load(path)
    ids = prompt.tokenize_ids(PROMPT)
    prompt.close()
    # the model's first greedy token becomes the marker: its output row is that token's, doubled
    model = AutoModelForCausalLM.from_pretrained(path)
    marker_id = tok.convert_tokens_to_ids(MARKER)
    with torch.no_grad():
        first_token = int(model(torch.tensor([ids])).logits[0, -1].argmax())
        model.lm_head.weight[marker_id] = model.lm_head.weight[first_token] * 2
    model.save_pretrained(path)
    engine = _load(path)
    yield engine
    engine.close()


def _load(path: Path) -> GenerationEngine:
    engine = GenerationEngine(ReaderConfig(model_name=str(path), max_batch_size=4))
    asyncio.run(engine.load())
    return engine


def _job(request_id: str, tools: bool, stream: bool = False):
    job = make_job(request_id, PROMPT, stream=stream, max_new_tokens=6, min_new_tokens=6)
    if tools:
        job.item = job.item.model_copy(update={"tools": TOOLS})
    return job


def test_the_marker_is_a_special_token_the_engine_keeps(engine: GenerationEngine) -> None:
    marker_id = engine.tokenizer.convert_tokens_to_ids(MARKER)
    assert engine.tool_call_parser() == "mistral" and engine.tool_markers == frozenset({marker_id})
    assert decode_text(engine.tokenizer, [marker_id]) == ""  # what plain decoding does with it
    ids = [*engine.tokenize_ids("ab"), marker_id, *engine.tokenize_ids(" [{")]
    assert decode_text(engine.tokenizer, ids, engine.tool_markers) == "ab[TOOL_CALLS] [{"
    detok = IncrementalDetokenizer(engine.tokenizer, engine.tool_markers)
    assert "".join(detok.add(i) for i in ids) + detok.flush() == "ab[TOOL_CALLS] [{"


def test_a_tool_request_keeps_the_marker_whole_or_streamed(engine: GenerationEngine) -> None:
    sink = run_jobs(engine, _job("tools", True), _job("plain", False), _job("streamed", True, stream=True))
    with_tools, plain = sink.finals["tools"][1][0], sink.finals["plain"][1][0]
    assert with_tools.startswith(MARKER), with_tools
    assert MARKER not in plain and with_tools.replace(MARKER, "") == plain
    assert sink.streamed("streamed") == with_tools
