"""Request bodies: JSON parsing (400 when malformed) and model validation (422 naming the field)."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from liftoff.core.errors import BadRequest, from_validation

M = TypeVar("M", bound=BaseModel)


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise BadRequest("request body is empty; send a JSON object")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest(f"request body must be a JSON object, not {type(data).__name__}")
    return data


async def read_json_object(request: Request) -> dict[str, Any]:
    return parse_json_object(await request.body())


def validate(model: type[M], data: dict[str, Any]) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc) from None


async def parse_body(request: Request, model: type[M]) -> M:
    return validate(model, await read_json_object(request))
