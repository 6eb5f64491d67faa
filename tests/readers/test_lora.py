"""LoRA adapters on the generation engine: a random Llama and two random peft adapters, each row of a batch with its
own adapter (or none), checked against what peft itself generates in-process for that adapter."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from liftoff.core.reader_config import ReaderConfig
from liftoff.readers.engines.base import EngineLoadError, EngineRequestError
from liftoff.readers.engines.generation import GenerationEngine

from support.models import build_llama, build_lora, make_job, run_jobs
from support.models import peft_greedy as peft_reference

PROMPT = "The quick brown fox"
NEW = 16


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lora")
    base = build_llama(root / "base")
    return {"base": base, "alpha": build_lora(base, root / "alpha", seed=1),
            "beta": build_lora(base, root / "beta", seed=2, rank=4, targets=("k_proj", "o_proj", "up_proj"))}


def peft_greedy(models: dict[str, Path], adapter: str | None, prompt: str = PROMPT) -> str:
    return peft_reference(models["base"], models[adapter] if adapter is not None else None, prompt, NEW)


@pytest.fixture(scope="module")
def expected(models: dict[str, Path]) -> dict[str | None, str]:
    return {name: peft_greedy(models, name) for name in (None, "alpha", "beta")}


@pytest.fixture(scope="module")
def engine(models: dict[str, Path]):
    engine = GenerationEngine(ReaderConfig(model_name=str(models["base"]), max_batch_size=8,
                                           loras=[str(models["alpha"]), f"b={models['beta']}"]))
    asyncio.run(engine.load())
    yield engine
    engine.close()


def texts(engine: GenerationEngine, *requests: tuple[str, str | None]) -> dict[str, Any]:
    sink = run_jobs(engine, *[make_job(rid, PROMPT, max_new_tokens=NEW, min_new_tokens=NEW, lora_id=lora)
                              for rid, lora in requests])
    return {rid: sink.finals[rid][1][0] if sink.finals[rid][0] == "done" else sink.finals[rid]
            for rid, _ in requests}


def test_each_adapter_alone_matches_peft_and_they_differ(engine: GenerationEngine,
                                                         expected: dict[str | None, str]) -> None:
    assert len(set(expected.values())) == 3, expected
    assert texts(engine, ("base", None)) == {"base": expected[None]}
    assert texts(engine, ("a", "alpha")) == {"a": expected["alpha"]}
    assert texts(engine, ("b", "b")) == {"b": expected["beta"]}


def test_three_adapters_in_one_batch_match_peft(engine: GenerationEngine, expected: dict[str | None, str]) -> None:
    got = texts(engine, ("a1", "alpha"), ("base1", None), ("b1", "b"), ("a2", "alpha"), ("base2", None), ("b2", "b"))
    assert got == {"a1": expected["alpha"], "a2": expected["alpha"], "b1": expected["beta"],
                   "b2": expected["beta"], "base1": expected[None], "base2": expected[None]}
    # rows of one prompt under different adapters never share KV: a prompt long enough to fill cached blocks
    long = PROMPT + " jumps over the lazy dog. A reader holds a model and answers requests from a stream."
    sink = run_jobs(engine, *[make_job(f"l{lora}", long, max_new_tokens=NEW, min_new_tokens=NEW, lora_id=lora)
                              for lora in ("alpha", None, "b")])
    again = run_jobs(engine, *[make_job(f"l{lora}", long, max_new_tokens=NEW, min_new_tokens=NEW, lora_id=lora,
                                        return_metadata=True) for lora in ("b", None, "alpha")])
    for lora in ("alpha", None, "b"):
        assert again.finals[f"l{lora}"][1] == sink.finals[f"l{lora}"][1]
        assert again.finals[f"l{lora}"][2][0]["cached_prompt_tokens"] > 0  # its own adapter's blocks, reused
    assert sink.finals["lalpha"][1] == [peft_greedy(engine_models(engine), "alpha", long)]


def engine_models(engine: GenerationEngine) -> dict[str, Path]:
    assert engine.lora is not None
    return {"base": Path(engine.config.model_name), "alpha": Path(engine.lora.loaded["alpha"].path)}


def test_unknown_adapter_is_404_naming_the_loaded_ones(engine: GenerationEngine) -> None:
    got = texts(engine, ("x", "nope"))["x"]
    assert got[:2] == ("error", 404) and "'nope'" in got[2] and "['alpha', 'b']" in got[2]


def test_adapters_added_and_removed_at_run_time(engine: GenerationEngine, models: dict[str, Path],
                                                expected: dict[str | None, str]) -> None:
    async def op(kind: str, **args: Any) -> dict[str, Any]:
        return await engine.adapter_op(kind, args)

    view = asyncio.run(op("lora_add", name="beta2", source=str(models["beta"])))
    assert view["name"] == "beta2" and view["rank"] == 4 and view["bytes"] > 0
    assert texts(engine, ("n", "beta2"), ("o", "alpha")) == {"n": expected["beta"], "o": expected["alpha"]}
    with pytest.raises(EngineRequestError) as taken:
        asyncio.run(op("lora_add", name="beta2", source=str(models["beta"])))
    assert taken.value.status == 409
    with pytest.raises(EngineRequestError) as missing:
        asyncio.run(op("lora_add", name="gone", source=str(models["base"] / "nothing-here")))
    assert missing.value.status == 422 and "nothing-here" in str(missing.value)
    assert asyncio.run(op("lora_remove", name="beta2")) == {"removed": "beta2"}
    assert "beta2" not in engine.adapter_names()
    assert texts(engine, ("n", "beta2"))["n"][:2] == ("error", 404)
    assert texts(engine, ("o", "alpha")) == {"o": expected["alpha"]}
    assert engine.lora is not None and "beta2" not in engine.lora.loaded  # freed once no row used it
    with pytest.raises(EngineRequestError) as unknown:
        asyncio.run(op("lora_remove", name="beta2"))
    assert unknown.value.status == 404


def test_a_hub_id_fails_cleanly_offline(models: dict[str, Path]) -> None:
    engine = GenerationEngine(ReaderConfig(model_name=str(models["base"]), max_batch_size=2,
                                           loras=["someone/some-adapter"]), repository_path=models["base"].parent)
    with pytest.raises(EngineLoadError) as failed:
        asyncio.run(engine.load())
    assert "'someone/some-adapter'" in str(failed.value) and "HF_HUB_OFFLINE" in str(failed.value)
    engine.close()


def test_a_model_directory_is_not_an_adapter(models: dict[str, Path]) -> None:
    engine = GenerationEngine(ReaderConfig(model_name=str(models["base"]), max_batch_size=2,
                                           loras=[f"m={models['base']}"]))
    with pytest.raises(EngineLoadError) as failed:
        asyncio.run(engine.load())
    assert "adapter_config.json" in str(failed.value)
    engine.close()


def test_the_fit_engine_counts_adapters(engine: GenerationEngine, models: dict[str, Path]) -> None:
    from liftoff.core.registry import ReaderRecord
    from liftoff.core.wire import ReaderInfo
    from liftoff.fit.auto_device import loras_params, running_readers
    from liftoff.fit.catalog import load_catalog
    from liftoff.fit.estimates import GIB
    from liftoff.fit.hardware import SystemSpecs
    from liftoff.fit.placement import place
    from liftoff.fit.repository import adapter_params

    assert engine.lora is not None
    alpha, beta = engine.lora.loaded["alpha"], engine.lora.loaded["b"]
    assert adapter_params(models["alpha"]) == alpha.parameters and alpha.bytes == 4 * alpha.parameters  # fp32
    root = models["base"].parent
    config = ReaderConfig(model_name="base", loras=["alpha", f"b={models['beta']}", "someone/not-downloaded"])
    assert loras_params(config, str(root)) == alpha.parameters + beta.parameters
    node = SystemSpecs(total_ram_gb=64.0, available_ram_gb=60.0, cpu_cores=8, cpu_name="Test CPU", cpu_arch="x86")
    catalog = load_catalog(str(root))
    alone = place("base", node, catalog, max_batch_size=4)
    with_adapters = place("base", node, catalog, max_batch_size=4, adapter_params=alpha.parameters + beta.parameters)
    assert with_adapters.memory_gb - alone.memory_gb == pytest.approx(4 * (alpha.parameters + beta.parameters) / GIB)
    info = ReaderInfo(consumer_groups=["g"], consumer_name="c", device="cpu", model_name="base",
                      model_type="generation", pids=[1], state="live", loras=engine.adapters())
    [running] = running_readers([ReaderRecord("r", info, "live", None)])
    assert running.adapters_gb == pytest.approx((alpha.bytes + beta.bytes) / GIB)


def test_engines_that_take_no_adapters_refuse_loras(models: dict[str, Path]) -> None:
    from liftoff.readers.engines.embedding import EmbeddingEngine

    with pytest.raises(EngineLoadError) as refused:
        EmbeddingEngine(ReaderConfig(model_name=str(models["base"]), loras=[str(models["alpha"])]))
    assert "loras" in str(refused.value) and "EmbeddingEngine" in str(refused.value)
