"""Memory and speed estimates: bytes per parameter by quantisation, KV cache, tokens per second.

Formulas follow the method of the best-known peer tool so that our answers are comparable with its; where Liftoff
knows more (its own runtime, measurements of readers that ran) the figures say so through their basis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from liftoff.fit.catalog import ModelSpec
from liftoff.fit.hardware import SystemSpecs

GIB = 1024**3
RUNTIME_OVERHEAD_GB = 0.5  # CUDA context / allocator slack / Python and library state
DEFAULT_CONTEXT_CAP = 8192  # the context an estimate assumes unless the caller gives max_context
MIN_HALVED_CONTEXT = 1024  # the smallest context the "retry at half context" step may fall back to
KV_FALLBACK_GB_PER_B_TOKEN = 0.000008  # KV GB per (billion params x token) when the architecture is unknown
ROOFLINE_EFFICIENCY = 0.55  # share of peak memory bandwidth a decode step achieves in practice
CPU_REFERENCE_CORES = 8  # the constants below are for a machine this wide; decode saturates bandwidth about here

# GB of weights per billion parameters.
BYTES_PER_PARAM: dict[str, float] = {
    "F32": 4.0, "BF16": 2.0, "F16": 2.0, "INT8": 1.05, "INT4": 0.5,
    "Q8_0": 1.05, "Q6_K": 0.80, "Q5_K_M": 0.68, "Q4_K_M": 0.58, "Q4_0": 0.58, "Q3_K_M": 0.48, "Q2_K": 0.37,
    "mlx-8bit": 1.0, "mlx-4bit": 0.55,
}
# Relative decode speed when the bandwidth is unknown (Q5_K_M = 1.0, the peer's anchor).
QUANT_SPEED: dict[str, float] = {
    "F32": 0.5, "BF16": 0.6, "F16": 0.6, "INT8": 0.45, "INT4": 0.9,
    "Q8_0": 0.8, "Q6_K": 0.95, "Q5_K_M": 1.0, "Q4_K_M": 1.15, "Q4_0": 1.15, "Q3_K_M": 1.25, "Q2_K": 1.35,
    "mlx-8bit": 0.85, "mlx-4bit": 1.15,
}
# bitsandbytes' 8-bit matmul dequantises on the fly and runs well below what its bytes suggest.
KERNEL_EFFICIENCY: dict[str, float] = {"INT8": 0.5}
QUALITY_PENALTY: dict[str, float] = {
    "Q6_K": -1.0, "Q5_K_M": -2.0, "Q4_K_M": -5.0, "Q4_0": -5.0, "Q3_K_M": -8.0, "Q2_K": -12.0,
    "INT4": -5.0, "mlx-4bit": -4.0,
}

RUNTIMES = ("transformers", "llamacpp", "mlx")
RUNTIME_LABELS = {"transformers": "Transformers", "llamacpp": "llama.cpp", "mlx": "MLX"}
LLAMACPP_QUANTS = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K")
MLX_QUANTS = ("mlx-8bit", "mlx-4bit")

# tokens/s x billion params for a Q5-class model when the bandwidth is unknown.
SPEED_CONSTANT: dict[str, float] = {"CUDA": 220.0, "ROCm": 180.0, "Metal": 160.0, "CPU (ARM)": 90.0,
                                    "CPU (x86)": 70.0}
MODE_SPEED_FACTOR: dict[str, float] = {"gpu": 1.0, "tensor_parallel": 0.9, "moe_offload": 0.8, "cpu_offload": 0.5,
                                       "cpu_only": 0.3}


def quant_ladder(runtime: str, device: str, specs: SystemSpecs) -> tuple[str, ...]:
    """Quantisations a runtime can load on a device ("gpu" or "cpu"), best quality first."""
    if runtime == "llamacpp":
        return LLAMACPP_QUANTS
    if runtime == "mlx":
        return MLX_QUANTS
    if device == "cpu":
        # Liftoff's readers run fp32 on CPU (fast kernels everywhere); bf16 halves the memory when it must.
        return ("F32", "BF16")
    return ("BF16", "INT8", "INT4") if specs.quant_libs else ("BF16",)


def kv_bytes_per_element(quant: str, runtime: str) -> int:
    # transformers keeps the cache in the compute dtype (fp32 on CPU); the others keep fp16.
    return 4 if runtime == "transformers" and quant == "F32" else 2


def estimate_context(model: ModelSpec, max_context: int | None) -> int:
    return min(model.context_length, max_context if max_context is not None else DEFAULT_CONTEXT_CAP)


def kv_cache_gb(model: ModelSpec, context: int, bytes_per_elem: int = 2, batch: int = 1) -> float:
    """KV cache for `batch` sequences of `context` tokens; zero for models that never decode."""
    if not model.generative:
        return 0.0
    if model.num_layers and model.num_kv_heads and model.head_dim:
        per_token = 2 * model.num_layers * model.num_kv_heads * model.head_dim * bytes_per_elem
        return per_token * context * batch / GIB
    return KV_FALLBACK_GB_PER_B_TOKEN * model.params_b * context * batch


def weights_gb(model: ModelSpec, quant: str, params_b: float | None = None) -> float:
    return (model.params_b if params_b is None else params_b) * BYTES_PER_PARAM[quant]


def adapter_gb(params: float, quant: str) -> float:
    """A LoRA adapter's memory: peft keeps its A and B in the compute dtype of the base layers (fp32 on CPU, 16-bit
    otherwise, the int8 weight-only quantisation's included)."""
    return params * (4 if quant == "F32" else 2) / GIB


def memory_gb(model: ModelSpec, quant: str, context: int, runtime: str) -> float:
    """Weights + KV cache at `context` + runtime overhead."""
    kv = kv_cache_gb(model, context, kv_bytes_per_element(quant, runtime))
    return weights_gb(model, quant) + kv + RUNTIME_OVERHEAD_GB


@dataclass(frozen=True, slots=True)
class QuantChoice:
    quant: str
    context: int
    memory_gb: float


def best_quant(model: ModelSpec, quants: tuple[str, ...], budget_gb: float, context: int,
               runtime: str) -> QuantChoice | None:
    """The best-quality quantisation that fits the budget; failing all, once more at half the context."""
    for ctx in (context, context // 2):
        if ctx != context and ctx < MIN_HALVED_CONTEXT:
            break
        for quant in quants:
            need = memory_gb(model, quant, ctx, runtime)
            if need <= budget_gb:
                return QuantChoice(quant, ctx, need)
    return None


def estimate_tps(model: ModelSpec, quant: str, run_mode: str, specs: SystemSpecs) -> float:
    """Decode tokens/s at batch 1: a bandwidth roofline on known GPUs, a per-backend constant otherwise."""
    params = max(model.speed_params_b, 1e-4)
    efficiency = KERNEL_EFFICIENCY.get(quant, 1.0)
    bandwidth = specs.gpu_bandwidth_gbps if run_mode != "cpu_only" else None
    if bandwidth:
        model_gb = params * BYTES_PER_PARAM[quant]
        return bandwidth / model_gb * ROOFLINE_EFFICIENCY * MODE_SPEED_FACTOR[run_mode] * efficiency
    if run_mode == "cpu_only" or not specs.has_gpu:
        k = SPEED_CONSTANT[f"CPU ({specs.cpu_arch})"]
        k *= min(specs.cpu_cores, CPU_REFERENCE_CORES) / CPU_REFERENCE_CORES
        return k / params * QUANT_SPEED[quant] * efficiency
    k = SPEED_CONSTANT.get(specs.backend, SPEED_CONSTANT["CUDA"])
    return k / params * QUANT_SPEED[quant] * MODE_SPEED_FACTOR[run_mode] * efficiency


def fit_score(required_gb: float, available_gb: float) -> float:
    """100 while the model uses at most 70% of the pool, then a Gaussian fall-off; 0 when it doesn't fit."""
    if available_gb <= 0 or required_gb > available_gb:
        return 0.0
    ratio = required_gb / available_gb
    if ratio <= 0.7:
        return 100.0
    return 100.0 * math.exp(-0.5 * ((ratio - 0.7) / 0.2) ** 2)
