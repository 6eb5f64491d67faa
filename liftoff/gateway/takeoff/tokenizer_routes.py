"""Tokenizer endpoints of the inference port: they address one reader by id (`liftoff.gateway.services.tokenizer`)."""

from __future__ import annotations

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from liftoff.core.errors import BadRequest
from liftoff.core.keys import valid_group_name
from liftoff.gateway.services import tokenizer
from liftoff.gateway.services.tokenizer import TokenizerKind
from liftoff.gateway.takeoff.protocol import ChatTemplateRequest, DetokenizeRequest, TokenizeRequest
from liftoff.http.context import Gateway
from liftoff.http.openapi import Doc, documented
from liftoff.http.parsing import parse_body
from liftoff.http.responses import json_response

KINDS: dict[TokenizerKind, type[BaseModel]] = {
    "tokenize": TokenizeRequest,
    "detokenize": DetokenizeRequest,
    "chat_template": ChatTemplateRequest,
}


def tokenizer_routes(gw: Gateway) -> list[Route]:
    """`POST /<kind>/{reader_id}` for each kind: the body validated, answered with the reader's result as is."""

    def route(kind: TokenizerKind, model: type[BaseModel]) -> Route:
        async def endpoint(request: Request) -> Response:
            body = await parse_body(request, model)
            reader_id = request.path_params["reader_id"]
            if not valid_group_name(reader_id):
                raise BadRequest(f"reader_id must be a reader's id (no spaces or braces); given {reader_id!r}")
            return json_response(await tokenizer.on_reader(gw, reader_id, kind, body.model_dump()))

        endpoint.__name__ = kind
        return documented(Route(f"/{kind}/{{reader_id}}", endpoint, methods=["POST"]),
                          Doc(summary=f"{kind.replace('_', ' ')} on one reader", body=model))

    return [route(kind, model) for kind, model in KINDS.items()]
