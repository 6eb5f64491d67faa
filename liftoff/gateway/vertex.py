"""Google Vertex AI custom-container API (port 3002, or `AIP_HTTP_PORT`).

`POST /generate_vertex` `{"instances": [...], "parameters": {...}?}` answers `{"predictions": [...]}`, one per
instance and in its order. An instance carries the /generate fields (`text` one string, `consumer_group`,
`sampling_*`, `max_new_tokens`, `json_schema`, ...), or is a plain string (its text); `parameters` are defaults for
every instance. `POST /embed_vertex` does the same for embeddings (`{"text", "consumer_group"}` → `{"result"}`).

Every instance is validated before any is dispatched: a bad one is a 400 naming its index (`instances[2]: ...`);
a failure while answering fails the request with that status, also naming the index. Errors use Google's shape,
`{"error": {"code", "message", "status"}}`. Vertex tells a container its routes in the environment:
`AIP_PREDICT_ROUTE` (served as /generate_vertex) and `AIP_HEALTH_ROUTE` (served as /healthz, and open like it
even when inference keys are set: Vertex's probe sends none), when set.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from liftoff.core.errors import ApiError, from_validation
from liftoff.gateway.services import encode, generate
from liftoff.gateway.services.limits import check_count
from liftoff.gateway.takeoff.protocol import EmbedRequest, GenerateRequest
from liftoff.gateway.takeoff.requests import DEFAULT_GROUP, generation
from liftoff.http.context import Gateway
from liftoff.http.health import healthz_route
from liftoff.http.openapi import Doc, documented
from liftoff.http.parsing import read_json_object
from liftoff.http.port_app import HEALTH_DOC
from liftoff.http.responses import json_response

_STATUS_NAMES = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "INVALID_ARGUMENT",
                 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
_AS_400 = (422,)  # Vertex callers get 400 for every fault of their request

Predict = Callable[[Gateway, list[Any], dict[str, Any]], Awaitable[list[dict[str, Any]]]]


def vertex_error_body(status: int, message: str) -> dict[str, Any]:
    """The one Vertex error body, in the shape of Google's APIs."""
    return {"error": {"code": status, "message": message, "status": _STATUS_NAMES.get(status, "INTERNAL")}}


VERTEX_ERROR = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message", "status"],
                             "properties": {"code": {"type": "integer"}, "message": {"type": "string"},
                                            "status": {"type": "string"}}}},
}


class VertexGenerateBody(BaseModel):
    """The body's shape for the port's document; each instance (merged over `parameters`) is validated as a
    /generate body, one text per instance."""

    instances: list[GenerateRequest | str] = Field(min_length=1)
    parameters: dict[str, Any] | None = None


class VertexEmbedBody(BaseModel):
    """As `VertexGenerateBody`, with /embed bodies."""

    instances: list[EmbedRequest | str] = Field(min_length=1)
    parameters: dict[str, Any] | None = None


class VertexError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = 400 if status in _AS_400 else status
        self.message = message
        self.headers = headers

    @classmethod
    def of(cls, err: ApiError, where: str | None = None) -> VertexError:
        """A service's error, naming the instances it concerns (`instances[2]: ...`) when `where` says."""
        return cls(err.status, f"{where}: {err.message}" if where else err.message, err.headers)


def vertex_routes(gw: Gateway, environ: Mapping[str, str] = os.environ) -> list[Route]:
    async def generate_vertex(request: Request) -> Response:
        return await _predict(gw, request, generations)

    async def embed_vertex(request: Request) -> Response:
        return await _predict(gw, request, embeddings)

    generate_doc = Doc(summary="one generation per instance", body=VertexGenerateBody)
    routes = [
        documented(Route("/generate_vertex", generate_vertex, methods=["POST"]), generate_doc),
        documented(Route("/embed_vertex", embed_vertex, methods=["POST"]),
                   Doc(summary="one embedding per instance", body=VertexEmbedBody)),
    ]
    predict, health = environ.get("AIP_PREDICT_ROUTE"), health_path(environ)
    if predict and predict.startswith("/") and predict not in ("/generate_vertex", "/embed_vertex"):
        routes.append(documented(Route(predict, generate_vertex, methods=["POST"]), generate_doc))
    if health and health not in ("/healthz", "/health"):
        routes.append(documented(Route(health, healthz_route(gw), methods=["GET"]), HEALTH_DOC))
    return routes


def health_path(environ: Mapping[str, str] = os.environ) -> str | None:
    """Vertex's health route (`AIP_HEALTH_ROUTE`), when set to a path: open like /healthz, for Vertex's probe
    sends no API key."""
    health = environ.get("AIP_HEALTH_ROUTE")
    return health if health and health.startswith("/") else None


async def _predict(gw: Gateway, request: Request, predict: Predict) -> Response:
    """Parse → `predict` → `{"predictions": [...]}`; every failure in Vertex's error shape."""
    try:
        instances, parameters = _instances(await read_json_object(request))
        check_count(len(instances), gw.settings.max_user_batch_size)
        return json_response({"predictions": await predict(gw, instances, parameters)})
    except (VertexError, ApiError) as exc:
        err = exc if isinstance(exc, VertexError) else VertexError.of(exc)
        return json_response(vertex_error_body(err.status, err.message), err.status, err.headers)


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


def _validated(model: type[GenerateRequest] | type[EmbedRequest], instances: list[Any],
               parameters: dict[str, Any]) -> list[Any]:
    """Every instance as a request, before any is dispatched; one text per instance."""
    reqs = []
    for index, instance in enumerate(instances):
        try:
            req = model.model_validate(_fields(instance, parameters, index))
        except ValidationError as exc:
            raise VertexError(400, f"instances[{index}]: {from_validation(exc).message}") from None
        if req.batched:
            raise VertexError(400, f"instances[{index}]: text must be one string per instance")
        reqs.append(req)
    return reqs


async def generations(gw: Gateway, instances: list[Any], parameters: dict[str, Any]) -> list[dict[str, Any]]:
    """One generation per instance, all at once: `{"text"}`, with `metadata` when asked for."""
    reqs: list[GenerateRequest] = _validated(GenerateRequest, instances, parameters)

    async def one(index: int, req: GenerateRequest) -> dict[str, Any]:
        try:
            reply = await generate.generate(gw, generation(req))
        except ApiError as err:
            raise VertexError.of(err, f"instances[{index}]") from None
        prediction: dict[str, Any] = {"text": (reply.texts or [""])[0]}
        if reply.metadata:
            prediction["metadata"] = reply.metadata[0]
        return prediction

    return list(await asyncio.gather(*(one(i, r) for i, r in enumerate(reqs))))


async def embeddings(gw: Gateway, instances: list[Any], parameters: dict[str, Any]) -> list[dict[str, Any]]:
    """`{"result": vector}` per instance: one batch per consumer group, in instance order within it."""
    reqs: list[EmbedRequest] = _validated(EmbedRequest, instances, parameters)
    by_group: dict[str, list[int]] = {}
    for i, req in enumerate(reqs):
        by_group.setdefault(req.consumer_group or DEFAULT_GROUP, []).append(i)
    predictions: list[dict[str, Any]] = [{} for _ in reqs]

    async def batch(group: str, indices: list[int]) -> None:
        try:
            vectors = await encode.embed(gw, group, [reqs[i].texts[0] for i in indices], batched=True)
        except ApiError as err:
            where = ", ".join(f"instances[{i}]" for i in indices[:5]) + ("..." if len(indices) > 5 else "")
            raise VertexError.of(err, where) from None
        for i, vector in zip(indices, vectors, strict=True):
            predictions[i] = {"result": vector}

    await asyncio.gather(*(batch(g, ix) for g, ix in by_group.items()))
    return predictions
