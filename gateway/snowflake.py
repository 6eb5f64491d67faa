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
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.protocol import EmbedRequest, GenerateRequest
from gateway.requests import check_count, generate_answer, submit_generate
from liftoff.core.http.context import Gateway
from liftoff.core.http.errors import ApiError, from_validation
from liftoff.core.http.parsing import read_json_object
from liftoff.core.http.responses import json_response


def snowflake_error_body(status: int, message: str) -> dict[str, Any]:
    """The one Snowflake error body, for a request refused as a whole (row errors are results, see above)."""
    return {"error": message, "code": status}


class RowError(Exception):
    pass


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


def snowflake_routes(gw: Gateway) -> list[Route]:
    dispatcher = gw.dispatcher
    settings = gw.settings

    async def generate(arg: Any) -> dict[str, Any]:
        req: GenerateRequest = _request(GenerateRequest, arg)
        return generate_answer(req, await dispatcher.outcome(await submit_generate(gw, req)))

    async def embed(arg: Any) -> dict[str, Any]:
        req: EmbedRequest = _request(EmbedRequest, arg)
        texts = req.text if isinstance(req.text, list) else [req.text]
        check_count(len(texts), settings.max_user_batch_size)
        ticket = await dispatcher.submit(req.consumer_group or "primary", texts, kind="embed",
                                         batched=isinstance(req.text, list))
        vectors = (await dispatcher.outcome(ticket)).result or []
        return {"result": vectors if isinstance(req.text, list) else vectors[0]}

    async def row(answer: Any, index: int, arg: Any) -> list[Any]:
        try:
            return [index, await answer(arg)]
        except (RowError, ApiError) as err:
            return [index, {"error": str(err) if isinstance(err, RowError) else err.message}]

    async def endpoint(request: Request, answer: Any) -> Response:
        try:
            rows = _rows(await read_json_object(request))
            check_count(len(rows), settings.max_user_batch_size)
        except RowError as err:
            return json_response(snowflake_error_body(400, str(err)), 400)
        except ApiError as err:
            status = 400 if err.status == 422 else err.status
            return json_response(snowflake_error_body(status, err.message), status, err.headers)
        results = await asyncio.gather(*(row(answer, r[0], r[1]) for r in rows))
        return json_response({"data": list(results)})

    async def generate_snowflake(request: Request) -> Response:
        return await endpoint(request, generate)

    async def embed_snowflake(request: Request) -> Response:
        return await endpoint(request, embed)

    return [
        Route("/generate_snowflake", generate_snowflake, methods=["POST"]),
        Route("/embed_snowflake", embed_snowflake, methods=["POST"]),
    ]
