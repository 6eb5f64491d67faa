"""Snowflake service functions (port 3004): `POST /generate_snowflake` and `POST /embed_snowflake`.

Snowpark Container Services posts `{"data": [[row_index, arg, ...], ...]}` and expects `{"data": [[row_index,
result], ...]}` with the rows in the order given. A row's argument is an object with the /generate (or /embed)
fields, e.g. `OBJECT_CONSTRUCT('text', PROMPT)` → `{"text": ...}`, or a plain string (its text); further arguments
are ignored. Results are `{"text": ...}` (with `metadata` when asked) and `{"result": [vector]}`.

A row that cannot be answered (invalid fields, unknown consumer group, a reader's error) gets `{"error": message}`
as its result and the other rows are still answered: one bad row never loses the batch. Only a body that is not
`{"data": [[index, ...], ...]}` is refused as a whole, with `{"error": message}` and status 400.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from liftoff.core.errors import ApiError, from_validation
from liftoff.gateway.services.limits import check_count
from liftoff.gateway.takeoff.protocol import EmbedRequest, GenerateRequest
from liftoff.gateway.takeoff.requests import embed_takeoff, generate_takeoff
from liftoff.http.context import Gateway
from liftoff.http.openapi import Doc, documented
from liftoff.http.parsing import read_json_object
from liftoff.http.responses import json_response

Answer = Callable[[Gateway, Any], Awaitable[dict[str, Any]]]


def snowflake_error_body(status: int, message: str) -> dict[str, Any]:
    """The one Snowflake error body, for a request refused as a whole (row errors are results, see above)."""
    return {"error": message, "code": status}


SNOWFLAKE_ERROR = {"type": "object", "required": ["error"],
                   "properties": {"error": {"type": "string"}, "code": {"type": "integer"}}}


class RowError(Exception):
    pass


def snowflake_routes(gw: Gateway) -> list[Route]:
    async def generate_snowflake(request: Request) -> Response:
        return await _rows_endpoint(gw, request, generate_row)

    async def embed_snowflake(request: Request) -> Response:
        return await _rows_endpoint(gw, request, embed_row)

    return [
        documented(Route("/generate_snowflake", generate_snowflake, methods=["POST"]),
                   Doc(summary="one generation per row", body=rows_schema(GenerateRequest))),
        documented(Route("/embed_snowflake", embed_snowflake, methods=["POST"]),
                   Doc(summary="one embedding per row", body=rows_schema(EmbedRequest))),
    ]


def rows_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`{"data": [[row_index, argument, ...], ...]}`, an argument being a `model` body or its text."""
    argument = {"anyOf": [model.model_json_schema(), {"type": "string"}]}
    row = {"type": "array", "prefixItems": [{"type": "integer"}, argument], "minItems": 2}
    return {"type": "object", "required": ["data"], "properties": {"data": {"type": "array", "items": row}}}


async def generate_row(gw: Gateway, arg: Any) -> dict[str, Any]:
    return await generate_takeoff(gw, _request(GenerateRequest, arg))


async def embed_row(gw: Gateway, arg: Any) -> dict[str, Any]:
    return await embed_takeoff(gw, _request(EmbedRequest, arg))


async def _rows_endpoint(gw: Gateway, request: Request, answer: Answer) -> Response:
    """Parse → each row answered on its own, all at once → `{"data": [[index, result], ...]}`."""
    try:
        rows = _rows(await read_json_object(request))
        check_count(len(rows), gw.settings.max_user_batch_size)
    except RowError as err:
        return json_response(snowflake_error_body(400, str(err)), 400)
    except ApiError as err:
        status = 400 if err.status == 422 else err.status
        return json_response(snowflake_error_body(status, err.message), status, err.headers)

    async def row(index: int, arg: Any) -> list[Any]:
        try:
            return [index, await answer(gw, arg)]
        except (RowError, ApiError) as err:
            return [index, {"error": str(err) if isinstance(err, RowError) else err.message}]

    return json_response({"data": list(await asyncio.gather(*(row(r[0], r[1]) for r in rows)))})


def _rows(body: dict[str, Any]) -> list[list[Any]]:
    rows = body.get("data")
    if not isinstance(rows, list):
        raise RowError('the body must be {"data": [[row_index, argument], ...]}')
    for position, row in enumerate(rows):
        if not (isinstance(row, list) and len(row) >= 2 and isinstance(row[0], int) and not isinstance(row[0], bool)):
            raise RowError(f"data[{position}] must be [row_index, argument] with an integer row_index; given "
                           f"{str(row)[:200]}")
    return rows


def _request(model: type[BaseModel], arg: Any) -> Any:
    fields = {"text": arg} if isinstance(arg, str) else arg
    if not isinstance(fields, dict):
        raise RowError(f"the argument must be an object like {{\"text\": ...}} or a string, not "
                       f"{type(arg).__name__}")
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise RowError(from_validation(exc).message) from None
