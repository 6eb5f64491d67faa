"""Request models of the Takeoff inference API. They validate every field and convert to wire parameters.

Every field but `text` may be absent or null; null means the default. Each rule has its own message naming the
parameter and the value given, e.g. "sampling_topp must be > 0 and <= 1; given 1.5".
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, StrictStr, field_validator, model_validator

from liftoff.core.grammar_check import constraint_error
from liftoff.core.keys import valid_group_name
from liftoff.core.wire import GenerationParams
from liftoff.gateway.rules import Bound, bounds_validator, rule

DEFAULT_MAX_NEW_TOKENS = GenerationParams().max_new_tokens  # what a reader generates when none is given

MAX_NEW_TOKENS_LIMIT = 32_768

# One rule per generation parameter with a range.
BOUNDS: dict[str, Bound] = {
    "sampling_temperature": (0, True, 100, " (0 = greedy)"),
    "sampling_topp": (0, False, 1, ""),
    "sampling_topk": (0, True, None, ""),
    "repetition_penalty": (0, False, 10, ""),
    "no_repeat_ngram_size": (0, True, None, ""),
    "max_new_tokens": (1, True, MAX_NEW_TOKENS_LIMIT, ""),
    "min_new_tokens": (0, True, None, ""),
    "prompt_max_tokens": (1, True, None, ""),
}


class TextsRequest(BaseModel):
    """`text`: one text, or a non-empty list of them (a user batch); for the consumer group named (or `primary`)."""

    model_config = ConfigDict(extra="ignore")

    text: StrictStr | list[StrictStr]
    consumer_group: StrictStr | None = None

    @field_validator("text")
    @classmethod
    def _text(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list):
            rule(len(value) > 0, "text must be a string or a non-empty list of strings", value)
        return value

    @property
    def texts(self) -> list[str]:
        return self.text if isinstance(self.text, list) else [self.text]

    @property
    def batched(self) -> bool:
        return isinstance(self.text, list)


class GenerateRequest(TextsRequest):
    sampling_temperature: float | None = None
    sampling_topp: float | None = None
    sampling_topk: int | None = None
    repetition_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    max_new_tokens: int | None = None
    min_new_tokens: int | None = None
    regex_string: StrictStr | None = None
    json_schema: dict[str, Any] | StrictStr | None = None
    constrained_decoding_backend: StrictStr | None = None
    prompt_max_tokens: int | None = None
    return_metadata: StrictBool | None = None
    use_chat_template: StrictBool | None = None
    lora_id: StrictStr | None = None

    @field_validator("consumer_group")
    @classmethod
    def _group(cls, value: str | None) -> str | None:
        if value is not None:
            rule(valid_group_name(value), "consumer_group must be a name", value)
        return value

    _within_bounds = bounds_validator(BOUNDS)

    @field_validator("regex_string")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"regex_string is not a valid regular expression ({exc}); given {v!r}") from None
        return v

    @field_validator("json_schema")
    @classmethod
    def _schema(cls, v: dict[str, Any] | str | None) -> dict[str, Any] | None:
        if isinstance(v, str):
            try:
                v = orjson.loads(v)
            except orjson.JSONDecodeError:
                raise ValueError("json_schema must be a JSON schema object or its JSON text") from None
            rule(isinstance(v, dict), "json_schema must be a JSON object", v)
        return v

    @model_validator(mode="after")
    def _across_fields(self) -> GenerateRequest:
        # One validator for the rules across fields, each skipped when its fields are absent (every plain /generate).
        if self.json_schema is not None or self.regex_string is not None \
                or self.constrained_decoding_backend is not None:
            # llguidance's compiler, without a tokenizer: a feature it cannot honour is named here, before queueing
            problem = constraint_error(self.json_schema, self.regex_string, self.constrained_decoding_backend)
            if problem:
                raise ValueError(problem)
        if self.min_new_tokens is not None:
            max_new = self.max_new_tokens if self.max_new_tokens is not None else DEFAULT_MAX_NEW_TOKENS
            if self.min_new_tokens > max_new:
                raise ValueError(f"min_new_tokens must be <= max_new_tokens ({max_new}); given {self.min_new_tokens}")
        return self

    def params(self) -> dict[str, Any]:
        """The GenerationParams fields given (validated above); readers fill in the defaults."""
        return self.model_dump(exclude_none=True, exclude={"text", "consumer_group"})


class EmbedRequest(TextsRequest):
    """/embed: the texts and the consumer group, nothing more."""


class ClassifyRequest(BaseModel):
    """`text`: one text, a list of texts, or a list of [text, text] pairs (cross-encoders, rerankers)."""

    model_config = ConfigDict(extra="ignore")

    text: StrictStr | list[StrictStr] | list[list[StrictStr]]
    consumer_group: StrictStr | None = None

    @field_validator("text")
    @classmethod
    def _text(cls, value: Any) -> Any:
        if isinstance(value, list):
            rule(len(value) > 0, "text must be a string, a non-empty list of strings, or a list of pairs", value)
            if isinstance(value[0], list):
                rule(all(len(pair) == 2 for pair in value), "each pair in text must hold exactly two strings", value)
        return value

    @property
    def pairs(self) -> list[list[str]] | None:
        return self.text if isinstance(self.text, list) and isinstance(self.text[0], list) else None  # type: ignore[return-value]

    @property
    def texts(self) -> list[str]:
        if self.pairs is not None:
            return []
        return self.text if isinstance(self.text, list) else [self.text]  # type: ignore[return-value]

    @property
    def batched(self) -> bool:
        return isinstance(self.text, list)


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: StrictStr
    use_chat_template: StrictBool = False
    skip_special_tokens: StrictBool = False


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    tokens: list[StrictInt] | list[StrictStr]
    skip_special_tokens: StrictBool = True


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: StrictStr
    content: StrictStr


class ChatTemplateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    inputs: list[list[ChatMessage]]
    add_generation_prompt: StrictBool = True
