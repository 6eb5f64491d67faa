"""One model as the fit engine knows it (`ModelSpec`), whichever source described it: the curated catalog, a scan of
`repository_path`, or an operator's overlay."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

# The reference's six use-case categories; rerankers and classifiers are non-generative encoders and score like
# embedding models (speed matters most, a short context is enough), so they share that category.
CATEGORIES = ("General", "Coding", "Reasoning", "Chat", "Multimodal", "Embedding")
_CATEGORY_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Embedding", ("embedding", "rerank", "classification", "encoder")),
    ("Multimodal", ("multimodal", "vision", "image")),
    ("Coding", ("code", "coding")),
    ("Reasoning", ("reasoning", "math", "thinking")),
    ("Chat", ("chat", "instruction")),
)


def category_for(use_case: str) -> str:
    lowered = use_case.lower()
    for category, words in _CATEGORY_WORDS:
        if any(w in lowered for w in words):
            return category
    return "General"


def parameter_count_label(params_b: float) -> str:
    if params_b < 1.0:
        return f"{params_b * 1000:.0f}M"
    text = f"{params_b:.1f}".removesuffix(".0")
    return f"{text}B"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model as the fit engine sees it. Architecture numbers are None when unknown."""

    name: str
    provider: str
    params_b: float
    context_length: int
    use_case: str
    release_date: str | None = None
    is_moe: bool = False
    active_params_b: float | None = None
    num_layers: int | None = None
    num_kv_heads: int | None = None
    head_dim: int | None = None
    source: str = "catalog"  # catalog | repository | overlay
    path: str | None = None  # the model directory, for repository models
    weights_gb: float | None = None  # size of the weight files on disk, for repository models
    # a GGUF file in the repository: served dequantized, so its memory is parameters x the serving dtype, not the
    # file's size (which is kept here, for the report's `gguf_sources`)
    gguf_file_gb: float | None = None
    # of params_b, the vision tower and its projector (image-to-text models): in memory, but not read per token
    vision_params_b: float | None = None
    parameter_count: str = ""
    category: str = ""

    def __post_init__(self) -> None:
        if not self.parameter_count:
            object.__setattr__(self, "parameter_count", parameter_count_label(self.params_b))
        if not self.category:
            object.__setattr__(self, "category", category_for(self.use_case))

    @property
    def generative(self) -> bool:
        """Decoders keep a KV cache; embedding, reranking and classification models run one forward pass."""
        return self.category != "Embedding"

    @property
    def speed_params_b(self) -> float:
        """The parameters read per generated token: the active ones for a mixture of experts; a vision tower's are
        read once per image, not per token."""
        if self.is_moe and self.active_params_b:
            return self.active_params_b
        return self.params_b - (self.vision_params_b or 0.0)


_FIELD_NAMES = {f.name for f in fields(ModelSpec)}


def spec_from_dict(data: dict[str, Any], source: str) -> ModelSpec:
    known = {k: v for k, v in data.items() if k in _FIELD_NAMES}
    known.setdefault("provider", str(data["name"]).split("/")[0] if "/" in str(data["name"]) else "local")
    known.setdefault("context_length", 4096)
    known.setdefault("use_case", "General purpose text generation")
    known["source"] = source
    if known.get("active_params_b") is not None:
        known.setdefault("is_moe", True)
    return ModelSpec(**known)
