"""Constrained decoding on the OpenAI port: `response_format` (OpenAI's) and the extras vLLM clients send
(`guided_json`, `guided_regex`, `guided_choice`, `guided_grammar`, and the newer `structured_outputs` object),
all mapped onto the wire's one constraint (`json_schema`, `regex_string` or `lark_grammar`).

- `guided_choice` / `structured_outputs.choice`: a regex alternation of the escaped choices, so the answer is
  exactly one of the strings, unquoted (what vLLM returns).
- `guided_grammar` / `structured_outputs.grammar`: a grammar in llguidance's Lark syntax (Lark's EBNF with
  llguidance's extensions, e.g. `%json {schema}` for a JSON value inside the grammar), not GBNF.
- At most one constraint per request: two (`guided_json` with `response_format`, or two keys of
  `structured_outputs`) are a 422 naming both.

Every constraint is compiled here, without a tokenizer (`liftoff.core.grammar_check`), and a problem is a 400 naming
the parameter, before anything is queued.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from liftoff.core.grammar_check import choice_regex, constraint_error
from liftoff.gateway.chat.errors import OpenAIError, invalid


class StructuredOutputs(BaseModel):
    """vLLM's `structured_outputs` object: one of its keys."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    json_: dict[str, Any] | StrictStr | None = Field(default=None, alias="json")
    regex: StrictStr | None = None
    choice: list[StrictStr] | None = None
    grammar: StrictStr | None = None


# The vLLM parameters, as the request model holds them (SamplingRequest's fields).
GUIDED_FIELDS = ("guided_json", "guided_regex", "guided_choice", "guided_grammar", "structured_outputs")


def _constraints(req: Any) -> list[tuple[str, str, Any]]:
    """(parameter, wire kind, value) of every constraint the request sets."""
    found: list[tuple[str, str, Any]] = []
    schema = req.response_format.decoding_schema() if req.response_format else None
    if schema is not None:
        found.append(("response_format", "json", schema))
    for name, kind in (("guided_json", "json"), ("guided_regex", "regex"), ("guided_choice", "choice"),
                       ("guided_grammar", "grammar")):
        if getattr(req, name) is not None:
            found.append((name, kind, getattr(req, name)))
    so: StructuredOutputs | None = req.structured_outputs
    if so is not None:
        for kind in ("json", "regex", "choice", "grammar"):
            value = getattr(so, "json_" if kind == "json" else kind)
            if value is not None:
                found.append((f"structured_outputs.{kind}", kind, value))
    return found


def constraint_names(req: Any) -> list[str]:
    """The structured-output parameters the request sets."""
    return [name for name, _, _ in _constraints(req)]


def constraint_params(req: Any) -> dict[str, Any]:
    """The wire's constraint fields for the request (empty when it sets none); OpenAIError when it sets two, or one
    that cannot be compiled."""
    found = _constraints(req)
    if not found:
        return {}
    if len(found) > 1:
        names = [name for name, _, _ in found]
        raise OpenAIError(422, f"only one structured-output constraint may be given; given {' and '.join(names)}",
                          names[0])
    name, kind, value = found[0]
    if kind == "choice":
        if not value or not all(value):
            raise invalid(f"{name} must hold at least one non-empty string; given {value!r}", name)
        params: dict[str, Any] = {"regex_string": choice_regex(value)}
    else:
        params = {{"json": "json_schema", "regex": "regex_string", "grammar": "lark_grammar"}[kind]: value}
    if name != "response_format":  # response_format checked itself when it was validated
        problem = constraint_error(params.get("json_schema"), params.get("regex_string"),
                                   lark_grammar=params.get("lark_grammar"))
        if problem:
            wire_field = next(iter(params))
            raise invalid(f"{name}: {problem.removeprefix(wire_field).lstrip(': ')}"[:600], name)
    return params
