"""An OpenAPI 3.1 document per port, generated from the port's routes and the pydantic models they parse.

A route says what it takes and answers with `documented(route, Doc(...))`: the request body's model (its
`model_json_schema()` becomes the body schema, shared definitions go to `components/schemas`), query parameters,
and the statuses it answers beyond the ones every route may (`COMMON_ERRORS`: bad input, keys, limits, Redis out of
reach). `openapi_document` walks a Starlette app's routes (mounts included), so a route added to a port appears in
its document without another list to keep: a route without a `Doc` is listed with the common answers alone.

Every error answer is declared with the port's error schema (`ErrorShape`), or the route's own when its family
speaks another (live deployments' envelope, the fit engine's `{"error"}`); the health routes declare their body.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel
from starlette.routing import BaseRoute, Mount, Route

R = TypeVar("R", bound=BaseRoute)
Schema = dict[str, Any]

COMMON_ERRORS: dict[int, str] = {
    400: "the request is malformed (the message names what)",
    401: "no API key, or an unknown one (when the port has keys)",
    403: "the key's role may not use this route",
    404: "no such route, or an unknown id or name (the message names it)",
    413: "the body, or what it would queue, is over a limit (the message names it)",
    422: "a field is invalid or over a limit (the message names it)",
    429: "the consumer group's queue is full",
    503: "no live reader, or the request queue (Redis) is unreachable",
    504: "the request timed out",
}
# Answered by the HTTP server before any route runs, with no body of ours.
TRANSPORT_ERRORS: dict[int, str] = {
    414: "the request line (path and query) is too long",
    431: "the request's headers are too large",
}
TAKEOFF_ERROR: Schema = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "string"}, "details": {}, "code": {"type": "integer"}},
}
HEALTH_BODY: Schema = {
    "type": "object", "required": ["status", "reason"],
    "properties": {"status": {"enum": ["healthy", "unhealthy"]}, "reason": {"type": ["string", "null"]},
                   "live_readers": {"type": "array", "items": {"type": "string"}},
                   "loading_readers": {"type": "array", "items": {"type": "string"}},
                   "dead_readers": {"type": "array", "items": {"type": "string"}}},
}


@dataclass(frozen=True)
class Doc:
    """What one route takes and answers, for its port's document."""

    summary: str = ""
    body: type[BaseModel] | Schema | None = None  # the request body: a model, or a schema for a hand-parsed body
    body_media: str = "application/json"  # the request body's content type (multipart/form-data: a form's parts)
    query: dict[str, Schema] = field(default_factory=dict)  # query parameter → its schema
    ok: dict[int, str] = field(default_factory=lambda: {200: "the answer"})  # success statuses
    media: tuple[str, ...] = ("application/json",)  # content types of a success answer
    ok_schema: Schema | None = None  # a success answer's schema, where it is one shape
    errors: dict[int, str] = field(default_factory=dict)  # statuses beyond COMMON_ERRORS
    error_schema: Schema | None = None  # this route's error body, when not the port's
    error_schemas: dict[int, Schema] = field(default_factory=dict)  # per status, beating error_schema


def documented(route: R, doc: Doc | dict[str, Doc]) -> R:
    """`route`, described by `doc` in its port's document (by method, for a route whose methods differ)."""
    route.openapi_doc = doc  # type: ignore[attr-defined]
    return route


_CONVERTOR = re.compile(r"{([^}:]+)(:[^}]*)?}")


def openapi_document(title: str, routes: Iterable[BaseRoute], error_schema: Schema = TAKEOFF_ERROR) -> Schema:
    """The port's OpenAPI 3.1 document: every route and method of `routes`, with its body, parameters and answers."""
    components: dict[str, Schema] = {}
    paths: dict[str, dict[str, Any]] = {}
    for path, method, doc, params in _operations(routes, ""):
        operation = _operation(doc, method, params, error_schema, components)
        paths.setdefault(path, {}).setdefault(method.lower(), operation)  # the first route of a path answers
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": _version()},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(components.items()))},
    }


def _operations(routes: Iterable[BaseRoute], prefix: str) -> Iterable[tuple[str, str, Doc, list[str]]]:
    for route in routes:
        if isinstance(route, Mount):
            yield from _operations(route.routes, prefix + route.path)
        elif isinstance(route, Route):
            path = _CONVERTOR.sub(lambda m: "{" + m.group(1) + "}", prefix + route.path)
            doc = getattr(route, "openapi_doc", None) or Doc()
            by_method = doc if isinstance(doc, dict) else {m: doc for m in route.methods or {"GET"}}
            params = [name for name, _ in _CONVERTOR.findall(prefix + route.path)]
            for method in sorted(set(by_method) - {"HEAD"}):
                yield path, method, by_method[method], params


def _operation(doc: Doc, method: str, params: list[str], port_error: Schema,
               components: dict[str, Schema]) -> Schema:
    operation: Schema = {"summary": doc.summary} if doc.summary else {}
    parameters = [{"name": p, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
                  for p in params]
    parameters += [{"name": name, "in": "query", "required": False, "schema": schema}
                   for name, schema in doc.query.items()]
    if parameters:
        operation["parameters"] = parameters
    if doc.body is not None:
        operation["requestBody"] = {"required": True,
                                    "content": {doc.body_media: {"schema": _schema(doc.body, components)}}}
    responses: dict[str, Any] = {}
    for status, description in doc.ok.items():
        content = {m: ({"schema": doc.ok_schema} if doc.ok_schema and m == "application/json" else {})
                   for m in doc.media}
        responses[str(status)] = {"description": description, **({"content": content} if status != 204 else {})}
    for status, description in sorted({**COMMON_ERRORS, **doc.errors}.items()):
        schema = doc.error_schemas.get(status) or doc.error_schema or port_error
        responses[str(status)] = {"description": description, "content": {"application/json": {"schema": schema}}}
    for status, description in TRANSPORT_ERRORS.items():
        responses[str(status)] = {"description": description}
    operation["responses"] = responses
    return operation


def _schema(body: type[BaseModel] | Schema, components: dict[str, Schema]) -> Schema:
    if isinstance(body, dict):
        return body
    schema = body.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(schema.pop("$defs", {}))
    components[body.__name__] = schema
    return {"$ref": f"#/components/schemas/{body.__name__}"}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("liftoff")
    except PackageNotFoundError:
        return "0"
