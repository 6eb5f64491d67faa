"""A reader's dtype and quant_type really apply: what the engines load, the label calibration records, and the
settings that are refused (at config load for a dtype, at the reader's start for a quant_type)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import httpx
import pytest
import torch
from pydantic import ValidationError

os.environ["HF_HUB_OFFLINE"] = "1"

from liftoff.core.reader_config import ReaderConfig
from liftoff.core.settings import SettingsError, load_settings
from liftoff.readers.engines.base import EngineLoadError
from liftoff.readers.engines.classification import ClassificationEngine
from liftoff.readers.engines.generation import GenerationEngine
from liftoff.readers.engines.load_options import loaded_label, model_load_options
from liftoff.readers.engines.torch_device import pick_dtype

from support.models import CollectingSink, build_bert_classifier, build_llama, make_job
from support.servers import ServerFactory, wait_for

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bert_classifier(tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_llama(tmp_path_factory.mktemp("models") / "tiny-llama")


def load_classifier(path: Path, **config: object) -> ClassificationEngine:
    engine = ClassificationEngine(ReaderConfig(model_name=str(path), **config))
    asyncio.run(engine.load())
    return engine


def generate_once(engine: GenerationEngine) -> str:
    sink = CollectingSink()
    asyncio.run(engine.run([make_job("r", "Hello world", max_new_tokens=6)], sink))
    kind, texts, *_ = sink.finals["r"]
    assert kind == "done", sink.finals["r"]
    return texts[0]


# --- the settings --------------------------------------------------------------------------------------------------
def test_dtype_names_are_checked_and_kept_in_their_long_form() -> None:
    assert ReaderConfig(dtype="BF16").dtype == "bfloat16"
    assert ReaderConfig(dtype=" fp32 ").dtype == "float32"
    assert ReaderConfig(dtype="").dtype == ReaderConfig(dtype=None).dtype == ReaderConfig().dtype == "auto"
    with pytest.raises(ValidationError) as caught:
        ReaderConfig(dtype="bfloat61")
    assert "dtype must be one of auto, float32 (fp32), bfloat16 (bf16), float16 (fp16); given 'bfloat61'" in str(
        caught.value)


def test_a_dtype_typo_fails_the_config_load_naming_the_setting(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[[readers]]\nmodel_name = 'echo'\ndtype = 'float23'\n")
    with pytest.raises(SettingsError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert message.startswith("invalid setting 'readers.0.dtype': dtype must be one of auto, float32")
    assert "given 'float23'" in message and "\n" not in message


def test_quant_type_spelling_is_settled_at_config_load() -> None:
    assert ReaderConfig(quant_type=" INT8 ").quant_type == "int8"
    assert ReaderConfig(quant_type="").quant_type is None and ReaderConfig(quant_type="none").quant_type is None
    assert ReaderConfig(quant_type="awq").quant_type == "awq"  # refused by the reader, on its device, at its start


# --- the dtype a device gets ---------------------------------------------------------------------------------------
def test_dtype_on_cpu() -> None:
    assert pick_dtype(CPU) == pick_dtype(CPU, "auto") == torch.float32
    assert pick_dtype(CPU, "bfloat16") == torch.bfloat16 and pick_dtype(CPU, "float16") == torch.float16
    with pytest.raises(EngineLoadError, match="dtype must be one of"):
        pick_dtype(CPU, "int8")


@pytest.mark.parametrize(("capability", "auto"), [((9, 0), torch.bfloat16), ((7, 5), torch.float16)])
def test_dtype_on_cuda_follows_native_bf16(monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int],
                                           auto: torch.dtype) -> None:
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test GPU")
    gpu = torch.device("cuda", 0)
    assert pick_dtype(gpu) == auto and pick_dtype(gpu, "float16") == torch.float16
    if auto == torch.bfloat16:
        assert pick_dtype(gpu, "bfloat16") == torch.bfloat16
        return
    with pytest.raises(EngineLoadError) as caught:
        pick_dtype(gpu, "bfloat16")
    assert str(caught.value) == ("dtype 'bfloat16': cuda:0 (Test GPU, compute capability 7.5) has no native bfloat16 "
                                 "(8.0 or newer needed); use dtype 'float16' or 'auto'")


# --- quant_type ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["awq", "gptq", "fp8", "bnb", "4bit", "int4"])
def test_a_quant_type_not_implemented_is_refused_by_name(bert: Path, name: str) -> None:
    with pytest.raises(EngineLoadError) as caught:
        load_classifier(bert, quant_type=name)
    assert str(caught.value).startswith(f"quant_type {name!r} is not supported on cpu; supported: int8 (")


def test_quant_type_on_a_model_saved_quantized_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"quantization_config": {"quant_method": "gptq", "bits": 4}}))
    with pytest.raises(EngineLoadError, match=r"already quantized \(gptq\); leave quant_type unset"):
        model_load_options(ReaderConfig(quant_type="int8"), CPU, tmp_path)
    assert model_load_options(ReaderConfig(), CPU, tmp_path) == {"dtype": torch.float32}  # loads as saved


# --- what loaded ---------------------------------------------------------------------------------------------------
def test_the_classifier_loads_the_dtype_asked_for(bert: Path) -> None:
    for setting, dtype, label in (("auto", torch.float32, "F32"), ("bf16", torch.bfloat16, "BF16"),
                                  ("float16", torch.float16, "F16")):
        engine = load_classifier(bert, dtype=setting)
        assert {p.dtype for p in engine.model.parameters()} == {dtype}
        assert engine.loaded_dtype == label
        scores = engine._classify_sync(["hello world"])[0]["scores"]
        assert abs(sum(scores.values()) - 1.0) < 1e-2


def test_int8_quantizes_the_classifier_weights(bert: Path) -> None:
    engine = load_classifier(bert, quant_type="int8")
    weight = engine.model.bert.encoder.layer[0].attention.self.query.weight
    assert weight.qdata.dtype == torch.int8  # held in int8, computed in fp32 (the CPU's auto dtype)
    assert engine.loaded_dtype == "INT8"
    scores = engine._classify_sync(["hello world"])[0]["scores"]
    assert all(0.0 <= s <= 1.0 for s in scores.values())


def test_the_generation_engine_in_bf16_and_int8(llama: Path) -> None:
    bf16 = GenerationEngine(ReaderConfig(model_name=str(llama), dtype="bfloat16", max_batch_size=2))
    asyncio.run(bf16.load())
    try:
        assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16} and bf16.loaded_dtype == "BF16"
        generate_once(bf16)
    finally:
        bf16.close()
    int8 = GenerationEngine(ReaderConfig(model_name=str(llama), quant_type="int8", max_batch_size=2))
    asyncio.run(int8.load())
    try:
        assert int8.loaded_dtype == "INT8"
        logits = int8.model(torch.tensor([[1, 5, 6, 7]])).logits
        assert torch.isfinite(logits).all()
        generate_once(int8)
    finally:
        int8.close()


def test_the_label_reads_the_weights_not_index_buffers() -> None:
    class Packed(torch.nn.Module):
        def __init__(self, dtype: torch.dtype) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(4, 8)
            self.register_buffer("qweight", torch.zeros(64, 64, dtype=dtype))
            self.register_buffer("position_ids", torch.arange(10_000))

    assert loaded_label(Packed(torch.int8)) == "INT8"
    assert loaded_label(Packed(torch.int32)) == "INT4"  # GPTQ/AWQ pack 4-bit weights into int32
    plain = torch.nn.Linear(4, 4).to(torch.bfloat16)
    plain.register_buffer("position_ids", torch.arange(10_000, dtype=torch.int32))  # int32, but no weight
    assert loaded_label(plain) == "BF16"


# --- a reader process ----------------------------------------------------------------------------------------------
def test_a_reader_reports_what_it_loaded_and_refuses_what_it_cannot(make_server: ServerFactory, tmp_path: Path,
                                                                     llama: Path) -> None:
    repo = tmp_path / "artefacts"
    shutil.copytree(llama, repo / "llama-bf16")
    readers = [
        {"model_name": "llama-bf16", "consumer_group": "primary", "reader_id": "bf16", "dtype": "bf16",
         "max_batch_size": 2, "max_sequence_length": 128},
        {"model_name": "llama-bf16", "consumer_group": "awq", "reader_id": "awq", "quant_type": "awq"},
    ]
    server = make_server(readers=readers, repository_path=str(repo), reserved_consumers="", wait_healthy=False,
                         request_timeout_s=60.0)

    def status() -> dict[str, dict[str, dict[str, str]]]:
        return server.status()["status"]

    wait_for(lambda: "error" in status()["dead_readers"].get("awq", {}), 90, "the awq reader refused", server)
    assert "quant_type 'awq' is not supported on cpu; supported: int8" in status()["dead_readers"]["awq"]["error"]
    wait_for(lambda: "bf16" in status()["live_readers"], 90, "the bf16 reader", server)
    r = httpx.post(server.url + "/generate", json={"text": "Hello world", "max_new_tokens": 4}, timeout=60)
    assert r.status_code == 200, r.text
    rows = httpx.get(server.mgmt + "/api/v1/models/llama-bf16", timeout=30).json()["models"]
    row = next(m for m in rows if m["name"].endswith("llama-bf16"))
    assert (row["best_quant"], row["basis"]["memory"]) == ("BF16", "measured"), row
