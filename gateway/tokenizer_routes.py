"""Tokenizer endpoints of the inference port: they address one reader by id, through its direct group."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.protocol import ChatTemplateRequest, DetokenizeRequest, TokenizeRequest
from liftoff.core.http.context import Gateway
from liftoff.core.http.errors import NotFound
from liftoff.core.http.parsing import parse_body
from liftoff.core.http.responses import json_response
from liftoff.core.keys import Keys


def tokenizer_routes(gw: Gateway) -> list[Route]:
    dispatcher = gw.dispatcher

    async def call(request: Request, kind: str, model: type[BaseModel]) -> Response:
        reader_id = request.path_params["reader_id"]
        body = await parse_body(request, model)
        group = Keys.direct_group(reader_id)
        if group not in dispatcher.groups.view.known:
            await dispatcher.refresh_view()
        if group not in dispatcher.groups.view.known:
            readers = sorted(g[1:] for g in dispatcher.groups.view.known if g.startswith("@"))
            raise NotFound(f"no reader {reader_id!r}; known readers: {readers}", {"known_readers": readers})
        args: dict[str, Any] = body.model_dump()
        ticket = await dispatcher.submit(group, [], kind=kind, args=args)
        reply = await dispatcher.outcome(ticket)
        return json_response(reply.result)

    async def tokenize(request: Request) -> Response:
        return await call(request, "tokenize", TokenizeRequest)

    async def detokenize(request: Request) -> Response:
        return await call(request, "detokenize", DetokenizeRequest)

    async def chat_template(request: Request) -> Response:
        return await call(request, "chat_template", ChatTemplateRequest)

    return [
        Route("/tokenize/{reader_id}", tokenize, methods=["POST"]),
        Route("/detokenize/{reader_id}", detokenize, methods=["POST"]),
        Route("/chat_template/{reader_id}", chat_template, methods=["POST"]),
    ]
