"""The Takeoff inference API (port 3000): /generate (see `liftoff.gateway.takeoff.generate_asgi`), /generate_stream,
/embed,
/classify, the tokenizer endpoints (`liftoff.gateway.takeoff.tokenizer_routes`) and the short /status.

Each route parses its Takeoff body, calls the request kind's service (through `liftoff.gateway.takeoff.requests`) and
answers in
Takeoff's shape; errors are `ApiError`s, answered by the port's handlers in the one Takeoff error body.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from liftoff.core.errors import ApiError
from liftoff.gateway import sse
from liftoff.gateway.services import generate
from liftoff.gateway.services.generate import ReplyStream
from liftoff.gateway.takeoff.generate_asgi import GenerateApp
from liftoff.gateway.takeoff.image_generate import image_routes
from liftoff.gateway.takeoff.protocol import ClassifyRequest, EmbedRequest, GenerateRequest
from liftoff.gateway.takeoff.requests import classify_takeoff, embed_takeoff, generation
from liftoff.gateway.takeoff.tokenizer_routes import tokenizer_routes
from liftoff.http.context import Gateway
from liftoff.http.openapi import Doc, documented
from liftoff.http.parsing import parse_body
from liftoff.http.port_app import port_app
from liftoff.http.responses import json_response
from liftoff.http.status import reader_maps
from liftoff.http.types import ASGIApp


def create_inference_app(gw: Gateway) -> ASGIApp:
    generate_app = GenerateApp(gw, None)
    # `/generate` is answered by `GenerateApp` before the router; its route here puts it in the port's document.
    fast = documented(Route("/generate", generate_app, methods=["POST"]),
                      Doc(summary="generate text for one prompt or a batch", body=GenerateRequest))
    generate_app.fallback = port_app(gw, [fast, *inference_routes(gw)], title="Liftoff inference API (Takeoff)")
    return generate_app


def inference_routes(gw: Gateway) -> list[BaseRoute]:
    """Every route of the port but /generate, which `GenerateApp` serves before them."""

    async def generate_stream(request: Request) -> Response:
        req = await parse_body(request, GenerateRequest)
        replies = await generate.stream(gw, generation(req))
        return sse.response(takeoff_events(req, replies))

    async def embed(request: Request) -> Response:
        return json_response(await embed_takeoff(gw, await parse_body(request, EmbedRequest)))

    async def classify(request: Request) -> Response:
        return json_response(await classify_takeoff(gw, await parse_body(request, ClassifyRequest)))

    async def short_status(request: Request) -> Response:
        maps = await reader_maps(gw)
        return json_response(
            {"live_readers": maps["live_readers"], "dead_readers": maps["dead_readers"], "ports": gw.settings.ports()}
        )

    return [
        documented(Route("/generate_stream", generate_stream, methods=["POST"]),
                   Doc(summary="generate, streamed as server-sent events", body=GenerateRequest,
                       media=("text/event-stream",))),
        documented(Route("/embed", embed, methods=["POST"]), Doc(summary="embed texts", body=EmbedRequest)),
        documented(Route("/classify", classify, methods=["POST"]),
                   Doc(summary="classify texts or text pairs", body=ClassifyRequest)),
        *tokenizer_routes(gw),
        *image_routes(gw, takeoff_events),
        documented(Route("/status", short_status, methods=["GET"]), Doc(summary="live and dead readers, ports")),
    ]


async def takeoff_events(req: GenerateRequest, replies: ReplyStream) -> AsyncIterator[bytes]:
    """/generate_stream's events: one per token (the text itself, or `{"text", "batch_id"}` for a user batch),
    then `event: metadata` when asked for; a failure after the first byte is an `event: error`."""
    try:
        async for reply in replies:
            if reply.kind == "token":
                text = reply.text or ""
                yield sse.json_event({"text": text, "batch_id": reply.index}) if req.batched else sse.event(text)
            elif reply.metadata is not None:
                meta = reply.metadata if req.batched else reply.metadata[0]
                yield sse.json_event({"metadata": meta}, "metadata")
    except ApiError as err:
        yield sse.error_event(err)
    finally:
        replies.close()
