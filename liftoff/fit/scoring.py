"""The score: quality, speed, fit and context components (0-100 each), weighted per use-case category."""

from __future__ import annotations

from dataclasses import dataclass

from liftoff.fit.catalog import ModelSpec
from liftoff.fit.estimates import QUALITY_PENALTY, fit_score

# (upper bound in billions of parameters, base quality)
QUALITY_BY_SIZE: tuple[tuple[float, float], ...] = (
    (1.0, 30.0), (3.0, 45.0), (7.0, 60.0), (10.0, 75.0), (20.0, 82.0), (40.0, 89.0), (float("inf"), 95.0),
)
# Encoders are judged against their own kind: a 100M embedding model is not "worse" than a 7B chat model.
EMBEDDING_QUALITY_BY_SIZE: tuple[tuple[float, float], ...] = (
    (0.05, 60.0), (0.2, 70.0), (0.6, 80.0), (2.0, 85.0), (float("inf"), 90.0),
)
# Small bumps for families and generations known to beat their size class.
FAMILY_BONUS: tuple[tuple[str, float], ...] = (
    ("qwen3", 3.0), ("deepseek-r1", 3.0), ("deepseek-v3", 3.0), ("gpt-oss", 3.0), ("gemma-3", 2.0),
    ("qwen2.5", 2.0), ("llama-3.3", 2.0), ("phi-4", 2.0), ("llama-3.1", 1.0), ("llama-4", 2.0), ("glm-4.5", 3.0),
    ("mistral-small", 1.0), ("kimi-k2", 3.0), ("bge-m3", 2.0), ("qwen3-embedding", 2.0),
)
RECENCY_BONUS: tuple[tuple[str, float], ...] = (("2025", 3.0), ("2024", 1.0), ("2023", -1.0))
OLDER_PENALTY = -3.0

SPEED_TARGET_TPS = {"Reasoning": 25.0, "Embedding": 200.0}
DEFAULT_SPEED_TARGET_TPS = 40.0
CONTEXT_TARGET = {"Coding": 8192, "Reasoning": 8192, "Embedding": 512}
DEFAULT_CONTEXT_TARGET = 4096
# [quality, speed, fit, context]
WEIGHTS: dict[str, tuple[float, float, float, float]] = {
    "General": (0.45, 0.30, 0.15, 0.10),
    "Coding": (0.50, 0.20, 0.15, 0.15),
    "Reasoning": (0.55, 0.15, 0.15, 0.15),
    "Chat": (0.40, 0.35, 0.15, 0.10),
    "Multimodal": (0.50, 0.20, 0.15, 0.15),
    "Embedding": (0.30, 0.40, 0.20, 0.10),
}


@dataclass(frozen=True, slots=True)
class ScoreComponents:
    quality: float
    speed: float
    fit: float
    context: float

    def as_json(self) -> dict[str, float]:
        return {"quality": round(self.quality, 1), "speed": round(self.speed, 1), "fit": round(self.fit, 1),
                "context": round(self.context, 1)}


def quality_score(model: ModelSpec, quant: str | None) -> float:
    table = EMBEDDING_QUALITY_BY_SIZE if model.category == "Embedding" else QUALITY_BY_SIZE
    base = next(q for bound, q in table if model.params_b < bound)
    name = model.name.lower()
    base += max((bonus for family, bonus in FAMILY_BONUS if family in name), default=0.0)
    date = model.release_date or ""
    base += next((bonus for year, bonus in RECENCY_BONUS if date.startswith(year)), OLDER_PENALTY if date else 0.0)
    base += QUALITY_PENALTY.get(quant or "", 0.0)
    return max(0.0, min(100.0, base))


def speed_score(tps: float, category: str) -> float:
    target = SPEED_TARGET_TPS.get(category, DEFAULT_SPEED_TARGET_TPS)
    return max(0.0, min(100.0, tps / target * 100.0))


def context_score(context_length: int, category: str) -> float:
    target = CONTEXT_TARGET.get(category, DEFAULT_CONTEXT_TARGET)
    if context_length >= target:
        return 100.0
    return 70.0 if context_length >= target / 2 else 30.0


def score(model: ModelSpec, quant: str | None, tps: float, required_gb: float,
          available_gb: float) -> tuple[float, ScoreComponents]:
    components = ScoreComponents(
        quality=quality_score(model, quant),
        speed=speed_score(tps, model.category),
        fit=fit_score(required_gb, available_gb),
        context=context_score(model.context_length, model.category),
    )
    w = WEIGHTS.get(model.category, WEIGHTS["General"])
    total = (w[0] * components.quality + w[1] * components.speed + w[2] * components.fit
             + w[3] * components.context)
    return total, components
