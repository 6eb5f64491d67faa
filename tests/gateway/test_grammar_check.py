"""Constraints the gateway refuses, by name, before anything is queued (llguidance's compiler, no tokenizer)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from liftoff.core.grammar_check import constraint_error, only_listed_properties
from liftoff.gateway.chat.protocol import ResponseFormat
from liftoff.gateway.takeoff.protocol import GenerateRequest


@pytest.mark.parametrize(("body", "named"), [
    ({"json_schema": {"type": "string", "format": "bogus"}}, "Unknown format: bogus"),
    ({"json_schema": {"$ref": "http://example.com/schema"}}, "http://example.com/schema"),
    ({"regex_string": "(?<=a)b"}, "look-around"),
    ({"json_schema": {"type": "object"}, "constrained_decoding_backend": "lmfe"}, "'lmfe'"),
    ({"json_schema": {"type": "object"}, "constrained_decoding_backend": "outlines"}, "'llguidance' or null"),
])
def test_unusable_constraints_are_refused_by_name(body: dict, named: str) -> None:
    with pytest.raises(ValidationError, match=r"constrained_decoding|json_schema|regex_string") as caught:
        GenerateRequest.model_validate({"text": "x", **body})
    assert named in str(caught.value)


def test_usable_constraints_pass() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    assert GenerateRequest.model_validate({"text": "x", "json_schema": schema, "constrained_decoding_backend":
                                           "llguidance"}).json_schema == schema
    assert GenerateRequest.model_validate({"text": "x", "regex_string": "[0-9]{3}"}).regex_string == "[0-9]{3}"
    assert constraint_error(None, None) is None


def test_response_format_is_checked_and_mapped() -> None:
    assert ResponseFormat.model_validate({"type": "json_object"}).decoding_schema() == {"type": "object"}
    with pytest.raises(ValidationError, match="Unknown format: bogus"):
        ResponseFormat.model_validate({"type": "json_schema",
                                       "json_schema": {"name": "x", "schema": {"type": "string", "format": "bogus"}}})


def test_object_schemas_allow_only_their_listed_properties_unless_they_say_otherwise() -> None:
    schema = {"type": "object", "properties": {
        "inner": {"type": "object", "properties": {"x": {"type": "string"}}},
        "rows": {"type": "array", "items": {"$ref": "#/$defs/Row"}},
        "either": {"anyOf": [{"type": "object", "properties": {"y": {}}}, {"type": "null"}]},
        "open": {"type": "object", "properties": {"z": {}}, "additionalProperties": True},
        "map": {"type": "object", "additionalProperties": {"type": "object", "properties": {"v": {}}}},
        "free": {"type": "object"},
        "items": {"type": "string"},  # a property named like a keyword is a property
    }, "$defs": {"Row": {"type": "object", "properties": {"r": {}}}}}
    strict = only_listed_properties(schema)
    props = strict["properties"]
    assert strict["additionalProperties"] is False and props["inner"]["additionalProperties"] is False
    assert strict["$defs"]["Row"]["additionalProperties"] is False
    assert props["either"]["anyOf"][0]["additionalProperties"] is False and props["either"]["anyOf"][1] == {
        "type": "null"}
    assert props["open"]["additionalProperties"] is True and props["free"] == {"type": "object"}
    assert props["map"]["additionalProperties"]["additionalProperties"] is False
    assert props["items"] == {"type": "string"}
    assert "additionalProperties" not in schema  # the caller's schema is left as it was

