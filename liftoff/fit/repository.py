"""Models found in `repository_path`: read each `config.json` and the weight files beside it.

Parameters are counted exactly from safetensors headers (8-byte length, then a JSON table of dtype and shape per
tensor: no tensor data is read). Without safetensors, the weight files' size over the dtype's width gives the count,
and without weights the count is computed from the config's shapes. Architecture numbers come from the config.

An image-to-text model's vision tower and projector (`vision_config`) are counted in its parameters (so in a
reader's memory) and apart (`vision_params_b`): from the safetensors tensors under their module names, else from
the vision config's shapes. They are read once per image, not per generated token, so speed leaves them out.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

from liftoff.fit.spec import ModelSpec

MAX_DEPTH = 3  # repository_path/<org>/<name>/config.json is the deepest layout Liftoff writes
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
GIB = 1024**3
# The module names (within a tensor name's first three parts) of vision towers and their projectors.
VISION_MODULES = frozenset({"vision_tower", "vision_model", "visual", "vision_encoder", "multi_modal_projector",
                            "mm_projector", "vision_projection", "image_newline"})
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "int8": 1, "uint8": 1, "F32": 4, "F16": 2, "BF16": 2,
               "I8": 1, "U8": 1, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


def scan_repository(root: Path) -> tuple[ModelSpec, ...]:
    if not root.is_dir():
        return ()
    specs = []
    for config_path in _configs(root, 0):
        try:
            specs.append(spec_from_directory(config_path.parent, config_path.parent.relative_to(root).as_posix()))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a half-downloaded or foreign directory is not a model; skip it rather than fail the list
    for path in _gguf_files(root, 0):
        try:
            specs.append(spec_from_gguf(path, path.relative_to(root).as_posix()))
        except (OSError, ValueError, KeyError, TypeError, IndexError):
            continue  # not a readable GGUF file: the reader that loads it says why
    return tuple(specs)


def _gguf_files(directory: Path, depth: int) -> list[Path]:
    try:
        children = sorted(p for p in directory.iterdir() if not p.name.startswith("."))
    except OSError:
        return []
    found = [p for p in children if p.is_file() and p.name.lower().endswith(".gguf")]
    if depth + 1 < MAX_DEPTH:
        for child in children:
            if child.is_dir():
                found += _gguf_files(child, depth + 1)
    return found


_gguf_cache: dict[tuple[str, int, int], dict[str, Any]] = {}


def gguf_facts(path: Path) -> dict[str, Any]:
    """What a GGUF file's header says of its model: architecture, shapes, context, parameter count (cached per
    file version: the header of a large file takes seconds to parse)."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _gguf_cache:
        return _gguf_cache[key]
    from gguf import GGUFReader

    reader = GGUFReader(path)

    def value(name: str) -> Any:
        field = reader.fields.get(name)
        return None if field is None else field.contents()

    arch = str(value("general.architecture"))
    facts = {
        "architecture": arch,
        "params": sum(math.prod(int(d) for d in t.shape) for t in reader.tensors),
        "layers": value(f"{arch}.block_count"),
        "heads": value(f"{arch}.attention.head_count"),
        "kv_heads": value(f"{arch}.attention.head_count_kv"),
        "hidden": value(f"{arch}.embedding_length"),
        "context": value(f"{arch}.context_length"),
        "name": value("general.name"),
    }
    _gguf_cache[key] = facts
    return facts


def spec_from_gguf(path: Path, name: str) -> ModelSpec:
    """A GGUF file as the fit engine counts it: by its parameters at the serving dtype (it is dequantized at load),
    not by the file's size."""
    facts = gguf_facts(path)
    heads, hidden = facts["heads"], facts["hidden"]
    head_dim = int(hidden) // int(heads) if heads and hidden else None
    return ModelSpec(
        name=name,
        provider="local",
        params_b=round(facts["params"] / 1e9, 4),
        context_length=int(facts["context"] or 2048),
        use_case="General purpose text generation",
        num_layers=int(facts["layers"]) if facts["layers"] else None,
        num_kv_heads=int(facts["kv_heads"]) if facts["kv_heads"] else None,
        head_dim=head_dim,
        source="repository",
        path=str(path),
        gguf_file_gb=round(path.stat().st_size / GIB, 4),
    )


def _configs(directory: Path, depth: int) -> list[Path]:
    config = directory / "config.json"
    if config.is_file() and depth > 0:
        return [config]
    if depth >= MAX_DEPTH:
        return []
    found: list[Path] = []
    try:
        children = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []
    for child in children:
        found += _configs(child, depth + 1)
    return found


def spec_from_directory(directory: Path, name: str) -> ModelSpec:
    config: dict[str, Any] = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    text = config.get("text_config") or config
    weight_files = [p for p in directory.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)]
    weights_bytes = sum(p.stat().st_size for p in weight_files)
    counted = _safetensors_params(weight_files)
    params, vision = counted if counted is not None else (None, None)
    if params is None and weights_bytes:
        params = weights_bytes / DTYPE_BYTES.get(str(config.get("torch_dtype", "float32")), 4)
    if vision is None:
        vision = vision_params_from_config(config)
    if params is None:
        params = params_from_config(text) + vision
    layers, kv_heads, head_dim = architecture(text)
    experts = text.get("num_local_experts") or text.get("num_experts") or text.get("n_routed_experts")
    per_token = text.get("num_experts_per_tok") or text.get("moe_topk")
    active = None
    if experts and per_token and experts > per_token:
        total_mlp = _mlp_params(text) * (layers or 0) * experts
        active = (params - total_mlp * (1 - per_token / experts)) / 1e9
    return ModelSpec(
        name=name,
        provider=name.split("/")[0] if "/" in name else "local",
        params_b=round(params / 1e9, 4),
        context_length=int(text.get("max_position_embeddings") or config.get("max_position_embeddings") or 2048),
        use_case=use_case_from_config(config, name, directory),
        is_moe=active is not None,
        active_params_b=None if active is None else round(active, 4),
        num_layers=layers,
        num_kv_heads=kv_heads,
        head_dim=head_dim,
        source="repository",
        path=str(directory),
        weights_gb=round(weights_bytes / GIB, 4) if weights_bytes else None,
        vision_params_b=round(vision / 1e9, 6) if vision else None,
    )


def _safetensors_params(files: list[Path]) -> tuple[float, float] | None:
    """All parameters of the safetensors files, and those of a vision tower and projector among them."""
    tensors = [p for p in files if p.name.endswith(".safetensors")]
    if not tensors:
        return None
    total = vision = 0
    for path in tensors:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for key, entry in header.items():
            if key != "__metadata__":
                count = math.prod(entry["shape"])
                total += count
                if VISION_MODULES.intersection(key.split(".")[:3]):
                    vision += count
    return float(total), float(vision)


def vision_params_from_config(config: dict[str, Any]) -> float:
    """A vision tower's weights implied by `vision_config` (a ViT: patch and position embeddings, attention and MLP
    per layer) and a two-layer projector into the text model's width; 0 without a vision config."""
    vision = config.get("vision_config")
    if not isinstance(vision, dict):
        return 0.0
    hidden = vision.get("hidden_size") or vision.get("embed_dim") or 0
    layers = vision.get("num_hidden_layers") or vision.get("depth") or 0
    inner = vision.get("intermediate_size") or 4 * hidden
    patch = vision.get("patch_size") or 14
    image = vision.get("image_size") or 224
    channels = vision.get("num_channels") or 3
    text_hidden = (config.get("text_config") or config).get("hidden_size") or hidden
    embeddings = channels * patch * patch * hidden + ((image // patch) ** 2 + 1) * hidden
    per_layer = 4 * hidden * hidden + 2 * hidden * inner
    projector = hidden * text_hidden + text_hidden * text_hidden
    return float(embeddings + layers * per_layer + projector)


def adapter_params(directory: Path) -> float | None:
    """Parameters of the LoRA adapter in `directory` (its safetensors header, or its weight file's size at fp32);
    None when there is no adapter there (not yet downloaded)."""
    if not (directory / "adapter_config.json").is_file():
        return None
    from safetensors import safe_open

    weights = [p for p in directory.iterdir() if p.is_file() and p.name.startswith("adapter_model")
               and p.name.endswith(WEIGHT_SUFFIXES)]
    total = 0.0
    for path in weights:
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="np") as f:  # the header only
                total += sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())  # noqa: SIM118 — a safetensors file, not a dict
        else:
            total += path.stat().st_size / 4
    return total


def architecture(config: dict[str, Any]) -> tuple[int | None, int | None, int | None]:
    layers = config.get("num_hidden_layers") or config.get("n_layer") or config.get("num_layers")
    heads = config.get("num_attention_heads") or config.get("n_head")
    kv_heads = config.get("num_key_value_heads") or config.get("multi_query_group_num") or heads
    hidden = config.get("hidden_size") or config.get("n_embd") or config.get("d_model")
    head_dim = config.get("head_dim") or (hidden // heads if hidden and heads else None)
    return layers, kv_heads, head_dim


def _mlp_params(config: dict[str, Any]) -> int:
    hidden = config.get("hidden_size") or config.get("n_embd") or 0
    inner = (config.get("moe_intermediate_size") or config.get("intermediate_size") or config.get("n_inner")
             or 4 * hidden)
    activation = config.get("hidden_act", config.get("activation_function", "silu"))
    gated = activation in ("silu", "swiglu", "gelu_pytorch_tanh")  # gate, up and down projections
    return (3 if gated else 2) * hidden * inner


def params_from_config(config: dict[str, Any]) -> float:
    """Weights implied by the config's shapes: embeddings, attention and MLP per layer, the LM head when untied."""
    hidden = config.get("hidden_size") or config.get("n_embd") or config.get("d_model")
    vocab = config.get("vocab_size")
    layers, kv_heads, head_dim = architecture(config)
    heads = config.get("num_attention_heads") or config.get("n_head")
    if not (hidden and vocab and layers and heads and head_dim):
        raise ValueError("config.json lacks the shapes needed to count parameters")
    attention = hidden * heads * head_dim * 2 + hidden * (kv_heads or heads) * head_dim * 2
    experts = config.get("num_local_experts") or config.get("num_experts") or 1
    per_layer = attention + _mlp_params(config) * experts
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings", True) else 2)
    return float(embeddings + layers * per_layer)


def use_case_from_config(config: dict[str, Any], name: str, directory: Path) -> str:
    architectures = " ".join(config.get("architectures") or [])
    lowered = name.lower()
    if (directory / "modules.json").is_file() or "embed" in lowered:
        return "Text embeddings for retrieval"
    if "rerank" in lowered:
        return "Reranking (cross-encoder)"
    if "SequenceClassification" in architectures or "TokenClassification" in architectures:
        return "Text classification"
    if "vision_config" in config or "VL" in name or "Vision" in architectures:
        return "Multimodal, vision and text"
    if "ForCausalLM" not in architectures and "ConditionalGeneration" not in architectures and architectures:
        return "Encoder backbone for classification"
    if "code" in lowered or "coder" in lowered:
        return "Code generation and completion"
    if "instruct" in lowered or "chat" in lowered:
        return "Instruction following, chat"
    return "General purpose text generation"


def catalog_entries(root: Path) -> list[dict[str, Any]]:
    """catalog.json entries for the models under `root`, to paste into the curated catalog or an overlay."""
    keys = ("name", "provider", "params_b", "context_length", "use_case", "release_date", "is_moe", "active_params_b",
            "num_layers", "num_kv_heads", "head_dim")
    return [{k: getattr(spec, k) for k in keys} for spec in scan_repository(root)]


if __name__ == "__main__":
    import sys

    for entry in catalog_entries(Path(sys.argv[1] if len(sys.argv) > 1 else ".")):
        print(json.dumps(entry) + ",")
