"""Validation rules the request models of every port share: each refusal names the parameter and the value given
(`sampling_topp must be > 0 and <= 1; given 1.5`), as a pydantic field validator's ValueError."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

# lowest, whether the lowest is allowed itself, highest (None: no upper bound), a note for the message
Bound = tuple[float, bool, float | None, str]


def rule(ok: bool, message: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{message}; given {value!r}")


def check_bound(name: str, value: float | None, bound: Bound) -> None:
    """`value` (None: not given) within `bound`."""
    if value is None:
        return
    low, inclusive, high, note = bound
    ok = (value >= low if inclusive else value > low) and (high is None or value <= high)
    upper = f" and <= {high}" if high is not None else ""
    rule(ok, f"{name} must be {'>=' if inclusive else '>'} {low}{upper}{note}", value)


def bounds_validator(bounds: dict[str, Bound]) -> Any:
    """A model's field validator checking each field named in `bounds` (`_within_bounds = bounds_validator(B)` in the
    class body)."""

    def within_bounds(cls: type, value: float | None, info: ValidationInfo) -> float | None:
        check_bound(info.field_name or "", value, bounds[info.field_name or ""])
        return value

    return field_validator(*bounds)(within_bounds)


def part_types(value: Any) -> Iterator[Any]:
    """The `type` of each part of a list field (content parts, blocks, tools), None for a part that is not an
    object; nothing for a value that is not a list (the field's own validation refuses it)."""
    if isinstance(value, list):
        for part in value:
            yield part.get("type") if isinstance(part, dict) else None


def parts_validator(field: str, kinds: tuple[str, ...], message: str) -> Any:
    """A model's field validator refusing a part of the list `field` whose type is not one of `kinds` (`message` says
    which are taken); it runs before the field's own validation, so the refusal names the type given rather than
    every member of the parts' union (`_parts = parts_validator(...)` in the class body)."""

    def known_parts(cls: type, value: Any) -> Any:
        for kind in part_types(value):
            rule(kind in kinds, message, kind)
        return value

    return field_validator(field, mode="before")(known_parts)


def group_validator() -> Any:
    """A model's field validator for `model`, the name of a consumer group: not empty, no white space or braces
    (`_group = group_validator()` in the class body)."""

    def group(cls: type, value: str) -> str:
        rule(bool(value) and not any(c in value for c in " \t\r\n{}"), "model must name a consumer group", value)
        return value

    return field_validator("model")(group)


class Strict(BaseModel):
    """A request model that refuses fields it does not define (a misspelt parameter is a 4xx, not ignored)."""

    model_config = ConfigDict(extra="forbid")


class StrictByName(Strict):
    """A strict model whose aliased fields may be given by their own names too (`schema_`, given as `schema`: a
    pydantic model keeps the name `schema` for itself)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
