"""The Takeoff inference API (port 3000): /generate (see `gateway.generate_asgi`), /generate_stream, short /status."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import sse
from gateway.generate_asgi import GenerateApp
from gateway.protocol import ClassifyRequest, EmbedRequest, GenerateRequest
from gateway.requests import check_count, submit_generate
from gateway.tokenizer_routes import tokenizer_routes
from liftoff.core.dispatch import Ticket
from liftoff.core.http.context import Gateway
from liftoff.core.http.errors import ApiError, error_for_status
from liftoff.core.http.parsing import parse_body
from liftoff.core.http.port_app import port_app
from liftoff.core.http.responses import json_response
from liftoff.core.http.types import ASGIApp
from liftoff.core.status import reader_maps
from liftoff.core.wire import Reply


def create_inference_app(gw: Gateway) -> ASGIApp:
    dispatcher = gw.dispatcher
    settings = gw.settings

    async def submit(request: Request, stream: bool) -> tuple[GenerateRequest, Ticket]:
        req = await parse_body(request, GenerateRequest)
        return req, await submit_generate(gw, req, stream)

    async def generate_stream(request: Request) -> Response:
        req, ticket = await submit(request, stream=True)
        first = await dispatcher.first_reply(ticket)
        return sse.response(stream_events(req, ticket, first))

    async def stream_events(req: GenerateRequest, ticket: Ticket, reply: Reply) -> AsyncIterator[bytes]:
        finished = False
        try:
            while True:
                if reply.kind == "token":
                    text = reply.text or ""
                    yield sse.json_event({"text": text, "batch_id": reply.index}) if req.batched else sse.event(text)
                elif reply.kind == "done":
                    finished = True
                    if reply.metadata is not None:
                        meta = reply.metadata if req.batched else reply.metadata[0]
                        yield sse.json_event({"metadata": meta}, "metadata")
                    return
                else:
                    finished = True
                    yield sse.error_event(error_for_status(reply.status or 500, reply.message or "reader error"))
                    return
                try:
                    reply = await dispatcher.next_reply(ticket)
                except ApiError as err:
                    yield sse.error_event(err)
                    return
        finally:
            dispatcher.release(ticket, finished)

    async def embed(request: Request) -> Response:
        req = await parse_body(request, EmbedRequest)
        texts = req.text if isinstance(req.text, list) else [req.text]
        check_count(len(texts), settings.max_user_batch_size)
        ticket = await dispatcher.submit(req.consumer_group or "primary", texts, kind="embed",
                                         batched=isinstance(req.text, list))
        vectors = (await dispatcher.outcome(ticket)).result or []
        return json_response({"result": vectors if isinstance(req.text, list) else vectors[0]})

    async def classify(request: Request) -> Response:
        req = await parse_body(request, ClassifyRequest)
        check_count(len(req.pairs or req.texts), settings.max_user_batch_size)
        ticket = await dispatcher.submit(req.consumer_group or "primary", req.texts, kind="classify",
                                         pairs=req.pairs, batched=isinstance(req.text, list))
        results = (await dispatcher.outcome(ticket)).result or []
        return json_response({"result": results if isinstance(req.text, list) else results[0]})

    async def short_status(request: Request) -> Response:
        maps = await reader_maps(gw)
        return json_response(
            {"live_readers": maps["live_readers"], "dead_readers": maps["dead_readers"], "ports": settings.ports()}
        )

    routes = port_app(
        gw,
        [
            Route("/generate_stream", generate_stream, methods=["POST"]),
            Route("/embed", embed, methods=["POST"]),
            Route("/classify", classify, methods=["POST"]),
            *tokenizer_routes(gw),
            Route("/status", short_status, methods=["GET"]),
        ],
    )
    return GenerateApp(gw, routes)
