"""The models the fit engine knows: the curated `catalog.json`, the models in `repository_path`, a user overlay.

Later sources replace earlier ones by name: curated < repository (real files beat published numbers) < overlay (the
operator has the last word). Each source is cached: the curated file for the process, the repository scan for a
few seconds, the overlay until its modification time changes.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

CURATED_PATH = Path(__file__).with_name("catalog.json")
OVERLAY_ENV = "LIFTOFF_FIT_CATALOG"
REPOSITORY_SCAN_TTL_S = 10.0

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


def _entries(document: Any) -> list[dict[str, Any]]:
    return document["models"] if isinstance(document, dict) else document


@lru_cache(maxsize=1)
def curated_models() -> tuple[ModelSpec, ...]:
    document = json.loads(CURATED_PATH.read_text(encoding="utf-8"))
    return tuple(spec_from_dict(entry, "catalog") for entry in _entries(document))


_overlay_lock = threading.Lock()
_overlay_cache: dict[str, tuple[float, tuple[ModelSpec, ...]]] = {}


def overlay_models(path: str | None) -> tuple[ModelSpec, ...]:
    """Models from the user overlay file (same shape as catalog.json). A missing file is no overlay."""
    if not path:
        return ()
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        return ()
    with _overlay_lock:
        cached = _overlay_cache.get(path)
        if cached and cached[0] == mtime:
            return cached[1]
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    specs = tuple(spec_from_dict(entry, "overlay") for entry in _entries(document))
    with _overlay_lock:
        _overlay_cache[path] = (mtime, specs)
    return specs


_repo_lock = threading.Lock()
_repo_cache: dict[str, tuple[float, tuple[ModelSpec, ...]]] = {}


def repository_models_cached(repository_path: str | None) -> tuple[ModelSpec, ...]:
    if not repository_path:
        return ()
    from management.fit.repository import scan_repository

    now = time.monotonic()
    with _repo_lock:
        cached = _repo_cache.get(repository_path)
        if cached and now - cached[0] < REPOSITORY_SCAN_TTL_S:
            return cached[1]
    specs = scan_repository(Path(repository_path))
    with _repo_lock:
        _repo_cache[repository_path] = (now, specs)
    return specs


def merge(*sources: tuple[ModelSpec, ...]) -> tuple[ModelSpec, ...]:
    """Later sources win by name (case-insensitive). A repository model keeps the curated metadata it lacks."""
    merged: dict[str, ModelSpec] = {}
    for source in sources:
        for spec in source:
            key = spec.name.lower()
            earlier = merged.get(key)
            if earlier is not None and spec.source == "repository":
                spec = replace(
                    spec,
                    provider=earlier.provider,
                    use_case=earlier.use_case,
                    category=earlier.category,
                    release_date=spec.release_date or earlier.release_date,
                    num_layers=spec.num_layers or earlier.num_layers,
                    num_kv_heads=spec.num_kv_heads or earlier.num_kv_heads,
                    head_dim=spec.head_dim or earlier.head_dim,
                    active_params_b=spec.active_params_b or earlier.active_params_b,
                    is_moe=spec.is_moe or earlier.is_moe,
                )
            merged[key] = spec
    return tuple(merged.values())


def load_catalog(repository_path: str | None = None, overlay_path: str | None = None) -> tuple[ModelSpec, ...]:
    """The whole catalog for this node. `overlay_path` defaults to $LIFTOFF_FIT_CATALOG."""
    overlay = overlay_path if overlay_path is not None else os.environ.get(OVERLAY_ENV)
    return merge(curated_models(), repository_models_cached(repository_path), overlay_models(overlay))


def find_model(catalog: tuple[ModelSpec, ...], name: str) -> ModelSpec | None:
    """Exact name first (case-insensitive), then the one catalog entry whose last path part matches."""
    lowered = name.lower().rstrip("/")
    for spec in catalog:
        if spec.name.lower() == lowered:
            return spec
    tail = lowered.rsplit("/", 1)[-1]
    matches = [s for s in catalog if s.name.lower().rsplit("/", 1)[-1] == tail]
    return matches[0] if len(matches) == 1 else None
