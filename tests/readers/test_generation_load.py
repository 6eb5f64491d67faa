"""The generation engine under real load, through real gateway and reader processes, on a ~100M-parameter random
Llama whose 2,000-token prefill takes seconds on this CPU (a tiny model would hide every timing bug here)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from support.models import build_llama, build_small_llama, long_text
from support.servers import Server, ServerFactory, parse_sse

pytestmark = pytest.mark.slow

KV_PLAN = "96MB"  # the ~100M model keeps 24,576 bytes per token: 3,906 tokens (244 blocks)
MEDIUM_PLAN_BYTES = 48 * 10**6  # the medium model keeps 8,192 bytes per token: 5,859 tokens


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("artefacts")
    build_small_llama(path / "small-llama")
    build_llama(path / "medium-llama", hidden=256, layers=4, heads=4, kv_heads=4, max_positions=4096, seed=1)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, redis_url: str, repo: Path) -> Iterator[Server]:
    from support.servers import server_factory

    servers: list[Server] = []
    make: ServerFactory = server_factory(tmp_path_factory.mktemp("load"), redis_url, servers)
    readers = [
        {"model_name": "small-llama", "consumer_group": "primary", "reader_id": "small", "page_cache_size": KV_PLAN},
        {"model_name": "medium-llama", "consumer_group": "medium", "reader_id": "medium",
         "page_cache_size": MEDIUM_PLAN_BYTES},
    ]
    server = make(readers=readers, repository_path=str(repo), reserved_consumers="", request_timeout_s=300.0)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tokenizer(repo: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(repo / "small-llama")


def stream(server: Server, body: dict, events: list[tuple[str, str]], started: threading.Event | None = None) -> None:
    with httpx.stream("POST", server.url + "/generate_stream", json=body, timeout=300) as response:
        buffer = ""
        for chunk in response.iter_text():
            buffer += chunk
            *complete, buffer = buffer.split("\n\n")
            for block in complete:
                events.extend(parse_sse(block + "\n\n"))
                if started is not None and len(events) >= 3:
                    started.set()
        events.extend(parse_sse(buffer + "\n\n"))


def test_running_streams_keep_every_token_while_a_long_prompt_prefills(server: Server, tokenizer) -> None:
    body = {"max_new_tokens": 60, "min_new_tokens": 60, "return_metadata": True}
    streams: list[list[tuple[str, str]]] = [[] for _ in range(4)]
    started = [threading.Event() for _ in streams]
    threads = [threading.Thread(target=stream, args=(server, {"text": f"stream {i} says", **body}, events, flag))
               for i, (events, flag) in enumerate(zip(streams, started, strict=True))]
    for thread in threads:
        thread.start()
    for flag in started:
        assert flag.wait(120), "a stream never started"
    long_prompt = long_text(2000, tokenizer)
    t0 = time.monotonic()
    long = httpx.post(server.url + "/generate", json={"text": long_prompt, "max_new_tokens": 4,
                                                        "return_metadata": True}, timeout=300)
    long_s = time.monotonic() - t0
    for thread in threads:
        thread.join(300)
    assert long.status_code == 200, long.text
    assert long.json()["metadata"]["prompt_tokens"] >= 2000
    for events in streams:
        kinds = [name for name, _ in events]
        assert "error" not in kinds, events[-3:]
        metadata = json.loads(events[-1][1])["metadata"]
        assert events[-1][0] == "metadata" and metadata["generated_tokens"] == 60, events[-3:]
    assert long_s > 1.0, f"the long prefill took only {long_s:.2f}s: the model is too small to show anything"


def test_a_stopped_reader_still_ends_its_streams_with_the_documented_error(server: Server) -> None:
    pid = server.reader_pid("small")
    events: list[tuple[str, str]] = []
    started = threading.Event()
    thread = threading.Thread(target=stream, args=(server, {"text": "stop me", "max_new_tokens": 400,
                                                            "min_new_tokens": 400}, events, started))
    thread.start()
    assert started.wait(120)
    os.kill(pid, signal.SIGSTOP)
    try:
        stopped = time.monotonic()
        thread.join(30)
        ended_after = time.monotonic() - stopped
    finally:
        os.kill(pid, signal.SIGCONT)
    assert not thread.is_alive()
    assert events[-1][0] == "error" and "reader_message_timeout_ms" in events[-1][1], events[-2:]
    assert ended_after < 5, f"a stopped reader was caught only after {ended_after:.1f}s"
    # once resumed, the reader serves again
    wait = time.monotonic() + 60
    while time.monotonic() < wait:
        answer = httpx.post(server.url + "/generate", json={"text": "back?", "max_new_tokens": 2}, timeout=60)
        if answer.status_code == 200:
            break
        time.sleep(0.5)
    assert answer.status_code == 200, answer.text


def test_a_shared_prefix_is_served_from_the_cache(server: Server, tokenizer) -> None:
    prefix = "A prefix of its own. " + long_text(1000, tokenizer)  # shares no block with the other tests' prompts
    first = httpx.post(server.url + "/generate", json={"text": prefix + " first question?", "max_new_tokens": 4,
                                                         "return_metadata": True}, timeout=300).json()
    second = httpx.post(server.url + "/generate", json={"text": prefix + " another one?", "max_new_tokens": 4,
                                                          "return_metadata": True}, timeout=300).json()
    assert second["metadata"]["cached_prompt_tokens"] >= 900, second["metadata"]
    assert first["metadata"]["cached_prompt_tokens"] < second["metadata"]["cached_prompt_tokens"]
    metrics = httpx.get(server.mgmt + "/metrics", timeout=10).text
    hits = [line for line in metrics.splitlines()
            if line.startswith('liftoff_prefix_cache_hits_total{consumer_group="primary"}')]
    assert hits and float(hits[0].split()[-1]) >= 900
    assert 'liftoff_kv_cache_blocks{consumer_group="primary"} 244.0' in metrics
    assert 'prefill_count_total{consumer_group="primary"}' in metrics


def test_a_request_that_can_never_fit_gets_422(server: Server) -> None:
    answer = httpx.post(server.url + "/generate", json={"text": "hello", "max_new_tokens": 4000}, timeout=60)
    assert answer.status_code == 422, answer.text
    assert "holds 3904 tokens" in answer.text and "prompt + up to 4000 new" in answer.text, answer.text


def test_twenty_long_requests_leave_the_reader_within_its_plan(server: Server, tokenizer) -> None:
    reader = psutil.Process(server.reader_pid("medium"))
    before = reader.memory_info().rss
    prompts = [f"{i} " + long_text(2000, tokenizer) for i in range(20)]  # distinct: nothing to share
    results: list[int] = []

    def one(prompt: str) -> None:
        results.append(httpx.post(server.url + "/generate", json={"text": prompt, "consumer_group": "medium",
                                                                  "max_new_tokens": 8}, timeout=300).status_code)

    threads = [threading.Thread(target=one, args=(p,)) for p in prompts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert results == [200] * 20
    grown = reader.memory_info().rss - before
    # 20 x 2,000 tokens would keep ~330 MB of KV without a plan; the plan is 48 MB, plus working memory
    assert grown < MEDIUM_PLAN_BYTES + 80 * 10**6, f"the reader grew by {grown / 1e6:.0f} MB"
