"""Estimates checked against figures computed by hand from the published configs."""

from __future__ import annotations

import math

import pytest

from liftoff.fit.analysis import analyze, fit_level
from liftoff.fit.catalog import curated_models, find_model
from liftoff.fit.estimates import estimate_tps, fit_score, kv_cache_gb, memory_gb
from liftoff.fit.hardware import with_overrides
from liftoff.fit.scoring import WEIGHTS, quality_score

from support.fit import CPU_NODE, H100_NODE


def model(name: str):  # type: ignore[no-untyped-def]
    spec = find_model(curated_models(), name)
    assert spec is not None, name
    return spec


def test_llama_8b_on_cpu() -> None:
    spec = model("meta-llama/Llama-3.1-8B-Instruct")
    # KV: 2 (K and V) x 32 layers x 8 KV heads x 128 head dim x 8192 tokens x 4 bytes (fp32 on CPU) = 2 GiB
    assert kv_cache_gb(spec, 8192, 4) == pytest.approx(2.0)
    # weights 8.03 B x 4 bytes + 2 GiB KV + 0.5 GB runtime
    assert memory_gb(spec, "F32", 8192, "transformers") == pytest.approx(8.03 * 4 + 2.0 + 0.5)
    fit = analyze(spec, CPU_NODE)
    assert (fit.run_mode, fit.best_quant, fit.context) == ("cpu_only", "F32", 8192)
    assert fit.memory_required_gb == pytest.approx(34.62)
    assert fit.fit_level == "good"  # 60 GB >= 1.2 x 34.62 GB; CPU runs never reach perfect
    assert fit.utilization_pct == pytest.approx(34.62 / 60 * 100)
    # x86 constant 70 tok/s x B-params at 8 cores, fp32 multiplier 0.5
    assert fit.estimated_tps == pytest.approx(70 / 8.03 * 0.5)


def test_qwen_7b_on_a_24_gb_card() -> None:
    spec = model("Qwen/Qwen2.5-7B-Instruct")
    node = with_overrides(CPU_NODE, vram_gb=24)
    # KV bf16: 2 x 28 x 4 x 128 x 8192 x 2 bytes = 0.4375 GiB
    kv = 2 * 28 * 4 * 128 * 8192 * 2 / 1024**3
    assert kv == pytest.approx(0.4375)
    fit = analyze(spec, node)
    assert (fit.run_mode, fit.best_quant) == ("gpu", "BF16")
    assert fit.memory_required_gb == pytest.approx(7.62 * 2 + 0.4375 + 0.5)
    assert fit.fit_level == "perfect"  # 1.2 x 16.18 GB <= 24 GB
    # Unknown card: CUDA constant 220 / 7.62 x bf16 multiplier 0.6
    assert fit.estimated_tps == pytest.approx(220 / 7.62 * 0.6)


def test_bandwidth_roofline_on_h100() -> None:
    spec = model("Qwen/Qwen2.5-7B-Instruct")
    fit = analyze(spec, H100_NODE)
    # 3350 GB/s / (7.62 B x 2 bytes) x 0.55
    assert fit.estimated_tps == pytest.approx(3350 / (7.62 * 2) * 0.55)
    assert estimate_tps(spec, "BF16", "gpu", H100_NODE) == pytest.approx(fit.estimated_tps)


def test_tensor_parallel_over_two_cards() -> None:
    fit = analyze(model("meta-llama/Llama-3.3-70B-Instruct"), H100_NODE)
    # 70.6 B x 2 bytes = 141 GB: more than one 79 GB card, less than two.
    assert (fit.run_mode, fit.best_quant) == ("tensor_parallel", "BF16")
    assert fit.memory_available_gb == pytest.approx(2 * 79.19)


def test_unknown_architecture_uses_the_fallback_kv() -> None:
    spec = model("deepseek-ai/DeepSeek-R1")
    assert spec.num_kv_heads is None
    assert kv_cache_gb(spec, 8192) == pytest.approx(0.000008 * 671 * 8192)


def test_embedding_models_keep_no_kv_cache() -> None:
    spec = model("sentence-transformers/all-MiniLM-L6-v2")
    assert kv_cache_gb(spec, 512, 4) == 0.0
    fit = analyze(spec, CPU_NODE)
    assert fit.memory_required_gb == pytest.approx(0.0227 * 4 + 0.5)
    assert fit.components.context == 100.0  # 512 tokens is the embedding target


def test_context_halved_when_nothing_fits() -> None:
    spec = model("meta-llama/Llama-3.1-8B-Instruct")
    # 8.03 x 2 + 0.5 = 16.56 GB of weights; the 8192-token bf16 cache (1 GiB) does not fit in 17.2 GB, 4096 does.
    node = with_overrides(CPU_NODE, ram_gb=17.2)
    fit = analyze(spec, node)
    assert (fit.best_quant, fit.context) == ("BF16", 4096)
    assert "context halved to 4096 tokens to fit" in fit.notes


def test_moe_offload_keeps_inactive_experts_in_ram() -> None:
    spec = model("mistralai/Mixtral-8x22B-Instruct-v0.1")
    node = with_overrides(CPU_NODE, vram_gb=24, ram_gb=200)
    fit = analyze(spec, node)
    assert fit.run_mode == "moe_offload" and fit.best_quant == "INT4"
    assert fit.moe_offloaded_gb == pytest.approx((141 - 39) * 0.5)


def test_fit_levels_and_fit_component() -> None:
    assert fit_level(10, 9, "gpu", 12) == "too_tight"
    assert fit_level(10, 12.5, "gpu", 12) == "perfect"
    assert fit_level(10, 12.5, "cpu_only", 12) == "good"
    assert fit_level(10, 11, "gpu", 14) == "marginal"
    assert fit_score(7, 10) == 100.0
    assert fit_score(9, 10) == pytest.approx(100 * math.exp(-0.5))
    assert fit_score(11, 10) == 0.0


def test_score_is_the_weighted_sum() -> None:
    spec = model("Qwen/Qwen2.5-Coder-7B-Instruct")
    fit = analyze(spec, CPU_NODE)
    w = WEIGHTS["Coding"]
    c = fit.components
    assert fit.score == pytest.approx(w[0] * c.quality + w[1] * c.speed + w[2] * c.fit + w[3] * c.context)
    # 7.62 B sits in the <10B band (75), Qwen2.5 family +2, released 2024 +1
    assert quality_score(spec, "F32") == 78.0
    assert quality_score(spec, "INT4") == 73.0
