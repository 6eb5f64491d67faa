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
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from liftoff.fit.repository import scan_repository
from liftoff.fit.spec import CATEGORIES, ModelSpec, category_for, parameter_count_label, spec_from_dict

__all__ = ["CATEGORIES", "ModelSpec", "category_for", "find_model", "load_catalog", "parameter_count_label",
           "spec_from_dict"]

CURATED_PATH = Path(__file__).with_name("catalog.json")
OVERLAY_ENV = "LIFTOFF_FIT_CATALOG"
REPOSITORY_SCAN_TTL_S = 10.0

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
