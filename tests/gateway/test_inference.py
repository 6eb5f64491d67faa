"""The inference port end to end: real gunicorn, real Redis, a real echo reader process."""

from __future__ import annotations

import socket

import httpx
import pytest

from support.servers import Server, parse_sse


def post(server: Server, path: str, **kwargs: object) -> httpx.Response:
    return httpx.post(server.url + path, timeout=15, **kwargs)  # type: ignore[arg-type]


def test_generate_single_prompt(echo_server: Server) -> None:
    r = post(echo_server, "/generate", json={"text": "hello world"})
    assert r.status_code == 200, r.text
    assert r.json() == {"text": "hello world"}


def test_generate_user_batch_keeps_order(echo_server: Server) -> None:
    texts = [f"prompt number {i}" for i in range(20)]
    r = post(echo_server, "/generate", json={"text": texts})
    assert r.status_code == 200, r.text
    assert r.json() == {"text": texts}


def test_every_optional_field_may_be_null(echo_server: Server) -> None:
    fields = [
        "consumer_group", "sampling_temperature", "sampling_topp", "sampling_topk", "repetition_penalty",
        "no_repeat_ngram_size", "max_new_tokens", "min_new_tokens", "regex_string", "json_schema",
        "constrained_decoding_backend", "prompt_max_tokens", "return_metadata", "use_chat_template", "lora_id",
    ]
    body = {"text": "nulls are defaults", **{f: None for f in fields}}
    for path in ("/generate", "/generate_stream"):
        r = post(echo_server, path, json=body)
        assert r.status_code == 200, r.text
    assert post(echo_server, "/generate", json=body).json() == {"text": "nulls are defaults"}


def test_max_new_tokens_and_metadata(echo_server: Server) -> None:
    body = {"text": "one two three four", "max_new_tokens": 2, "return_metadata": True}
    r = post(echo_server, "/generate", json=body)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["text"] == "one two"
    assert body["metadata"]["prompt_tokens"] == 4
    assert body["metadata"]["generated_tokens"] == 2


def test_stream_single_prompt_survives_newlines_and_spaces(echo_server: Server) -> None:
    text = "line one\nline two\n\n  indented\r\nand a trailing space "
    r = post(echo_server, "/generate_stream", json={"text": text})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    assert all(name == "message" for name, _ in events)
    assert len(events) > 5  # one event per token
    assert "".join(data for _, data in events) == text.replace("\r\n", "\n")


def test_stream_user_batch_events_carry_batch_id(echo_server: Server) -> None:
    texts = ["alpha beta", "gamma\ndelta", "epsilon"]
    r = post(echo_server, "/generate_stream", json={"text": texts, "return_metadata": True})
    assert r.status_code == 200, r.text
    events = parse_sse(r.text)
    import json

    joined = ["", "", ""]
    for name, data in events:
        if name == "metadata":
            meta = json.loads(data)["metadata"]
            assert [m["generated_tokens"] for m in meta] == [2, 2, 1]
            continue
        payload = json.loads(data)
        joined[payload["batch_id"]] += payload["text"]
    assert joined == texts
    assert events[-1][0] == "metadata"


def test_malformed_json_is_400(echo_server: Server) -> None:
    r = post(echo_server, "/generate", content=b'{"text": "unterminated', headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert "not valid JSON" in r.json()["error"]
    assert post(echo_server, "/generate", content=b"[1, 2]").status_code == 400
    assert post(echo_server, "/generate", content=b"").status_code == 400


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"text": 5}, "text"),
        ({"nottext": "x"}, "text"),
        ({"text": "x", "max_new_tokens": "many"}, "max_new_tokens"),
        ({"text": "x", "max_new_tokens": 0}, "max_new_tokens"),
        ({"text": "x", "sampling_topp": 1.5}, "sampling_topp"),
        ({"text": "x", "sampling_temperature": -1}, "sampling_temperature"),
        ({"text": "x", "return_metadata": "yes"}, "return_metadata"),
        ({"text": "x", "regex_string": "(unclosed"}, "regex_string"),
        ({"text": []}, "text"),
        ({"text": ["ok", 3]}, "text"),
    ],
)
def test_wrong_types_are_422_naming_the_field(echo_server: Server, body: dict[str, object], field: str) -> None:
    for path in ("/generate", "/generate_stream"):
        r = post(echo_server, path, json=body)
        assert r.status_code == 422, r.text
        err = r.json()
        assert field in err["error"]
        assert any(d["field"].startswith(field) for d in err["details"])


def test_min_new_tokens_above_max_is_422(echo_server: Server) -> None:
    r = post(echo_server, "/generate", json={"text": "x", "min_new_tokens": 10, "max_new_tokens": 5})
    assert r.status_code == 422
    assert "min_new_tokens" in r.json()["error"]


def test_oversized_body_is_413_before_it_is_read(echo_server: Server) -> None:
    limit = 2_097_152
    r = post(echo_server, "/generate", content=b"x" * (limit + 1))
    assert r.status_code == 413
    assert "body_size_limit_bytes" in r.json()["error"]
    # Declared length over the limit: answered from the headers alone, while the body is still unsent.
    with socket.create_connection(("127.0.0.1", echo_server.ports["port"]), timeout=10) as sock:
        sock.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100000000\r\n\r\n")
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 413")


def test_chunked_oversized_body_is_413(echo_server: Server) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(40):
            yield b"x" * 65536

    r = post(echo_server, "/generate", content=chunks())
    assert r.status_code == 413


def test_unknown_group_is_404_listing_known_groups(echo_server: Server) -> None:
    r = post(echo_server, "/generate", json={"text": "x", "consumer_group": "nope"})
    assert r.status_code == 404
    body = r.json()
    assert "nope" in body["error"]
    assert "primary" in body["details"]["known_groups"]
    assert post(echo_server, "/generate_stream", json={"text": "x", "consumer_group": "nope"}).status_code == 404


def test_short_status(echo_server: Server) -> None:
    r = httpx.get(echo_server.url + "/status", timeout=5)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"live_readers", "dead_readers", "ports"}
    assert "primary-0" in body["live_readers"]
    assert body["ports"]["inference"] == echo_server.ports["port"]


@pytest.mark.parametrize("port", ["port", "management_port", "vertex_port", "openai_port", "snowflake_port",
                                  "internal_port"])
def test_every_port_answers_health(echo_server: Server, port: str) -> None:
    r = httpx.get(f"http://127.0.0.1:{echo_server.ports[port]}/healthz", timeout=5)
    assert r.status_code == 200
    assert r.json()["status"] == "healthy"


def test_unknown_route_and_method_are_json_errors(echo_server: Server) -> None:
    r = httpx.get(echo_server.url + "/nothing-here", timeout=5)
    assert r.status_code == 404 and "no route" in r.json()["error"]
    r = httpx.get(echo_server.url + "/generate", timeout=5)
    assert r.status_code == 405 and "not allowed" in r.json()["error"]


def test_concurrent_requests_each_get_their_own_answer(echo_server: Server) -> None:
    import asyncio

    async def run() -> list[str]:
        async with httpx.AsyncClient(base_url=echo_server.url, timeout=30) as client:
            rs = await asyncio.gather(*(client.post("/generate", json={"text": f"request {i}"}) for i in range(200)))
        return [r.json()["text"] for r in rs]

    assert asyncio.run(run()) == [f"request {i}" for i in range(200)]


def test_several_gateway_workers_route_replies_to_their_own_requests(make_server) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    server = make_server(workers=3, reserved_consumers="")

    async def run() -> list[str]:
        limits = httpx.Limits(max_keepalive_connections=0)  # new connection per request: spread over workers
        async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as client:
            rs = await asyncio.gather(*(client.post("/generate", json={"text": f"w {i}"}) for i in range(150)))
        return [r.json()["text"] for r in rs]

    assert asyncio.run(run()) == [f"w {i}" for i in range(150)]
    workers = [p for p in server.descendants() if "liftoff.entry.server" in " ".join(p.cmdline())]
    assert len(workers) == 4  # the arbiter and three workers


def test_tokenizer_endpoints_address_one_reader(echo_server: Server) -> None:
    r = post(echo_server, "/tokenize/primary-0", json={"text": "hello big world"})
    assert r.status_code == 200, r.text
    assert r.json() == {"tokens": ["hello", " big", " world"], "tokens_count": 3}
    r = post(echo_server, "/detokenize/primary-0", json={"tokens": ["hello", " world"]})
    assert r.json() == {"text": "hello world"}
    assert post(echo_server, "/detokenize/primary-0", json={"tokens": [1, 2]}).status_code == 422
    chat = [[{"role": "user", "content": "hi"}]]
    r = post(echo_server, "/chat_template/primary-0", json={"inputs": chat, "add_generation_prompt": True})
    assert r.json() == {"messages": ["user: hi\nassistant: "]}
    r = post(echo_server, "/tokenize/nobody", json={"text": "x"})
    assert r.status_code == 404 and r.json()["details"]["known_readers"] == ["primary-0"]
    assert post(echo_server, "/tokenize/primary-0", json={"text": 3}).status_code == 422


def test_embed_and_classify_on_a_generation_reader_fail_clearly(echo_server: Server) -> None:
    for path, body in (("/embed", {"text": "x"}), ("/classify", {"text": [["a", "b"]]})):
        r = post(echo_server, path, json=body)
        assert 400 <= r.status_code < 500, r.text
    assert post(echo_server, "/classify", json={"text": [["only one"]]}).status_code == 422
