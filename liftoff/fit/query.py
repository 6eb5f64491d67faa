"""The fit API's query parameters: parsing, defaults, and the reference's exact 400 messages.

Values are trimmed and case-insensitive and accept the peer tool's aliases (`code`, `tight`, `llama.cpp`, ...), so
that schedulers written against it keep working. An empty value counts as absent.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

SORT_ALIASES = {
    "score": "score", "tps": "tps", "tokens": "tps", "throughput": "tps", "params": "params", "parameters": "params",
    "mem": "mem", "memory": "mem", "mem_pct": "mem", "utilization": "mem", "ctx": "ctx", "context": "ctx",
    "date": "date", "release": "date", "released": "date", "use": "use_case", "use_case": "use_case",
    "usecase": "use_case",
}
MIN_FIT_ALIASES = {"perfect": "perfect", "good": "good", "marginal": "marginal", "too_tight": "too_tight",
                   "tootight": "too_tight", "tight": "too_tight"}
RUNTIME_ALIASES = {"any": "any", "mlx": "mlx", "llamacpp": "llamacpp", "llama.cpp": "llamacpp",
                   "llama_cpp": "llamacpp", "transformers": "transformers", "hf": "transformers"}
USE_CASE_ALIASES = {"coding": "Coding", "code": "Coding", "reasoning": "Reasoning", "reason": "Reasoning",
                    "chat": "Chat", "multimodal": "Multimodal", "vision": "Multimodal", "embedding": "Embedding",
                    "embed": "Embedding", "general": "General"}
BOOL_VALUES = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False,
               "off": False}

SORT_ERROR = "invalid sort value: use score|tps|params|mem|ctx|date|use_case"
MIN_FIT_ERROR = "invalid min_fit value: use perfect|good|marginal|too_tight"
RUNTIME_ERROR = "invalid runtime value: use any|mlx|llamacpp|transformers"
USE_CASE_ERROR = "invalid use_case value: use general|coding|reasoning|chat|multimodal|embedding"

TOP_DEFAULT_LIMIT = 5
BY_NAME_DEFAULT_LIMIT = 20
DEFAULT_RUNTIME = "transformers"  # what Liftoff's readers serve with


class FitQueryError(ValueError):
    """A query parameter with a value the API does not accept; the message is the 400 body's `error`."""


class FitQuery(BaseModel):
    """Parsed, canonical query. `None` means "not given"; the endpoint's defaults are applied by `effective_*`."""

    model_config = {"frozen": True}

    limit: int | None = None
    perfect: bool | None = None
    min_fit: str | None = None
    runtime: str | None = None
    use_case: str | None = None
    provider: str | None = None
    search: str | None = None
    sort: str = "score"
    include_too_tight: bool | None = None
    max_context: int | None = None
    ram_gb: float | None = None
    vram_gb: float | None = None
    cpu_cores: int | None = None
    top_only: bool = False
    by_name: bool = False
    raw: dict[str, str] = {}

    @property
    def effective_limit(self) -> int | None:
        if self.limit is not None:
            return self.limit
        if self.top_only:
            return TOP_DEFAULT_LIMIT
        return BY_NAME_DEFAULT_LIMIT if self.by_name else None

    @property
    def effective_include_too_tight(self) -> bool:
        # /models/top is for schedulers: an unrunnable row is never a candidate there, whatever was asked.
        if self.top_only:
            return False
        return True if self.include_too_tight is None else self.include_too_tight

    @property
    def effective_runtime(self) -> str:
        return DEFAULT_RUNTIME if self.runtime in (None, "any") else self.runtime

    def filters_json(self) -> dict[str, Any]:
        """The envelope's `filters`: text filters as given, limit and include_too_tight as in effect."""
        filters: dict[str, Any] = {
            "limit": self.effective_limit,
            "perfect": self.perfect,
            "min_fit": self.raw.get("min_fit"),
            "runtime": self.raw.get("runtime"),
            "use_case": self.raw.get("use_case"),
            "provider": self.provider,
            "search": self.search,
            "sort": self.raw.get("sort"),
            "max_context": self.max_context,
            "include_too_tight": self.effective_include_too_tight,
            "top_only": self.top_only,
        }
        for name in ("ram_gb", "vram_gb", "cpu_cores"):
            if getattr(self, name) is not None:
                filters[name] = getattr(self, name)
        return filters


def _int(raw: str, name: str, minimum: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        kind = "a non-negative integer" if minimum == 0 else "a positive integer"
        raise FitQueryError(f"invalid {name} value: use {kind}")
    return value


def _float(raw: str, name: str, allow_zero: bool) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        kind = "a non-negative number" if allow_zero else "a positive number"
        raise FitQueryError(f"invalid {name} value: use {kind}")
    return value


def _bool(raw: str, name: str) -> bool:
    value = BOOL_VALUES.get(raw.lower())
    if value is None:
        raise FitQueryError(f"invalid {name} value: use true|false")
    return value


def _choice(raw: str | None, aliases: dict[str, str], error: str) -> str | None:
    if raw is None:
        return None
    value = aliases.get(raw.lower())
    if value is None:
        raise FitQueryError(error)
    return value


def parse_query(params: Mapping[str, str], top_only: bool = False, name: str | None = None) -> FitQuery:
    """Parse query parameters in the peer's order (numbers and booleans first, then the named choices)."""
    raw = {k: v.strip() for k, v in params.items() if v.strip()}
    limit_raw = raw.get("limit", raw.get("n", raw.get("top")))
    parsed: dict[str, Any] = {
        "limit": None if limit_raw is None else _int(limit_raw, "limit", 0),
        "perfect": None if "perfect" not in raw else _bool(raw["perfect"], "perfect"),
        "include_too_tight": None if "include_too_tight" not in raw else _bool(raw["include_too_tight"],
                                                                                 "include_too_tight"),
        "max_context": None if "max_context" not in raw else _int(raw["max_context"], "max_context", 1),
        "ram_gb": None if "ram_gb" not in raw else _float(raw["ram_gb"], "ram_gb", allow_zero=False),
        "vram_gb": None if "vram_gb" not in raw else _float(raw["vram_gb"], "vram_gb", allow_zero=True),
        "cpu_cores": None if "cpu_cores" not in raw else _int(raw["cpu_cores"], "cpu_cores", 1),
        "sort": _choice(raw.get("sort"), SORT_ALIASES, SORT_ERROR) or "score",
        "min_fit": _choice(raw.get("min_fit"), MIN_FIT_ALIASES, MIN_FIT_ERROR),
        "runtime": _choice(raw.get("runtime"), RUNTIME_ALIASES, RUNTIME_ERROR),
        "use_case": _choice(raw.get("use_case"), USE_CASE_ALIASES, USE_CASE_ERROR),
        "provider": raw.get("provider"),
        "search": name if name is not None else raw.get("search"),
        "top_only": top_only,
        "by_name": name is not None,
        "raw": raw,
    }
    return FitQuery(**parsed)
