"""The image-to-text engine in-process, on a tiny random Llava: its answers are what transformers' own `generate`
gives for the same prompt and image, alone and batched, streamed and whole; what it cannot honour is refused."""

from __future__ import annotations

import base64
from pathlib import Path

import orjson
import pytest

from liftoff.core import wire
from liftoff.core.reader_config import ReaderConfig
from liftoff.core.wire import GenerationParams, WorkItem, now_ms
from liftoff.readers.engines.models import detect_model_type
from liftoff.readers.jobs import Job

from support.models import run_jobs
from support.vlm import IMAGE_TOKEN, build_llava, hf_greedy, png_bytes

RED, BLUE = png_bytes(color=(220, 20, 20)), png_bytes((64, 30), color=(20, 20, 220))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_llava(tmp_path_factory.mktemp("vlm") / "tiny-llava")


@pytest.fixture(scope="module")
def engine(model_dir: Path):
    import asyncio

    from liftoff.readers.engines.image_to_text import ImageToTextEngine

    eng = ImageToTextEngine(ReaderConfig(model_name=str(model_dir), max_batch_size=8), model_path=model_dir)
    asyncio.run(eng.load())
    yield eng
    eng.close()


def job(request_id: str, texts: list[str], images: list[bytes] | None = None, stream: bool = False,
        chats: list | None = None, **params) -> Job:
    item = WorkItem(id=request_id, reply_to="replies", stream=stream, texts=texts, chats=chats,
                    images=[base64.b64encode(i).decode() for i in images] if images is not None else None,
                    params=GenerationParams(**params), enqueued_ms=now_ms(), deadline_ms=now_ms() + 60_000)
    return Job(group="primary", stream="requests", entry_id=b"0-1", item=item)


def test_a_vision_model_with_an_image_processor_is_image_to_text(model_dir: Path) -> None:
    assert detect_model_type(model_dir) == "image-to-text"


def test_items_with_images_are_wire_version_4() -> None:
    fields = dict(id="w:1", reply_to="r", stream=False, texts=["x"], batched=False, params={}, enqueued_ms=1,
                  deadline_ms=2)
    assert orjson.loads(wire.encode_work(**fields)[wire.FIELD])["v"] == 2
    fast = wire.encode_work(images=["aGk="], **fields)
    assert orjson.loads(fast[wire.FIELD])["v"] == 4 <= wire.WIRE_VERSION  # a reader that knows images serves it
    assert wire.decode_work(fast).images == ["aGk="]


def test_answers_match_transformers_generate_alone_and_batched(engine, model_dir: Path) -> None:
    sink = run_jobs(engine, job("red", ["what is this?"], [RED], max_new_tokens=12, return_metadata=True))
    kind, texts, metadata, _ = sink.finals["red"]
    assert kind == "done"
    want_red = hf_greedy(model_dir, IMAGE_TOKEN + "what is this?", [RED], 12)
    assert texts == [want_red] and want_red
    assert metadata[0]["generated_tokens"] > 0 and metadata[0]["prompt_tokens"] > 16  # the image's 16 tokens in it
    want_blue = hf_greedy(model_dir, IMAGE_TOKEN + "what is this?", [BLUE], 12)
    want_text = hf_greedy(model_dir, "Hello world", [], 12)
    # three requests read together share one left-padded batch: each answer is still its own
    sink = run_jobs(engine, job("r", ["what is this?"], [RED], max_new_tokens=12),
                    job("b", ["what is this?"], [BLUE], max_new_tokens=12),
                    job("t", ["Hello world"], max_new_tokens=12))
    assert [sink.finals[i][1] for i in ("r", "b", "t")] == [[want_red], [want_blue], [want_text]]


def test_a_stream_joins_to_the_whole_answer_and_a_chat_uses_the_processors_template(engine, model_dir) -> None:
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "describe it"}]}]
    rendered = "<s><|user|><image>describe it</s><|assistant|>"
    want = hf_greedy(model_dir, rendered, [RED], 10, templated=True)
    sink = run_jobs(engine, job("s", [], [RED], stream=True, chats=[chat, chat], max_new_tokens=10),
                    job("w", ["describe it"], [RED], use_chat_template=True, max_new_tokens=10))
    assert sink.finals["s"][:2] == ("done", None)
    assert sink.streamed("s", 0) == sink.streamed("s", 1) == want
    assert sink.finals["w"][1] == [want]


def test_what_it_cannot_honour_is_refused_by_name(engine) -> None:
    sink = run_jobs(engine,
                    job("lora", ["x"], [RED], lora_id="a"),
                    job("schema", ["x"], [RED], json_schema={"type": "object"}),
                    job("places", [IMAGE_TOKEN * 2 + "x"], [RED]),
                    job("broken", ["x"], [b"not an image at all"]))
    assert sink.finals["lora"][:2] == ("error", 422) and "lora_id" in sink.finals["lora"][2]
    assert sink.finals["schema"][:2] == ("error", 422) and "json_schema" in sink.finals["schema"][2]
    assert sink.finals["places"][:2] == ("error", 422) and "places 2 images but 1" in sink.finals["places"][2]
    assert sink.finals["broken"][:2] == ("error", 400) and "images[0]" in sink.finals["broken"][2]


def test_the_fit_engine_counts_the_vision_tower(model_dir: Path, tmp_path: Path) -> None:
    import shutil

    from transformers import AutoModelForImageTextToText

    from liftoff.fit.repository import params_from_config, spec_from_directory

    model = AutoModelForImageTextToText.from_pretrained(model_dir)
    total = sum(p.numel() for p in model.parameters())
    vision = sum(p.numel() for n, p in model.named_parameters()
                 if "vision_tower" in n.split(".")[:3] or "multi_modal_projector" in n.split(".")[:3])
    assert 0 < vision < total
    spec = spec_from_directory(model_dir, "tiny-llava")
    assert spec.params_b == round(total / 1e9, 4) and spec.vision_params_b == round(vision / 1e9, 6)
    assert spec.speed_params_b == pytest.approx((total - vision) / 1e9, abs=1e-4)
    # without weight files the config's shapes give the count, the vision tower's included
    bare = tmp_path / "bare"
    shutil.copytree(model_dir, bare, ignore=shutil.ignore_patterns("*.safetensors"))
    estimate = spec_from_directory(bare, "bare")
    assert estimate.vision_params_b == pytest.approx(vision / 1e9, rel=0.15)
    config = orjson.loads((bare / "config.json").read_bytes())
    text_only = params_from_config(config["text_config"])
    assert estimate.params_b == round((text_only + estimate.vision_params_b * 1e9) / 1e9, 4) > round(text_only / 1e9, 4)
