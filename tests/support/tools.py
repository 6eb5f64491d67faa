"""Tiny random Llamas whose chat templates know tool calls (Hermes `<tool_call>`, Mistral `[TOOL_CALLS]`), the
tool schemas the tool-calling tests send, and a module's server that serves the Hermes one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .models import build_llama, llama_over, wordpiece_tokenizer
from .servers import Server, ServerFactory, server_factory

HERMES_TEMPLATE = (
    "{{ bos_token }}{% if tools %}<|system|>Functions: {% for t in tools %}{{ t.function.name }} {% endfor %}. "
    "Call one as <tool_call>{\"name\": ..., \"arguments\": ...}</tool_call>{{ eos_token }}{% endif %}"
    "{% for m in messages %}{% if m.role == 'tool' %}<|user|><tool_response>{{ m.content }}</tool_response>"
    "{{ eos_token }}{% elif m.role == 'assistant' and m.tool_calls %}<|assistant|>{% for c in m.tool_calls %}"
    "<tool_call>\n{{ {'name': c.function.name, 'arguments': c.function.arguments} | tojson }}\n</tool_call>"
    "{% endfor %}{{ eos_token }}{% else %}<|{{ m.role }}|>{{ m.content }}{{ eos_token }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% if tools %}[AVAILABLE_TOOLS]{{ tools | map(attribute='function.name') | join(',') }}"
    "[/AVAILABLE_TOOLS]{% endif %}"
    "{% for m in messages %}{% if m.role == 'user' %}[INST]{{ m.content }}[/INST]"
    "{% elif m.role == 'assistant' and m.tool_calls %}[TOOL_CALLS]{{ m.tool_calls | tojson }}{{ eos_token }}"
    "{% elif m.role == 'tool' %}[TOOL_RESULTS]{{ m.content }}[/TOOL_RESULTS]"
    "{% else %}{{ m.content }}{{ eos_token }}{% endif %}{% endfor %}"
)
# A chat template that shows no tools and no call format (most small chat models'): only forced calls work on it.
PLAIN_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{{ eos_token }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
WEATHER = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8},
                                            "days": {"type": "integer", "minimum": 1, "maximum": 7}},
           "required": ["city", "days"], "additionalProperties": False}
ADD = {"type": "object", "properties": {"a": {"type": "integer", "minimum": 0, "maximum": 99},
                                        "b": {"type": "integer", "minimum": 0, "maximum": 99}},
       "required": ["a", "b"], "additionalProperties": False}
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "description": "weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "add", "description": "add two numbers", "parameters": ADD}},
]
SCHEMAS = {"get_weather": WEATHER, "add": ADD}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def build_tool_model(path: Path, template: str, wordpiece: bool = False) -> None:
    from transformers import AutoTokenizer

    if wordpiece:  # BERT-style pieces (`##x` continues a word): what the model writes is not what the pieces read
        words = [HERMES_TEMPLATE, json.dumps(TOOLS), "the weather in paris true false null 0 1 2 3 4 5 6 7 8 9"]
        llama_over(path, wordpiece_tokenizer(words, extra_chars="<>_|/-+=()"))
    else:
        build_llama(path, max_positions=1024)
    tok = AutoTokenizer.from_pretrained(path)
    tok.chat_template = template
    tok.save_pretrained(path)


HERMES_READER = {"model_name": "hermes", "consumer_group": "hermes", "reader_id": "hermes", "max_batch_size": 8,
                 "max_sequence_length": 1024}


def hermes_server(tmp_path_factory: pytest.TempPathFactory, redis_url: str, name: str, readers: list[dict[str, Any]],
                  **settings: Any) -> Iterator[Server]:
    """A module's server whose repository holds the Hermes-template Llama in `hermes` (HERMES_READER serves it), with
    `readers`; stopped when the module is done (`yield from` it in a module fixture)."""
    repo = tmp_path_factory.mktemp("artefacts")
    build_tool_model(repo / "hermes", HERMES_TEMPLATE)
    servers: list[Server] = []
    make: ServerFactory = server_factory(tmp_path_factory.mktemp(name), redis_url, servers)
    srv = make(readers=readers, repository_path=str(repo), reserved_consumers="", request_timeout_s=120.0, **settings)
    yield srv
    srv.stop()
