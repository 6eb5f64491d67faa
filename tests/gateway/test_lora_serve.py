"""LoRA adapters through a real `liftoff serve`: a random Llama reader with two random peft adapters in its `loras`,
picked with `lora_id` on /generate and with `model: "<group>:<adapter>"` through the official `openai` client,
listed in /v1/models, /status and /config; a third added and removed through the management API while it runs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # the readers `liftoff serve` starts inherit it: nothing is downloaded

from support.models import build_llama, build_lora, peft_greedy
from support.servers import Server, ServerFactory

PROMPT = "The quick brown fox"
NEW = 12


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("artefacts")
    build_llama(repo / "base")
    build_lora(repo / "base", repo / "alpha", seed=1)
    build_lora(repo / "base", repo / "beta", seed=2, rank=4, targets=("k_proj", "o_proj", "up_proj"))
    build_lora(repo / "base", repo / "gamma", seed=3, targets=("q_proj", "gate_proj"))
    return repo


@pytest.fixture(scope="module")
def expected(repo: Path) -> dict[str | None, str]:
    out = {name: peft_greedy(repo / "base", repo / name if name else None, PROMPT, NEW)
           for name in (None, "alpha", "beta", "gamma")}
    assert len(set(out.values())) == 4, out
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, redis_url: str, repo: Path) -> Iterator[Server]:
    from support.servers import server_factory

    servers: list[Server] = []
    make: ServerFactory = server_factory(tmp_path_factory.mktemp("lora"), redis_url, servers)
    readers = [{"model_name": "base", "consumer_group": "llama", "reader_id": "llama-0", "max_batch_size": 8,
                "loras": "alpha, b=beta"}]  # the comma-separated form
    srv = make(readers=readers, repository_path=str(repo), reserved_consumers="", request_timeout_s=120.0)
    yield srv
    srv.stop()


def generate(server: Server, lora: str | None) -> httpx.Response:
    body: dict[str, Any] = {"text": PROMPT, "consumer_group": "llama", "max_new_tokens": NEW, "min_new_tokens": NEW}
    if lora is not None:
        body["lora_id"] = lora
    return httpx.post(server.url + "/generate", json=body, timeout=120)


def test_lora_id_picks_the_adapter_also_when_requests_share_a_batch(server: Server,
                                                                   expected: dict[str | None, str]) -> None:
    picks = [None, "alpha", "b"] * 3
    with ThreadPoolExecutor(len(picks)) as pool:
        answers = list(pool.map(lambda lora: generate(server, lora), picks))
    for lora, answer in zip(picks, answers, strict=True):
        assert answer.status_code == 200, answer.text
        assert answer.json()["text"] == expected["beta" if lora == "b" else lora]


def test_openai_group_adapter_models(server: Server, expected: dict[str | None, str]) -> None:
    client = server.openai_client(120)
    ids = {m.id: m for m in client.models.list().data}
    assert {"llama", "llama:alpha", "llama:b"} <= set(ids)
    assert ids["llama:b"].model_extra["parent"] == "llama"
    assert client.models.retrieve("llama:alpha").id == "llama:alpha"
    for model, name in (("llama", None), ("llama:alpha", "alpha"), ("llama:b", "beta")):
        done = client.completions.create(model=model, prompt=PROMPT, max_tokens=NEW, temperature=0,
                                         extra_body={"min_tokens": NEW})
        assert done.model == model and done.choices[0].text == expected[name]
    with pytest.raises(openai.NotFoundError) as missing:
        client.completions.create(model="llama:nope", prompt=PROMPT, max_tokens=2)
    assert missing.value.code == "model_not_found" and "'nope'" in str(missing.value)
    assert "['alpha', 'b']" in str(missing.value)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("llama:nope")


def test_unknown_adapter_is_404_naming_the_known_ones(server: Server) -> None:
    answer = generate(server, "nope")
    assert answer.status_code == 404, answer.text
    assert "'nope'" in answer.json()["error"] and "['alpha', 'b']" in answer.json()["error"]


def test_status_and_config_list_the_adapters(server: Server) -> None:
    reader = server.status()["status"]["live_readers"]["llama-0"]
    assert [a["name"] for a in reader["loras"]] == ["alpha", "b"]
    assert reader["loras"][1]["rank"] == 4 and reader["loras"][1]["source"] == "beta"
    config = httpx.get(server.mgmt + "/config/llama-0", timeout=5).json()
    assert config["loras"] == ["alpha=alpha", "b=beta"]


def test_adapters_added_and_removed_through_the_management_api(server: Server,
                                                               expected: dict[str | None, str]) -> None:
    loras = server.mgmt + "/reader/llama-0/loras"
    added = httpx.post(loras, json={"source": "gamma"}, timeout=120)
    assert added.status_code == 201, added.text
    assert added.json()["name"] == "gamma" and added.json()["bytes"] > 0
    assert generate(server, "gamma").json()["text"] == expected["gamma"]
    client = server.openai_client(120)
    assert "llama:gamma" in {m.id for m in client.models.list().data}
    again = httpx.post(loras, json={"source": "gamma"}, timeout=120)
    assert again.status_code == 409, again.text
    bad = httpx.post(loras, json={"source": "gamma", "rank": 3}, timeout=5)
    assert bad.status_code == 400 and "'rank'" in bad.text
    nothing = httpx.post(loras, json={"source": "missing-adapter"}, timeout=120)
    assert nothing.status_code == 422 and "missing-adapter" in nothing.text
    assert httpx.post(server.mgmt + "/reader/nobody/loras", json={"source": "gamma"}, timeout=5).status_code == 404

    removed = httpx.delete(loras + "/gamma", timeout=30)
    assert removed.status_code == 200 and removed.json() == {"removed": "gamma"}
    assert generate(server, "gamma").status_code == 404
    assert httpx.delete(loras + "/gamma", timeout=30).status_code == 404
    assert "llama:gamma" not in {m.id for m in client.models.list().data}
    assert generate(server, "alpha").json()["text"] == expected["alpha"]
