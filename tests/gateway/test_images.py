"""Images end to end: a real `liftoff serve` with a tiny random Llava reader answers Takeoff's `/image_generate` and
`/image_generate_stream` (multipart) and OpenAI chats with `data:` images (the official client) as transformers'
own `generate` does; remote URLs are refused by default, and private addresses even where they are allowed; a
file that is not an image is a 400."""

from __future__ import annotations

import base64
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from support.servers import Server, ServerFactory, parse_sse
from support.vlm import IMAGE_TOKEN, build_llava, hf_greedy, png_bytes

PNG = png_bytes(color=(30, 160, 60))
CHAT_PROMPT = "<s><|user|><image>what is in the picture?</s><|assistant|>"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_llava(tmp_path_factory.mktemp("artefacts") / "tiny-llava")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, redis_url: str, model_dir: Path) -> Iterator[Server]:
    from support.servers import server_factory

    servers: list[Server] = []
    make: ServerFactory = server_factory(tmp_path_factory.mktemp("images"), redis_url, servers)
    readers = [
        {"model_name": "tiny-llava", "consumer_group": "vision", "reader_id": "vision-0", "max_batch_size": 8},
        {"model_name": "echo", "consumer_group": "primary", "reader_id": "echo-0"},
    ]
    srv = make(readers=readers, repository_path=str(model_dir.parent), reserved_consumers="", request_timeout_s=60.0)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def image_host() -> Iterator[str]:
    """A real HTTP server on loopback serving a real PNG at /x.png: a fetch that reached it would succeed."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(PNG)))
            self.end_headers()
            self.wfile.write(PNG)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def image_generate(server: Server, body: dict, files: list[tuple[str, tuple]] | None = None,
                   stream: bool = False) -> httpx.Response:
    files = [("image_data", ("x.png", PNG, "image/png"))] if files is None else files
    path = "/image_generate_stream" if stream else "/image_generate"
    return httpx.post(server.url + path, data={"json_data": json.dumps(body)}, files=files, timeout=60)


def data_url(data: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64,{base64.b64encode(data).decode()}"


def chat(client: openai.OpenAI, url: str, model: str = "vision", **kwargs):
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "what is in the picture?"}]
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}],
                                          temperature=0, max_tokens=10, **kwargs)


def test_image_generate_answers_as_transformers_does(server: Server, model_dir: Path) -> None:
    want = hf_greedy(model_dir, IMAGE_TOKEN + "what is this?", [PNG], 12)
    r = image_generate(server, {"text": "what is this?", "consumer_group": "vision", "max_new_tokens": 12,
                                "sampling_topk": 1, "return_metadata": True})
    assert r.status_code == 200, r.text
    assert r.json()["text"] == want and want
    assert r.json()["metadata"]["prompt_tokens"] > 16  # the image's tokens are in the prompt
    batch = image_generate(server, {"text": ["what is this?", "what is this?"], "consumer_group": "vision",
                                    "max_new_tokens": 12})
    assert batch.status_code == 200 and batch.json()["text"] == [want, want]


def test_image_generate_stream_joins_to_the_whole_answer(server: Server, model_dir: Path) -> None:
    want = hf_greedy(model_dir, IMAGE_TOKEN + "describe", [PNG], 12)
    with httpx.stream("POST", server.url + "/image_generate_stream", timeout=60,
                      data={"json_data": json.dumps({"text": "describe", "consumer_group": "vision",
                                                     "max_new_tokens": 12})},
                      files=[("image_data", ("x.png", PNG, "image/png"))]) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        body = r.read().decode()
    pieces = [data for name, data in parse_sse(body) if name == "message"]
    assert len(pieces) > 1 and "".join(pieces) == want


def test_openai_chat_with_a_data_url_image(server: Server, model_dir: Path) -> None:
    want = hf_greedy(model_dir, CHAT_PROMPT, [PNG], 10, templated=True)
    answer = chat(server.openai_client(60), data_url(PNG))
    assert answer.choices[0].message.content == want and want
    assert answer.usage.prompt_tokens > 16
    streamed = chat(server.openai_client(60), data_url(PNG), stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == want


def test_remote_urls_are_refused_by_default(server: Server, image_host: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        chat(server.openai_client(60), f"http://{image_host}/x.png")
    assert err.value.status_code == 400 and "allow_remote_images is false" in err.value.message
    assert err.value.body["param"] == "messages.0.content.0.image_url"


def test_private_addresses_are_refused_even_when_remote_images_are_allowed(make_server: ServerFactory,
                                                                           image_host: str) -> None:
    srv = make_server(allow_remote_images=True, reserved_consumers="")
    client = srv.openai_client(60)
    port = image_host.split(":")[1]
    for url, address in ((f"http://{image_host}/x.png", "127.0.0.1"), (f"http://localhost:{port}/x.png", "127.0.0"),
                         ("http://10.0.0.1/x.png", "10.0.0.1"), ("http://[::1]:9/x.png", "::1"),
                         ("http://169.254.169.254/latest/x.png", "169.254.169.254")):
        with pytest.raises(openai.BadRequestError) as err:
            chat(client, url, model="primary")
        assert "not a public address" in err.value.message and address in err.value.message, url
    with pytest.raises(openai.BadRequestError) as err:
        chat(client, "ftp://example.com/x.png", model="primary")
    assert "must be" in err.value.message


def test_a_file_that_is_not_an_image_is_a_400(server: Server) -> None:
    body = {"text": "what is this?", "consumer_group": "vision"}
    r = image_generate(server, body, files=[("image_data", ("x.png", b"just some text, not a PNG", "image/png"))])
    assert r.status_code == 400 and "image_data is not an image" in r.json()["error"]
    truncated = image_generate(server, body, files=[("image_data", ("x.png", PNG[: len(PNG) // 2], "image/png"))])
    assert truncated.status_code == 400 and "image_data" in truncated.json()["error"]
    client = server.openai_client(60)
    with pytest.raises(openai.BadRequestError) as err:
        chat(client, data_url(b"not an image"))
    assert "is not an image" in err.value.message and err.value.body["param"] == "messages.0.content.0.image_url"
    with pytest.raises(openai.BadRequestError) as err:
        chat(client, data_url(PNG, "text/plain"))
    assert "media type must be an image type" in err.value.message


def test_bad_multipart_bodies_are_refused_by_name(server: Server) -> None:
    body = {"text": "x", "consumer_group": "vision"}
    r = httpx.post(server.url + "/image_generate", files=[("json_data", (None, json.dumps(body)))], timeout=30)
    assert r.status_code == 400 and "image_data: missing" in r.json()["error"]
    r = httpx.post(server.url + "/image_generate", json=body, timeout=30)
    assert r.status_code == 400 and "multipart/form-data" in r.json()["error"]
    r = httpx.post(server.url + "/image_generate", timeout=30, data={"json_data": json.dumps(body), "extra": "1"},
                   files=[("image_data", ("x.png", PNG, "image/png"))])
    assert r.status_code == 400 and "unknown parts: extra" in r.json()["error"]
    r = image_generate(server, {"text": "x", "consumer_group": "vision", "sampling_topp": 3})
    assert r.status_code == 422 and "sampling_topp" in r.text
    r = image_generate(server, {"text": "x", "consumer_group": "vision", "json_schema": {"type": "object"}})
    assert r.status_code == 422 and "json_schema: not supported by image-to-text readers" in r.json()["error"]


def test_a_text_model_refuses_images(server: Server) -> None:
    r = image_generate(server, {"text": "what is this?", "consumer_group": "primary"})
    assert r.status_code == 400 and "takes no images" in r.json()["error"]
    with pytest.raises(openai.BadRequestError) as err:
        chat(server.openai_client(60), data_url(PNG), model="primary")
    assert "takes no images" in err.value.message
