"""Takeoff's `/image_generate` and `/image_generate_stream` (port 3000): a multipart/form-data body with the image
file(s) as `image_data` and the request's JSON body (a /generate body) as `json_data`, answered as `/generate` and
`/generate_stream` answer.

Every prompt of the request (one `text`, or each of a list) is asked about all the images, in the order they were
sent (docs/images.md). Parts other than those two are refused by name.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from liftoff.core.errors import BadRequest
from liftoff.gateway import sse
from liftoff.gateway.images import ImageError, prepare
from liftoff.gateway.services import generate
from liftoff.gateway.takeoff.protocol import GenerateRequest
from liftoff.gateway.takeoff.requests import generate_answer, generation
from liftoff.http.context import Gateway
from liftoff.http.openapi import Doc, documented
from liftoff.http.parsing import parse_json_object, validate
from liftoff.http.responses import json_response

MAX_IMAGES = 16  # image_data files in one request
PARTS = ("image_data", "json_data")


Events = Callable[[GenerateRequest, generate.ReplyStream], AsyncIterator[bytes]]


def image_routes(gw: Gateway, events: Events) -> list[BaseRoute]:
    """The two routes; `events` shapes a stream's replies as /generate_stream does (liftoff.gateway.takeoff.routes)."""

    async def image_generate(request: Request) -> Response:
        req, gen = await image_generation(gw, request)
        return json_response(generate_answer(req, await generate.generate(gw, gen)))

    async def image_generate_stream(request: Request) -> Response:
        req, gen = await image_generation(gw, request)
        return sse.response(events(req, await generate.stream(gw, gen)))

    form = {"type": "object", "required": list(PARTS), "properties": {
        "image_data": {"type": "string", "format": "binary", "description": "the image file"},
        "json_data": {"type": "string", "description": "a /generate body as JSON text"}}}
    return [
        documented(Route("/image_generate", image_generate, methods=["POST"]),
                   Doc(summary="generate text about images", body=form, body_media="multipart/form-data")),
        documented(Route("/image_generate_stream", image_generate_stream, methods=["POST"]),
                   Doc(summary="/image_generate, streamed as server-sent events", body=form,
                       body_media="multipart/form-data", media=("text/event-stream",))),
    ]


async def image_generation(gw: Gateway, request: Request) -> tuple[GenerateRequest, generate.Generation]:
    """The request's /generate body and the generation it asks for, its images checked and attached."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise BadRequest("send multipart/form-data with the image as an image_data file and the request's JSON as "
                         f"json_data; given content type {content_type or 'none'!r}")
    limit = gw.settings.body_size_limit_bytes
    try:
        form = await request.form(max_files=MAX_IMAGES + 1, max_fields=len(PARTS), max_part_size=limit)
    except HTTPException as exc:
        raise BadRequest(f"the multipart body could not be read: {exc.detail}") from None
    try:
        unknown = sorted({key for key in form if key not in PARTS})
        if unknown:
            raise BadRequest(f"unknown parts: {', '.join(unknown)}; send image_data (image files) and json_data")
        req = validate(GenerateRequest, parse_json_object(await _json_part(form.getlist("json_data"))))
        files = form.getlist("image_data")
        if not files:
            raise BadRequest("image_data: missing; send the image as an image_data file part")
        if len(files) > MAX_IMAGES:
            raise BadRequest(f"image_data: {len(files)} images; at most {MAX_IMAGES} in one request")
        raw = []
        for index, part in enumerate(files):
            if not isinstance(part, UploadFile):
                raise BadRequest("image_data must be a file part (with a filename), not a text field")
            raw.append((await part.read(), "image_data" if len(files) == 1 else f"image_data[{index}]"))
    finally:
        await form.close()
    try:
        images = await asyncio.gather(*(asyncio.to_thread(prepare, data, name) for data, name in raw))
    except ImageError as err:
        raise BadRequest(err.message) from None
    gen = generation(req)
    gen = replace(gen, work={**(gen.work or {}), "images": list(images)}, attached=sum(len(i) for i in images))
    return req, gen


async def _json_part(parts: list[Any]) -> bytes:
    if len(parts) != 1:
        raise BadRequest("json_data: send the request's JSON body (text, consumer_group, sampling parameters) as "
                         f"one json_data part; given {len(parts)}")
    part = parts[0]
    if isinstance(part, UploadFile):
        return await part.read()
    return str(part).encode()
