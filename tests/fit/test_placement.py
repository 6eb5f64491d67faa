"""Placement of a reader's model: device, dtype, batch size within the KV budget, or a refusal with the report."""

from __future__ import annotations

import pytest

from liftoff.core.calibration import Measurement
from liftoff.fit.catalog import curated_models
from liftoff.fit.placement import PlacementRefused, RunningReader, UnknownModel, device_budgets, place

from support.fit import CPU_NODE, H100_NODE, SMALL_CPU_NODE

CATALOG = curated_models()


def test_cpu_placement_in_fp32() -> None:
    p = place("TinyLlama/TinyLlama-1.1B-Chat-v1.0", CPU_NODE, CATALOG, [])
    assert (p.device, p.dtype, p.quant, p.quantization) == ("cpu", "float32", "F32", None)
    # budget min(60 available, 64 x 0.85) = 54.4 GB; weights 1.1 x 4 + 0.5 = 4.9 GB;
    # KV per 2048-token sequence: 2 x 22 x 4 x 64 x 2048 x 4 bytes = 88 MiB -> far more than 256 sequences fit.
    assert p.budget_gb == pytest.approx(54.4)
    assert p.context == 2048 and p.max_batch_size == 256
    assert p.memory_gb <= p.budget_gb and p.basis == "estimated"


def test_batch_size_is_bound_by_the_kv_budget() -> None:
    p = place("meta-llama/Llama-3.1-8B-Instruct", CPU_NODE, CATALOG, [], max_sequence_length=8192)
    base = 8.03 * 4 + 0.5
    per_sequence = 2.0  # GiB of fp32 KV per 8192-token sequence (see test_estimates)
    assert p.max_batch_size == int((54.4 - base) // per_sequence)
    assert p.memory_gb == pytest.approx(base + per_sequence * p.max_batch_size)


def test_running_readers_take_their_share() -> None:
    running = [RunningReader("Qwen/Qwen2.5-7B-Instruct", "cpu", memory_gb=30.0)]
    assert device_budgets(CPU_NODE, CATALOG, running)["cpu"] == pytest.approx(64 * 0.85 - 30)
    # Estimated when the reader reports nothing: fp32 weights + 8192-token cache + overhead.
    estimated = device_budgets(CPU_NODE, CATALOG, [RunningReader("Qwen/Qwen2.5-7B-Instruct", "cpu")])["cpu"]
    assert estimated == pytest.approx(54.4 - (7.62 * 4 + 2 * 28 * 4 * 128 * 8192 * 4 / 1024**3 + 0.5))
    # 8B fp32 (32.6 GB) no longer fits beside 30 GB: it falls back to bf16.
    p = place("meta-llama/Llama-3.1-8B-Instruct", CPU_NODE, CATALOG, running)
    assert p.dtype == "bfloat16"


def test_gpu_first_on_the_freest_card() -> None:
    running = [RunningReader("meta-llama/Llama-3.1-8B-Instruct", "cuda:0", memory_gb=40.0)]
    p = place("Qwen/Qwen2.5-7B-Instruct", H100_NODE, CATALOG, running)
    assert (p.device, p.dtype, p.quantization) == ("cuda:1", "bfloat16", None)
    assert p.budget_gb == pytest.approx(79.19 * 0.92)
    # 46.7 B at bf16 (93 GB) exceeds one card's usable 72.9 GB; at int8 (49 GB) it fits, loaded as quant_type int8.
    mixtral = place("mistralai/Mixtral-8x7B-Instruct-v0.1", H100_NODE, CATALOG, [])
    assert (mixtral.device, mixtral.quant, mixtral.dtype, mixtral.quantization) == ("cuda:0", "INT8", "bfloat16",
                                                                                     "int8")
    big = place("Qwen/Qwen2.5-72B-Instruct", H100_NODE, CATALOG, [])
    # 72.7 B at 8 bit (76 GB) exceeds one card's usable 72.9 GB, and a reader holds one device and loads no 4-bit
    # format: the RAM takes it in bf16.
    assert (big.device, big.quant, big.quantization) == ("cpu", "BF16", None)
    # KV per 8192-token bf16 sequence: 2 x 80 x 8 x 128 x 8192 x 2 bytes = 2.5 GiB; RAM min(240, 256 x 0.85)
    assert big.max_batch_size == int((256 * 0.85 - (72.7 * 2 + 0.5)) // 2.5)


def test_measurement_sets_the_weights_figure() -> None:
    measured = {"tinyllama/tinyllama-1.1b-chat-v1.0": Measurement(
        model_name="TinyLlama/TinyLlama-1.1B-Chat-v1.0", load_memory_bytes=6 * 1024**3, device="cpu")}
    p = place("TinyLlama/TinyLlama-1.1B-Chat-v1.0", CPU_NODE, CATALOG, [], measurements=measured)
    assert p.basis == "measured" and p.memory_gb > 6.0


def test_refuses_a_model_too_large_with_the_report() -> None:
    with pytest.raises(PlacementRefused) as caught:
        place("meta-llama/Llama-3.1-70B-Instruct", SMALL_CPU_NODE, CATALOG, [])
    report = caught.value.report
    assert report is not None and report.fit_level == "too_tight"
    assert report.memory_required_gb > report.memory_available_gb
    assert "does not fit on this node" in str(caught.value) and "cpu" in str(caught.value)


def test_unknown_model() -> None:
    with pytest.raises(UnknownModel):
        place("acme/never-heard-of-it", CPU_NODE, CATALOG, [])
