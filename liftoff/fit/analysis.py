"""One model on one node: run mode, best quantisation, memory, fit level, speed and score. Pure functions."""

from __future__ import annotations

from dataclasses import dataclass, field

from liftoff.core.calibration import Measurement
from liftoff.fit.catalog import ModelSpec
from liftoff.fit.estimates import (
    BYTES_PER_PARAM,
    RUNTIME_LABELS,
    QuantChoice,
    best_quant,
    estimate_context,
    estimate_tps,
    kv_bytes_per_element,
    kv_cache_gb,
    memory_gb,
    quant_ladder,
)
from liftoff.fit.hardware import SystemSpecs
from liftoff.fit.scoring import ScoreComponents, score

FIT_LEVELS = ("perfect", "good", "marginal", "too_tight")  # best first
FIT_RANK = {"perfect": 3, "good": 2, "marginal": 1, "too_tight": 0}
FIT_LABELS = {"perfect": "Perfect", "good": "Good", "marginal": "Marginal", "too_tight": "Too Tight"}
RUN_MODE_LABELS = {"gpu": "GPU", "tensor_parallel": "TP", "moe_offload": "MoE", "cpu_offload": "CPU+GPU",
                   "cpu_only": "CPU"}
GPU_MODES = ("gpu", "tensor_parallel")
GOOD_HEADROOM = 1.2  # available / required at or above this is a comfortable ("good") fit
PERFECT_HEADROOM = 1.2  # perfect: the best-quality quantisation at full context fits with this much to spare


@dataclass(frozen=True, slots=True)
class ModelFit:
    model: ModelSpec
    runtime: str
    run_mode: str
    best_quant: str
    fit_level: str
    context: int  # the context the memory figure assumes
    memory_required_gb: float
    memory_available_gb: float
    kv_cache_gb: float
    estimated_tps: float
    score: float
    components: ScoreComponents
    moe_offloaded_gb: float | None = None
    memory_basis: str = "estimated"
    tps_basis: str = "estimated"
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def utilization_pct(self) -> float:
        return self.memory_required_gb / self.memory_available_gb * 100 if self.memory_available_gb > 0 else 0.0

    @property
    def runnable(self) -> bool:
        return self.fit_level != "too_tight"

    @property
    def device(self) -> str:
        return "cpu" if self.run_mode == "cpu_only" else "cuda"


@dataclass(frozen=True, slots=True)
class _Placement:
    run_mode: str
    choice: QuantChoice
    available_gb: float
    moe_offloaded_gb: float | None = None


def fit_level(required_gb: float, available_gb: float, run_mode: str, recommended_gb: float) -> str:
    if required_gb > available_gb:
        return "too_tight"
    if run_mode in GPU_MODES and recommended_gb <= available_gb:
        return "perfect"
    # Offload and CPU modes never reach perfect: they work, but slower than the hardware class promises.
    return "good" if available_gb >= GOOD_HEADROOM * required_gb else "marginal"


def _gpu_mode(required_gb: float, specs: SystemSpecs) -> str:
    per_card = specs.gpu_vram_gb or 0.0
    return "tensor_parallel" if specs.gpu_count > 1 and required_gb > per_card else "gpu"


def _moe_offload(model: ModelSpec, quants: tuple[str, ...], specs: SystemSpecs, context: int,
                 runtime: str) -> _Placement | None:
    """Active experts (and attention, KV) on the GPU, the other experts in RAM."""
    if not (model.is_moe and model.active_params_b):
        return None
    vram = specs.total_gpu_vram_gb
    for quant in quants:
        offloaded = (model.params_b - model.active_params_b) * BYTES_PER_PARAM[quant]
        on_gpu = memory_gb(model, quant, context, runtime) - offloaded
        if on_gpu <= vram and offloaded <= specs.available_ram_gb:
            return _Placement("moe_offload", QuantChoice(quant, context, on_gpu), vram, offloaded)
    return None


def _place(model: ModelSpec, specs: SystemSpecs, context: int, runtime: str) -> tuple[_Placement, bool]:
    """The best way to run the model here, and whether it fits at all."""
    if (specs.has_gpu and runtime != "mlx") or specs.unified_memory:
        quants = quant_ladder(runtime, "gpu", specs)
        vram = specs.total_gpu_vram_gb
        choice = best_quant(model, quants, vram, context, runtime)
        if choice is not None:
            return _Placement(_gpu_mode(choice.memory_gb, specs), choice, vram), True
        moe = _moe_offload(model, quants, specs, context, runtime)
        if moe is not None:
            return moe, True
        pooled = vram + specs.available_ram_gb
        choice = best_quant(model, quants, pooled, context, runtime)
        if choice is not None:
            return _Placement("cpu_offload", choice, pooled), True
        return _too_big("gpu", model, quants[-1], context, runtime, vram)
    if runtime == "mlx":
        # MLX runs only on Apple silicon's unified memory: elsewhere nothing fits.
        return _too_big("cpu_only", model, quant_ladder(runtime, "cpu", specs)[-1], context, runtime, 0.0)
    quants = quant_ladder(runtime, "cpu", specs)
    ram = specs.available_ram_gb
    choice = best_quant(model, quants, ram, context, runtime)
    if choice is not None:
        return _Placement("cpu_only", choice, ram), True
    return _too_big("cpu_only", model, quants[-1], context, runtime, ram)


def _too_big(mode: str, model: ModelSpec, quant: str, context: int, runtime: str,
             budget_gb: float) -> tuple[_Placement, bool]:
    """A model that fits no way: placed at its smallest quantization, with what that would take, and not fitting."""
    return _Placement(mode, QuantChoice(quant, context, memory_gb(model, quant, context, runtime)), budget_gb), False


def analyze(model: ModelSpec, specs: SystemSpecs, runtime: str = "transformers", max_context: int | None = None,
            measurement: Measurement | None = None) -> ModelFit:
    context = estimate_context(model, max_context)
    placement, _ = _place(model, specs, context, runtime)
    choice = placement.choice
    notes: list[str] = []
    if choice.context < context:
        notes.append(f"context halved to {choice.context} tokens to fit")
    if placement.moe_offloaded_gb is not None:
        notes.append(f"{placement.moe_offloaded_gb:.1f} GB of inactive experts offloaded to RAM")
    if model.gguf_file_gb is not None:
        notes.append(f"GGUF file ({model.gguf_file_gb:.2f} GB on disk): dequantized at load, so its memory is its "
                     f"parameters at the serving dtype, not the file's size")
    if runtime == "transformers" and specs.has_gpu and not specs.quant_libs:
        notes.append("8-bit and 4-bit loading need bitsandbytes, which is not installed")
    required = choice.memory_gb
    tps = estimate_tps(model, choice.quant, placement.run_mode, specs)
    memory_basis = tps_basis = "estimated"
    quant = choice.quant
    if measurement is not None and runtime == "transformers" and measurement.applies_to(placement.run_mode):
        required = measurement.load_memory_gb
        memory_basis = "measured"
        quant = measurement.dtype or quant
        if measurement.tokens_per_s is not None:
            tps = measurement.tokens_per_s
            tps_basis = "measured"
        notes.append("measured on this node")
    top = quant_ladder(runtime, "gpu" if placement.run_mode in GPU_MODES else "cpu", specs)[0]
    recommended = 1.2 * memory_gb(model, top, context, runtime)
    level = fit_level(required, placement.available_gb, placement.run_mode, recommended)
    total, components = score(model, quant if quant in BYTES_PER_PARAM else None, tps, required,
                              placement.available_gb)
    return ModelFit(
        model=model,
        runtime=runtime,
        run_mode=placement.run_mode,
        best_quant=quant,
        fit_level=level,
        context=choice.context,
        memory_required_gb=required,
        memory_available_gb=placement.available_gb,
        kv_cache_gb=kv_cache_gb(model, choice.context, kv_bytes_per_element(choice.quant, runtime)),
        estimated_tps=tps,
        score=total,
        components=components,
        moe_offloaded_gb=placement.moe_offloaded_gb,
        memory_basis=memory_basis,
        tps_basis=tps_basis,
        notes=tuple(notes),
    )


def fit_json(fit: ModelFit) -> dict[str, object]:
    """One model row of the reference envelope, plus Liftoff's additions (basis, context, kv_cache_gb, device)."""
    model = fit.model
    return {
        "name": model.name,
        "provider": model.provider,
        "parameter_count": model.parameter_count,
        "params_b": round(model.params_b, 2),
        "context_length": model.context_length,
        "use_case": model.use_case,
        "category": model.category,
        "release_date": model.release_date,
        "is_moe": model.is_moe,
        "fit_level": fit.fit_level,
        "fit_label": FIT_LABELS[fit.fit_level],
        "run_mode": fit.run_mode,
        "run_mode_label": RUN_MODE_LABELS[fit.run_mode],
        "score": round(fit.score, 1),
        "score_components": fit.components.as_json(),
        "estimated_tps": round(fit.estimated_tps, 1),
        "runtime": fit.runtime,
        "runtime_label": RUNTIME_LABELS[fit.runtime],
        "best_quant": fit.best_quant,
        "memory_required_gb": round(fit.memory_required_gb, 2),
        "memory_available_gb": round(fit.memory_available_gb, 2),
        "moe_offloaded_gb": None if fit.moe_offloaded_gb is None else round(fit.moe_offloaded_gb, 2),
        "total_memory_gb": round(fit.memory_required_gb + (fit.moe_offloaded_gb or 0.0), 2),
        "utilization_pct": round(fit.utilization_pct, 1),
        "notes": list(fit.notes),
        "gguf_sources": [] if model.gguf_file_gb is None else [{"path": model.path, "file_gb": model.gguf_file_gb}],
        "basis": {"memory": fit.memory_basis, "tps": fit.tps_basis},
        "device": fit.device,
        "context_used": fit.context,
        "kv_cache_gb": round(fit.kv_cache_gb, 3),
        "active_params_b": model.active_params_b,
        "vision_params_b": model.vision_params_b,
        "source": model.source,
    }
