"""The fit report: analyse the catalog for a node, filter, rank, and build the reference's response envelope."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from liftoff.core.calibration import Measurement
from liftoff.fit.analysis import FIT_RANK, ModelFit, analyze, fit_json
from liftoff.fit.catalog import ModelSpec
from liftoff.fit.hardware import SystemSpecs, node_json, node_os, system_json, with_overrides
from liftoff.fit.query import FitQuery


def query_specs(specs: SystemSpecs, query: FitQuery) -> SystemSpecs:
    return with_overrides(specs, ram_gb=query.ram_gb, vram_gb=query.vram_gb, cpu_cores=query.cpu_cores)


def _matches_model(model: ModelSpec, query: FitQuery) -> bool:
    """Filters that need no analysis, applied first so that excluded models cost nothing."""
    if query.provider and query.provider.lower() not in model.provider.lower():
        return False
    if query.use_case and model.category != query.use_case:
        return False
    if query.search:
        needle = query.search.lower()
        haystacks = (model.name, model.provider, model.parameter_count, model.use_case, model.category)
        if not any(needle in h.lower() for h in haystacks):
            return False
    return True


def _matches_fit(fit: ModelFit, query: FitQuery) -> bool:
    if query.perfect:
        return fit.fit_level == "perfect"
    if query.min_fit is not None and FIT_RANK[fit.fit_level] < FIT_RANK[query.min_fit]:
        return False
    return fit.runnable or query.effective_include_too_tight


def _sort_key(sort: str) -> Any:
    # Runnable rows always come before too-tight ones; within each, the column descending (use case: A→Z, then score).
    keys = {
        "score": lambda f: -f.score,
        "tps": lambda f: -f.estimated_tps,
        "params": lambda f: -f.model.params_b,
        "mem": lambda f: -f.utilization_pct,
        "ctx": lambda f: -f.model.context_length,
        "date": lambda f: _date_desc(f.model.release_date),
        "use_case": lambda f: (f.model.category, -f.score),
    }
    column = keys[sort]
    return lambda f: (not f.runnable, column(f), f.model.name.lower())


def _date_desc(date: str | None) -> tuple[int, ...]:
    if not date:
        return (1,)  # undated models last
    return (0, *(-int(part) for part in date.split("-") if part.isdigit()))


def rank(fits: Iterable[ModelFit], query: FitQuery) -> list[ModelFit]:
    return sorted((f for f in fits if _matches_fit(f, query)), key=_sort_key(query.sort))


def analyze_catalog(catalog: Iterable[ModelSpec], specs: SystemSpecs, query: FitQuery,
                    measurements: Mapping[str, Measurement]) -> list[ModelFit]:
    runtime = query.effective_runtime
    return [
        analyze(model, specs, runtime, query.max_context, measurements.get(model.name.lower()))
        for model in catalog
        if _matches_model(model, query)
    ]


def fit_report(catalog: Iterable[ModelSpec], specs: SystemSpecs, query: FitQuery,
               measurements: Mapping[str, Measurement] | None = None) -> dict[str, Any]:
    """The whole response body of /api/v1/models, /models/top and /models/{name}."""
    specs = query_specs(specs, query)
    ranked = rank(analyze_catalog(catalog, specs, query, measurements or {}), query)
    limit = query.effective_limit
    shown = ranked if limit is None else ranked[:limit]
    return {
        "node": node_json(specs),
        "system": system_json(specs),
        "total_models": len(ranked),
        "returned_models": len(shown),
        "filters": query.filters_json(),
        "models": [fit_json(f) for f in shown],
    }


def system_report(specs: SystemSpecs) -> dict[str, Any]:
    return {"node": node_json(specs), "system": system_json(specs)}


def health_report(name: str) -> dict[str, Any]:
    """The reference's liveness body for the node called `name`."""
    return {"status": "ok", "node": {"name": name, "os": node_os()}}
