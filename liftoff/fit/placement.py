"""Where a reader's model goes: device, dtype/quantisation and a max_batch_size whose KV cache fits. Pure.

Budgets are what is left on each device after the readers already running there. For RAM the smaller of "available
now" and "usable total minus running readers" is used: a reader that is still loading has not yet taken its memory
from "available", and one that has loaded must not be counted twice.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from liftoff.core.calibration import Measurement
from liftoff.fit.analysis import ModelFit, analyze
from liftoff.fit.catalog import ModelSpec, find_model
from liftoff.fit.estimates import (
    RUNTIME_OVERHEAD_GB,
    adapter_gb,
    estimate_context,
    kv_bytes_per_element,
    kv_cache_gb,
    memory_gb,
    quant_ladder,
    weights_gb,
)
from liftoff.fit.hardware import GpuInfo, SystemSpecs

VRAM_USABLE_FRACTION = 0.92  # the CUDA context, allocator fragmentation and cuBLAS workspaces take the rest
RAM_USABLE_FRACTION = 0.85  # leave the OS, Redis and the gateway room to breathe
DEFAULT_MAX_BATCH_SIZE = 256  # beyond this a decode step stops getting cheaper per token on today's GPUs
NON_GENERATIVE_BATCH_SIZE = 64  # encoders keep no cache; batch size is bound by activations, not memory
# What a reader loads for each quantisation label: the torch dtype, and the reader's quant_type where there is one
# (liftoff.readers.engines.load_options: "int8" is int8 weight-only through torchao, computed in bf16 or fp16). Readers
# load
# no 4-bit format on their own, so INT4 is never placed (the fit analysis, which answers for transformers in general,
# still reports it).
TORCH_DTYPE = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "INT8": "bfloat16"}
QUANTIZATION = {"INT8": "int8"}


@dataclass(frozen=True, slots=True)
class RunningReader:
    model_name: str
    device: str  # "cpu", "cuda", "cuda:N"
    memory_gb: float | None = None  # measured or reported; None: estimated from the catalog
    adapters_gb: float = 0.0  # its LoRA adapters (their sizes as the reader publishes them), beside the model


@dataclass(frozen=True, slots=True)
class Placement:
    model_name: str
    device: str  # "cpu" or "cuda:N"
    quant: str  # the fit engine's label: F32, BF16 or INT8
    dtype: str  # the torch dtype to load with
    quantization: str | None  # the reader's quant_type: None or "int8"
    max_batch_size: int
    context: int  # tokens per sequence the KV budget assumes
    memory_gb: float  # weights + LoRA adapters + overhead + KV cache for max_batch_size sequences
    budget_gb: float  # what the device had left for this reader
    basis: str  # "measured" when a measurement of this model on this kind of device set the weights figure


class PlacementRefused(Exception):
    """No device can hold the model; `report` is the fit analysis against what is left on this node."""

    def __init__(self, message: str, report: ModelFit | None) -> None:
        super().__init__(message)
        self.report = report


class UnknownModel(LookupError):
    pass


def _normalise_device(device: str) -> str:
    return "cuda:0" if device == "cuda" else device


def _cards(node: SystemSpecs) -> list[tuple[str, GpuInfo]]:
    cards: list[tuple[str, GpuInfo]] = []
    for gpu in node.gpus:
        for _ in range(gpu.count):
            cards.append((f"cuda:{len(cards)}", gpu))
    return cards


def _reader_memory_gb(reader: RunningReader, node: SystemSpecs, catalog: tuple[ModelSpec, ...]) -> float:
    if reader.memory_gb is not None:
        return reader.memory_gb + reader.adapters_gb
    spec = find_model(catalog, reader.model_name)
    if spec is None:
        return RUNTIME_OVERHEAD_GB + reader.adapters_gb  # an unknown model (e.g. the echo engine) still holds a process
    kind = "cpu" if reader.device == "cpu" else "gpu"
    quant = quant_ladder("transformers", kind, node)[0]
    return memory_gb(spec, quant, estimate_context(spec, None), "transformers") + reader.adapters_gb


def device_budgets(node: SystemSpecs, catalog: tuple[ModelSpec, ...],
                   running_readers: Iterable[RunningReader]) -> dict[str, float]:
    """GB left per device ("cuda:N" and "cpu") after the running readers."""
    used: dict[str, float] = {}
    for reader in running_readers:
        device = _normalise_device(reader.device)
        used[device] = used.get(device, 0.0) + _reader_memory_gb(reader, node, catalog)
    budgets = {device: (gpu.vram_gb or 0.0) * VRAM_USABLE_FRACTION - used.get(device, 0.0)
               for device, gpu in _cards(node)}
    budgets["cpu"] = min(node.available_ram_gb, node.total_ram_gb * RAM_USABLE_FRACTION - used.get("cpu", 0.0))
    return {device: max(0.0, gb) for device, gb in budgets.items()}


def _fit_on(model: ModelSpec, device: str, quant: str, budget_gb: float, context: int, max_batch: int,
            measurement: Measurement | None, adapter_params: float = 0.0) -> Placement | None:
    kind_mode = "cpu_only" if device == "cpu" else "gpu"
    base = weights_gb(model, quant) + RUNTIME_OVERHEAD_GB
    basis = "estimated"
    if measurement is not None and measurement.applies_to(kind_mode) and measurement.dtype in (None, quant):
        base, basis = measurement.load_memory_gb, "measured"
    base += adapter_gb(adapter_params, quant)  # a measurement is of the model alone (liftoff.readers.reader._serve)
    per_sequence = kv_cache_gb(model, context, kv_bytes_per_element(quant, "transformers"))
    if base + per_sequence > budget_gb:
        return None
    if per_sequence > 0:
        batch = min(max_batch, math.floor((budget_gb - base) / per_sequence))
    else:
        batch = min(max_batch, NON_GENERATIVE_BATCH_SIZE)
    return Placement(
        model_name=model.name,
        device=device,
        quant=quant,
        dtype=TORCH_DTYPE[quant],
        quantization=QUANTIZATION.get(quant),
        max_batch_size=batch,
        context=context,
        memory_gb=base + per_sequence * batch,
        budget_gb=budget_gb,
        basis=basis,
    )


def _loadable(ladder: Iterable[str]) -> list[str]:
    return [quant for quant in ladder if quant in TORCH_DTYPE]


def place(reader_model_name: str, node: SystemSpecs, catalog: Iterable[ModelSpec],
          running_readers: Iterable[RunningReader] = (), max_sequence_length: int | None = None,
          max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
          measurements: Mapping[str, Measurement] | None = None, adapter_params: float = 0.0) -> Placement:
    """The best device for a new reader: any GPU before the CPU, best quantisation first, then most free memory.
    `adapter_params`: the parameters of the LoRA adapters it loads at start (repository.adapter_params)."""
    catalog = tuple(catalog)
    model = find_model(catalog, reader_model_name)
    if model is None:
        raise UnknownModel(f"model {reader_model_name!r} is in neither the fit catalog nor repository_path")
    measurement = (measurements or {}).get(model.name.lower())
    budgets = device_budgets(node, catalog, running_readers)
    context = estimate_context(model, max_sequence_length)
    gpus = sorted((d for d in budgets if d != "cpu"), key=lambda d: -budgets[d])
    for quant in _loadable(quant_ladder("transformers", "gpu", node)) if gpus else ():
        for device in gpus:
            placement = _fit_on(model, device, quant, budgets[device], context, max_batch_size, measurement,
                                adapter_params)
            if placement is not None:
                return placement
    for quant in _loadable(quant_ladder("transformers", "cpu", node)):
        placement = _fit_on(model, "cpu", quant, budgets["cpu"], context, max_batch_size, measurement,
                            adapter_params)
        if placement is not None:
            return placement
    report = analyze(model, residual_node(node, budgets), "transformers", max_sequence_length, measurement)
    free = ", ".join(f"{device} {gb:.1f} GB" for device, gb in budgets.items())
    raise PlacementRefused(
        f"{model.name} does not fit on this node: it needs about {report.memory_required_gb:.1f} GB "
        f"({report.best_quant}, {report.context} tokens) and the devices have {free} left",
        report,
    )


def residual_node(node: SystemSpecs, budgets: dict[str, float]) -> SystemSpecs:
    """The node as if the budgets were all it had: what the refusal's fit report is computed against."""
    cards = tuple(replace(gpu, vram_gb=budgets[device], count=1) for device, gpu in _cards(node))
    return replace(node, available_ram_gb=budgets["cpu"], gpus=cards)
