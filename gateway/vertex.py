"""Google Vertex AI custom-container API (port 3002, or `AIP_HTTP_PORT`).

`POST /generate_vertex` `{"instances": [...], "parameters": {...}?}` answers `{"predictions": [...]}`, one per
instance and in its order. An instance carries the /generate fields (`text` one string, `consumer_group`,
`sampling_*`, `max_new_tokens`, `json_schema`, ...), or is a plain string (its text); `parameters` are defaults for
every instance. `POST /embed_vertex` does the same for embeddings (`{"text", "consumer_group"}` → `{"result"}`).

Every instance is validated before any is dispatched: a bad one is a 400 naming its index (`instances[2]: ...`);
a failure while answering fails the request with that status, also naming the index. Errors use Google's shape,
`{"error": {"code", "message", "status"}}`. Vertex tells a container its routes in the environment:
`AIP_PREDICT_ROUTE` (served as /generate_vertex) and `AIP_HEALTH_ROUTE` (served as /healthz), when set.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway.protocol import EmbedRequest, GenerateRequest
from gateway.requests import check_count, submit_generate
from liftoff.core.http.context import Gateway
from liftoff.core.http.errors import ApiError, from_validation
from liftoff.core.http.health import healthz_route
from liftoff.core.http.parsing import read_json_object
from liftoff.core.http.responses import json_response

_STATUS_NAMES = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "INVALID_ARGUMENT",
                 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
_AS_400 = (422,)  # Vertex callers get 400 for every fault of their request


def vertex_error_body(status: int, message: str) -> dict[str, Any]:
    """The one Vertex error body, in the shape of Google's APIs."""
    return {"error": {"code": status, "message": message, "status": _STATUS_NAMES.get(status, "INTERNAL")}}


class VertexError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = 400 if status in _AS_400 else status
        self.message = message
        self.headers = headers


def _instances(body: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    instances = body.get("instances")
    if not isinstance(instances, list) or not instances:
        raise VertexError(400, "instances must be a non-empty list")
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise VertexError(400, "parameters must be an object")
    return instances, parameters


def _fields(instance: Any, parameters: dict[str, Any], index: int) -> dict[str, Any]:
    if isinstance(instance, str):
        return {**parameters, "text": instance}
    if not isinstance(instance, dict):
        raise VertexError(400, f"instances[{index}]: an instance must be an object or a string, "
                          f"not {type(instance).__name__}")
    return {**parameters, **instance}


def _validated(model: type[GenerateRequest] | type[EmbedRequest], fields: dict[str, Any], index: int) -> Any:
    try:
        req = model.model_validate(fields)
    except ValidationError as exc:
        raise VertexError(400, f"instances[{index}]: {from_validation(exc).message}") from None
    if isinstance(req.text, list):
        raise VertexError(400, f"instances[{index}]: text must be one string per instance")
    return req


def vertex_routes(gw: Gateway, environ: Mapping[str, str] = os.environ) -> list[Route]:
    dispatcher = gw.dispatcher
    settings = gw.settings

    async def endpoint(request: Request, answer: Any) -> Response:
        try:
            body = await read_json_object(request)
            instances, parameters = _instances(body)
            check_count(len(instances), settings.max_user_batch_size)
            return json_response({"predictions": await answer(instances, parameters)})
        except VertexError as err:
            return json_response(vertex_error_body(err.status, err.message), err.status, err.headers)
        except ApiError as err:
            status = 400 if err.status in _AS_400 else err.status
            return json_response(vertex_error_body(status, err.message), status, err.headers)

    async def one_generation(index: int, req: GenerateRequest) -> dict[str, Any]:
        try:
            reply = await dispatcher.outcome(await submit_generate(gw, req))
        except ApiError as err:
            raise VertexError(err.status, f"instances[{index}]: {err.message}", err.headers) from None
        prediction: dict[str, Any] = {"text": (reply.texts or [""])[0]}
        if reply.metadata:
            prediction["metadata"] = reply.metadata[0]
        return prediction

    async def generations(instances: list[Any], parameters: dict[str, Any]) -> list[dict[str, Any]]:
        reqs = [_validated(GenerateRequest, _fields(x, parameters, i), i) for i, x in enumerate(instances)]
        return list(await asyncio.gather(*(one_generation(i, r) for i, r in enumerate(reqs))))

    async def embeddings(instances: list[Any], parameters: dict[str, Any]) -> list[dict[str, Any]]:
        reqs = [_validated(EmbedRequest, _fields(x, parameters, i), i) for i, x in enumerate(instances)]
        # One batch per consumer group, in instance order within it.
        by_group: dict[str, list[int]] = {}
        for i, req in enumerate(reqs):
            by_group.setdefault(req.consumer_group or "primary", []).append(i)

        async def embed(group: str, indices: list[int]) -> None:
            try:
                ticket = await dispatcher.submit(group, [reqs[i].text for i in indices], kind="embed", batched=True)
                vectors = (await dispatcher.outcome(ticket)).result or []
            except ApiError as err:
                where = ", ".join(f"instances[{i}]" for i in indices[:5]) + ("..." if len(indices) > 5 else "")
                raise VertexError(err.status, f"{where}: {err.message}", err.headers) from None
            for i, vector in zip(indices, vectors, strict=True):
                predictions[i] = {"result": vector}

        predictions: list[dict[str, Any]] = [{} for _ in reqs]
        await asyncio.gather(*(embed(g, ix) for g, ix in by_group.items()))
        return predictions

    async def generate_vertex(request: Request) -> Response:
        return await endpoint(request, generations)

    async def embed_vertex(request: Request) -> Response:
        return await endpoint(request, embeddings)

    routes = [
        Route("/generate_vertex", generate_vertex, methods=["POST"]),
        Route("/embed_vertex", embed_vertex, methods=["POST"]),
    ]
    predict, health = environ.get("AIP_PREDICT_ROUTE"), environ.get("AIP_HEALTH_ROUTE")
    if predict and predict.startswith("/") and predict not in ("/generate_vertex", "/embed_vertex"):
        routes.append(Route(predict, generate_vertex, methods=["POST"]))
    if health and health.startswith("/") and health not in ("/healthz", "/health"):
        routes.append(Route(health, healthz_route(gw), methods=["GET"]))
    return routes

