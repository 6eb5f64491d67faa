"""What a model engine asks `from_pretrained` for (dtype and quantisation), and the label of what it got.

Every model engine loads through `model_load_options`, so that a reader's `dtype` and `quant_type` settings mean
the same for generation, embeddings and classification, and records `loaded_label(model)` as what it loaded.

dtype: `torch_device.pick_dtype` (auto: fp32 on CPU, bf16 or fp16 on a GPU).

quant_type:
  None    the weights as the model was saved. A model saved quantized (a `quantization_config` in its config.json:
          GPTQ, AWQ, bitsandbytes, fp8, ...) loads as transformers loads it, where that method's library is installed.
  "int8"  int8 weight-only, with torchao (`Int8WeightOnlyConfig`, applied by transformers while it loads): each
          linear layer's weight is kept in int8 with one scale per output row and multiplied in the reader's dtype.
          About half the weight memory of bf16 and a quarter of fp32; not faster than the dtype it runs in (there is
          no int8 kernel behind it without torch.compile). The embeddings and the output head keep the dtype.
  else    refused when the reader starts (EngineLoadError naming it), whatever the device: a method that is not
          implemented here is never accepted and silently skipped.

The label reads the loaded model's tensors, not the settings: "F32", "BF16", "F16" for plain weights, "INT8", "INT4"
or "FP8" where weights are held quantized. They are the fit engine's quantisation labels, and calibration records
them (liftoff.core.calibration), so a measurement is matched with the placement it is evidence for.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from liftoff.core.reader_config import ReaderConfig
from liftoff.readers.engines.base import EngineLoadError
from liftoff.readers.engines.torch_device import pick_dtype

log = logging.getLogger(__name__)

QUANT_TYPES = {"int8": "int8 weight-only, torchao"}  # what `quant_type` may be, and what each loads
FLOAT_LABELS = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16", torch.float64: "F64"}


def model_load_options(config: ReaderConfig, device: torch.device, model_path: Path | None = None) -> dict[str, Any]:
    """Keyword arguments for `from_pretrained` (`dtype`, and `quantization_config` when `quant_type` asks for one).

    EngineLoadError, one line, when the dtype or quant_type can't be had on `device`, or when a quant_type is asked
    of a model saved quantized (`model_path`'s config.json says so; not checked without a path)."""
    options: dict[str, Any] = {"dtype": pick_dtype(device, config.dtype)}
    quant = config.quant_type
    if quant is None:
        return options
    if quant not in QUANT_TYPES:
        supported = ", ".join(f"{name} ({what})" for name, what in QUANT_TYPES.items())
        raise EngineLoadError(
            f"quant_type {quant!r} is not supported on {device}; supported: {supported}. A model saved quantized "
            f"(GPTQ, AWQ, ...) loads as it is with quant_type unset")
    saved = saved_quantization(model_path)
    if saved is not None:
        raise EngineLoadError(f"quant_type {quant!r}: the model is already quantized ({saved}); leave quant_type "
                              f"unset to load it as saved")
    options["quantization_config"] = _int8_weight_only()
    return options


def saved_quantization(model_path: Path | None) -> str | None:
    """The quantisation method a saved model declares in its config.json (e.g. "gptq"), or None."""
    if model_path is None or not (model_path / "config.json").is_file():
        return None
    try:
        declared = json.loads((model_path / "config.json").read_text()).get("quantization_config")
    except (OSError, ValueError, AttributeError):
        return None
    if not declared:
        return None
    return str(declared.get("quant_method", "quantized")) if isinstance(declared, dict) else "quantized"


def _int8_weight_only() -> Any:
    try:
        from torchao.quantization import Int8WeightOnlyConfig
        from transformers import TorchAoConfig
    except ImportError as exc:
        raise EngineLoadError(f"quant_type 'int8' needs the torchao package, which cannot be imported: {exc}") from exc
    return TorchAoConfig(Int8WeightOnlyConfig())


def loaded_label(model: torch.nn.Module) -> str:
    """What `model` holds: the quantised format of its weights where it has any, else the dtype of most of them."""
    quantized: Counter[str] = Counter()
    plain: Counter[str] = Counter()
    bits = _declared_bits(model)
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        kind = _quantized_kind(name, tensor, bits)
        if kind is not None:
            quantized[kind] += tensor.numel()
        elif isinstance(tensor, torch.nn.Parameter) and tensor.is_floating_point():
            plain[FLOAT_LABELS.get(tensor.dtype, str(tensor.dtype).removeprefix("torch.").upper())] += tensor.numel()
    found = quantized or plain
    return found.most_common(1)[0][0] if found else "unknown"


def _quantized_kind(name: str, tensor: torch.Tensor, bits: int) -> str | None:
    """INT8 / INT4 / FP8 for a weight held quantized, None for anything else.

    Tensor subclasses (torchao) report their logical dtype, so their inner tensors are read instead. Plain integer
    tensors count only as weights (bitsandbytes keeps int8 or packed uint8 weights, GPTQ/AWQ packed int32
    `qweight`s), never as index buffers such as position ids."""
    flatten = getattr(tensor, "__tensor_flatten__", None)
    if flatten is not None:
        names, _ = flatten()
        inner = [getattr(tensor, n, None) for n in names]
        kinds = [_dtype_kind(t.dtype, bits) for t in inner if isinstance(t, torch.Tensor)]
        return next((kind for kind in kinds if kind is not None), None)
    if "weight" not in name.rsplit(".", 1)[-1]:
        return None
    return _dtype_kind(tensor.dtype, bits)


def _dtype_kind(dtype: torch.dtype, bits: int) -> str | None:
    if dtype == torch.int8:
        return "INT8"
    if dtype.is_floating_point and dtype.itemsize == 1:
        return "FP8"
    if dtype == torch.uint8 or dtype == torch.int32 or "int4" in str(dtype):
        return f"INT{bits}"  # packed: several weights per element
    return None


def _declared_bits(model: torch.nn.Module) -> int:
    """Bits per packed weight: what the model's own quantization_config says (GPTQ/AWQ), else 4."""
    declared = getattr(getattr(model, "config", None), "quantization_config", None)
    bits = declared.get("bits") if isinstance(declared, dict) else getattr(declared, "bits", None)
    return bits if isinstance(bits, int) and 1 < bits <= 8 else 4
