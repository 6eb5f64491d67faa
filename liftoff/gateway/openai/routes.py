"""The OpenAI-compatible API (port 3003): `model` names the consumer group.

Routes only translate: parse, validate (`liftoff.gateway.chat.protocol`), call the service
(`liftoff.gateway.services`; completions through `liftoff.gateway.chat.generation`, which also shapes their answers
and streams), answer in OpenAI's shape. Failures are raised: the port's error shape (`OPENAI_SHAPE`, in
`liftoff.gateway.chat.errors`) answers them in OpenAI's envelope, as it does the port machinery's own answers.
"""

from __future__ import annotations

import asyncio
import base64
import struct
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from liftoff.core.adapters import SEPARATOR, split_model
from liftoff.core.errors import ApiError
from liftoff.gateway.chat.errors import OpenAIError, from_api_error, model_not_found
from liftoff.gateway.chat.generation import Completion
from liftoff.gateway.chat.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, parse_openai
from liftoff.gateway.chat.readers import ReaderApi
from liftoff.gateway.chat.tools import tool_plan
from liftoff.gateway.openai.images import ImageCompletion, chat_images
from liftoff.gateway.openai.rerank import rerank_routes
from liftoff.gateway.openai.responses.routes import responses_routes
from liftoff.gateway.services import encode
from liftoff.gateway.services.limits import check_count, check_fanout
from liftoff.http.context import Gateway
from liftoff.http.openapi import Doc, documented
from liftoff.http.parsing import read_json_object
from liftoff.http.responses import json_response


def openai_routes(gw: Gateway) -> list[Route]:
    api = OpenAIApi(gw)
    streams = ("application/json", "text/event-stream")  # `stream: true` answers with server-sent events
    return [
        documented(Route("/v1/chat/completions", api.chat_completions, methods=["POST"]),
                   Doc(summary="chat completion", body=ChatCompletionRequest, media=streams)),
        documented(Route("/v1/completions", api.completions, methods=["POST"]),
                   Doc(summary="text completion", body=CompletionRequest, media=streams)),
        documented(Route("/v1/embeddings", api.embeddings, methods=["POST"]),
                   Doc(summary="embeddings", body=EmbeddingRequest)),
        documented(Route("/v1/models", api.models, methods=["GET"]),
                   Doc(summary="the models (consumer groups with a live reader, and `group:adapter` for each LoRA "
                               "adapter they serve)")),
        documented(Route("/v1/models/{model:path}", api.model, methods=["GET"]),
                   Doc(summary="one model")),
        *rerank_routes(gw),
        *responses_routes(gw),
    ]


class OpenAIApi(ReaderApi):
    """The port's handlers, sharing the registry reads that name the live models and pick readers' tokenizers."""

    async def chat_completions(self, request: Request) -> Response:
        req = parse_openai(ChatCompletionRequest, await read_json_object(request))
        images = await chat_images(self.gw, req)
        messages = [m.template_view(i, parts=bool(images)) for i, m in enumerate(req.messages)]
        tools = None
        if req.tools and req.tool_choice != "none":
            tools = tool_plan(req.tools, req.tool_choice, req.parallel_tool_calls,
                              await self.readers.tool_call_parser(req.model), req.constraint_param())
        sampling = await self.readers.sampling_defaults(req.model)
        if images:
            return await respond(ImageCompletion(self.gw, "chat", req, [], chat=messages, tools=tools, images=images,
                                                 sampling=sampling))
        return await respond(Completion(self.gw, "chat", req, [], chat=messages, tools=tools, sampling=sampling))

    async def completions(self, request: Request) -> Response:
        req = parse_openai(CompletionRequest, await read_json_object(request))
        prompts = req.prompts()
        self._check_fanout(req.choices_per_prompt, len(prompts))
        if prompts and not isinstance(prompts[0], str):
            prompts = await self.readers.detokenize(req.model, prompts, "prompt")  # type: ignore[arg-type]
        sampling = await self.readers.sampling_defaults(req.model)
        return await respond(Completion(self.gw, "text", req, prompts, echo=req.echo,  # type: ignore[arg-type]
                                        sampling=sampling))

    def _check_fanout(self, n: int, prompts: int) -> None:
        """`n` x prompts counted before anything fans out (a detokenize per token-id prompt, a copy per choice)."""
        try:
            check_fanout(f"n ({n}) x {prompts} prompts", n * prompts, self.gw.settings.max_user_batch_size)
        except ApiError as err:
            raise OpenAIError(400, err.message, "n" if n > 1 else "prompt") from None

    async def embeddings(self, request: Request) -> Response:
        req = parse_openai(EmbeddingRequest, await read_json_object(request))
        inputs = req.inputs()
        token_ids = not isinstance(inputs[0], str)
        try:
            check_count(len(inputs), self.gw.settings.max_user_batch_size)
        except ApiError as err:
            raise OpenAIError(400, err.message, "input") from None
        texts: list[str] = (await self.readers.detokenize(req.model, inputs, "input")  # type: ignore[arg-type]
                            if token_ids else inputs)

        async def count() -> int:  # token-id inputs as given; texts by the group's tokenizer, while they are embedded
            if token_ids:
                return sum(len(ids) for ids in inputs)  # type: ignore[misc]
            return await self.readers.count_tokens(req.model, texts)

        vectors, tokens = await asyncio.gather(self._embed(req.model, texts), count())
        data = [{"object": "embedding", "index": i, "embedding": encode_vector(v, req.encoding_format)}
                for i, v in enumerate(vectors)]
        return json_response({"object": "list", "data": data, "model": req.model,
                              "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def _embed(self, model: str, texts: list[str]) -> list[list[float]]:
        try:
            return await encode.embed(self.gw, model, texts, batched=True)
        except ApiError as err:
            raise from_api_error(err, model) from None

    async def models(self, request: Request) -> Response:
        return json_response({"object": "list", "data": list((await self.cards(fresh=True)).values())})

    async def cards(self, fresh: bool = False) -> dict[str, dict[str, Any]]:
        """Model id → its card: each live group, then each of its LoRA adapters as `group:adapter` (vLLM's
        convention: an adapter is a model of its own, whose `parent` is the base). The listing reads the registry
        afresh, so that an adapter just added or removed shows at once."""
        cards: dict[str, dict[str, Any]] = {}
        for group, records in (await self.readers.live_groups(fresh)).items():
            cards[group] = model_card(group, records)
            for adapter, serving in self.readers.adapters(records).items():
                name = f"{group}{SEPARATOR}{adapter}"
                cards[name] = {**model_card(name, serving), "parent": group}
        return cards

    async def model(self, request: Request) -> Response:
        name = request.path_params["model"]
        cards = await self.cards()
        if name not in cards:
            await self.readers.records(fresh=True)
            cards = await self.cards()
        if name not in cards:
            group, adapter = split_model(name)
            if adapter is not None and group in cards:
                raise OpenAIError(404, f"The model {name!r} does not exist: consumer group {group!r} serves no LoRA "
                                  f"adapter {adapter!r}; its models: "
                                  f"{[c for c in cards if split_model(c)[0] == group]}", "model", "model_not_found")
            raise model_not_found(name, sorted(c for c in cards if SEPARATOR not in c))
        return json_response(cards[name])


async def respond(completion: Completion) -> Response:
    """A completion answered whole or streamed; a service's error in OpenAI's terms."""
    try:
        return await (completion.stream() if completion.req.stream else completion.answer())
    except ApiError as err:
        raise from_api_error(err, completion.req.model) from None


def model_card(group: str, records: list[Any]) -> dict[str, Any]:
    """A consumer group as an OpenAI model; `model_names` (an extension) says which models its readers run."""
    return {
        "id": group,
        "object": "model",
        "created": int(min(r.info.registered_s for r in records)),
        "owned_by": "liftoff",
        "model_names": sorted({r.info.model_name for r in records}),
        "model_types": sorted({r.info.model_type for r in records}),
        "readers": len(records),
    }


def encode_vector(vector: list[float], encoding: str) -> list[float] | str:
    """`base64` is what OpenAI sends: the vector as little-endian float32 bytes."""
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector
