"""Structured-output constraints (`json_schema`, `regex_string`, `lark_grammar`, `constrained_decoding_backend`)
checked without a tokenizer: what the gateway refuses with 422 before anything is queued, and what a reader re-checks.

The grammar engine is llguidance (liftoff/readers/engines/constrained.py). Its grammar compiler runs without a tokenizer
(`LLMatcher.validate_grammar(grammar, None)`), so a schema feature it cannot honour (an unknown `format`, a remote
`$ref`, a look-around in a pattern, ...) is named here, in the gateway, without torch. Compiling against the model's
tokenizer happens in the reader; an error there (rare: the vocabulary cannot spell what the grammar needs) comes back
as the reader's 422.

lm-format-enforcer, the previous backend, is refused by name: it cannot keep the text its grammar sees equal to the
text returned for WordPiece tokenizers, and it costs a Python pass over the vocabulary per row per step.
"""

from __future__ import annotations

import json
from typing import Any

DEFAULT_BACKEND = "llguidance"
BACKENDS = frozenset({"llguidance", "guidance", "auto", "default"})  # all mean llguidance
RETIRED_BACKENDS = dict.fromkeys(("lmfe", "lm-format-enforcer", "lm_format_enforcer"), "lm-format-enforcer")


def backend_error(backend: str | None) -> str | None:
    """Why `constrained_decoding_backend` cannot be used, or None (null means the server default, llguidance)."""
    if backend is None or backend.strip().lower() in BACKENDS:
        return None
    name = backend.strip().lower()
    if name in RETIRED_BACKENDS:
        return (f"constrained_decoding_backend {backend!r} ({RETIRED_BACKENDS[name]}) is not offered by this server: "
                f"it cannot keep WordPiece output equal to what its grammar checked; use {DEFAULT_BACKEND!r} or null")
    return f"constrained_decoding_backend must be {DEFAULT_BACKEND!r} or null; given {backend!r}"


# Whitespace a JSON output may hold between tokens: any JSON whitespace, up to 16 characters per gap (room for
# pretty-printed indentation; a random or confused model cannot spend its whole budget on blanks). A schema's
# "x-guidance" options can say otherwise.
JSON_OPTIONS = {"whitespace_pattern": r"[\x20\x0A\x0D\x09]{0,16}"}


def schema_object(schema: Any) -> dict[str, Any]:
    """`json_schema` as a dict (it may arrive as its JSON text); ValueError when it is neither."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError as exc:
            raise ValueError(f"json_schema is not valid JSON: {exc}") from exc
    if not isinstance(schema, dict):
        raise ValueError("json_schema must be a JSON object (a JSON schema)")  # noqa: TRY004 — answered 422
    return schema


# Where a schema nests other schemas: a map of them, a list of them, or one.
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_ONES = ("items", "additionalItems", "contains", "not", "if", "then", "else", "additionalProperties",
                "unevaluatedProperties", "propertyNames")


def only_listed_properties(schema: Any) -> Any:
    """`schema` with `"additionalProperties": false` on every object schema that lists `properties` and says nothing
    of others: generate the listed keys and no more (what the Takeoff server and vLLM do; JSON Schema alone would
    allow any extra key, and a small model then writes keys of its own until `max_new_tokens`). A schema that says
    `additionalProperties` (or `patternProperties`, `unevaluatedProperties`) keeps what it says."""
    if isinstance(schema, list):
        return [only_listed_properties(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    for key in _SCHEMA_MAPS:
        if isinstance(out.get(key), dict):
            out[key] = {name: only_listed_properties(sub) for name, sub in out[key].items()}
    for key in (*_SCHEMA_LISTS, *_SCHEMA_ONES):
        if key in out and isinstance(out[key], dict | list):
            out[key] = only_listed_properties(out[key])
    if isinstance(out.get("properties"), dict) and not any(
            k in out for k in ("additionalProperties", "patternProperties", "unevaluatedProperties")):
        out["additionalProperties"] = False
    return out


def grammar_for(json_schema: Any, regex_string: str | None, lark_grammar: str | None = None) -> tuple[str, str]:
    """(cache key, llguidance grammar) for a constraint; the regex wins when several are given (the reference's rule),
    then the Lark grammar. ValueError when the schema is not a JSON object."""
    from llguidance import LLMatcher

    if regex_string:
        return "regex:" + regex_string, LLMatcher.grammar_from_regex(regex_string)
    if lark_grammar:
        try:
            return "lark:" + lark_grammar, LLMatcher.grammar_from_lark(lark_grammar)
        except ValueError as exc:
            raise ValueError(f"lark_grammar is not usable: {exc}") from exc
    schema = only_listed_properties(schema_object(json_schema))
    text = json.dumps(schema, separators=(",", ":"))  # key order kept: it is the order properties are written in
    try:
        return "schema:" + text, LLMatcher.grammar_from_json_schema(text, defaults=JSON_OPTIONS)
    except ValueError as exc:
        raise ValueError(f"json_schema is not usable: {exc}") from exc


def constraint_field(json_schema: Any, regex_string: str | None, lark_grammar: str | None = None) -> str:
    """The wire field whose constraint is used (see `grammar_for`)."""
    return "regex_string" if regex_string else "lark_grammar" if lark_grammar else "json_schema"


def constraint_error(json_schema: Any, regex_string: str | None, backend: str | None = None,
                     lark_grammar: str | None = None) -> str | None:
    """Why this constraint cannot be honoured (naming the field and the feature), or None. No tokenizer needed."""
    if not regex_string and not lark_grammar and json_schema is None:
        return None if backend is None else backend_error(backend)  # the common case, on every request: no call
    problem = backend_error(backend)
    if problem:
        return problem
    from llguidance import LLMatcher

    field = constraint_field(json_schema, regex_string, lark_grammar)
    try:
        _, grammar = grammar_for(json_schema, regex_string, lark_grammar)
    except ValueError as exc:
        return str(exc)
    message = LLMatcher.validate_grammar(grammar, None)
    if message:
        return f"{field} cannot be used for constrained decoding: {_first_line(message)}"
    return None


# Characters with a meaning in llguidance's (Rust) regex syntax; anything else stands for itself.
_REGEX_META = frozenset("\\.+*?()|[]{}^$#&-~")


def choice_regex(choices: list[str]) -> str:
    """A regex matching exactly one of `choices` (each escaped, longest first)."""
    escaped = ("".join("\\" + c if c in _REGEX_META else c for c in choice)
               for choice in sorted(choices, key=len, reverse=True))
    return "(" + "|".join(escaped) + ")"


def _first_line(message: str) -> str:
    """The compiler's message cut to what names the problem (a regex error's `error:` line, not its caret art)."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    named = [line.removeprefix("error:").strip() for line in lines if line.startswith("error:")]
    return "; ".join(named or lines[:1])[:500] if lines else message
