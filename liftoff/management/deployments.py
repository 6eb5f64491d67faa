"""Live deployments on the management port: `/api/v2/models/liveDeployments` (the Models v2 API, preview).

| method | path                        | answer                                                          |
|--------|-----------------------------|-----------------------------------------------------------------|
| GET    | `` (`modelRid`, `branch`)   | `{"data": [LiveDeployment]}`                                    |
| POST   | ``                          | the new LiveDeployment (STARTING); the controller starts replicas |
| GET    | `/{rid}`                    | the LiveDeployment                                              |
| PUT    | `/{rid}`                    | replaces `runtimeConfiguration`; the LiveDeployment             |
| DELETE | `/{rid}`                    | 204; its replicas drain and stop                                |
| POST   | `/{rid}/start`, `/disable`  | 204; disable removes the replicas and keeps the configuration   |
| POST   | `/{rid}/transformJson`      | `{input: <a /generate body>}` → `{output: <its answer>}`        |

Every route needs `?preview=true` (else 400 `ApiFeaturePreviewUsageOnly`), and every error under the prefix, the
framework's 404 and 405 included, has the Models API envelope `{errorCode, errorName, errorInstanceId,
parameters}`. Inference also reaches a deployment on the ordinary `/generate` with `consumer_group` set to the
deployment's `consumerGroup`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, Router

from liftoff.core import reader_store, registry
from liftoff.core.errors import ApiError, Unavailable
from liftoff.core.keys import valid_group_name
from liftoff.deployments import store as store
from liftoff.deployments.model import (
    DEFAULT_BRANCH,
    DEPLOYMENT_TYPE,
    MODEL_TYPE,
    CreateRequest,
    Deployment,
    DeploymentError,
    ReplaceRequest,
    check_fits_node,
    check_reader_config,
    check_rid,
    from_validation,
    invalid,
    mint_rid,
    model_rid_for,
    model_version_rid_for,
    not_found,
)
from liftoff.http.context import Gateway
from liftoff.http.dispatch import TRANSIENT
from liftoff.http.openapi import TAKEOFF_ERROR, Doc, documented
from liftoff.http.parsing import read_json_object
from liftoff.http.responses import json_response
from liftoff.http.types import ASGIApp, Receive, Scope, Send
from liftoff.management.readers_api import reader_host

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
PREFIX = "/api/v2/models/liveDeployments"
RID_PARAM = "liveDeploymentRid"
_CODES = {400: "INVALID_ARGUMENT", 404: "NOT_FOUND", 401: "UNAUTHORIZED", 403: "PERMISSION_DENIED", 409: "CONFLICT",
          504: "TIMEOUT"}


ENVELOPE = {"type": "object", "required": ["errorCode", "errorName", "parameters"],
            "properties": {"errorCode": {"type": "string"}, "errorName": {"type": "string"},
                           "errorInstanceId": {"type": "string"}, "parameters": {"type": "object"}}}
TRANSFORM_BODY = {"type": "object", "required": ["input"], "properties": {"input": {"type": "object"}}}
_GONE = {204: "done"}


def _doc(summary: str, body: type[BaseModel] | dict[str, Any] | None = None, ok: dict[int, str] | None = None,
         query: dict[str, dict[str, Any]] | None = None) -> Doc:
    """A route of this API in the port's document: `?preview=true` required, errors in the envelope."""
    preview = {"preview": {"type": "string", "enum": ["true"]}}
    # A path that no route under the prefix matches (a control character in the rid) is the port's own 404.
    return Doc(summary=summary, body=body, ok=ok or {200: "the answer"}, query={**preview, **(query or {})},
               error_schema=ENVELOPE, error_schemas={404: {"anyOf": [ENVELOPE, TAKEOFF_ERROR]}})


class EnvelopeErrors:
    """Every error under the prefix in the Models API envelope, whatever raised it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    @property
    def routes(self) -> list[BaseRoute]:
        """The wrapped router's routes (a Mount of this lists them, for the port's document)."""
        return list(getattr(self.app, "routes", []))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def watched(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            if started:
                raise
            await json_envelope(exc)(scope, receive, send)


def json_envelope(exc: Exception) -> Response:
    if isinstance(exc, DeploymentError):
        err = exc
    elif isinstance(exc, HTTPException):
        name = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "InvalidArgument")
        err = DeploymentError(exc.status_code, _CODES.get(exc.status_code, "INVALID_ARGUMENT"), name,
                              {"message": str(exc.detail)})
    elif isinstance(exc, ApiError):
        code = _CODES.get(exc.status, "INVALID_ARGUMENT" if 400 <= exc.status < 500 else "INTERNAL")
        name = {503: "ServiceUnavailable", 504: "Timeout", 413: "RequestTooLarge"}.get(exc.status, "InvalidArgument")
        err = DeploymentError(exc.status, code, name if code != "INTERNAL" or exc.status == 503 else "Internal",
                              {"message": exc.message})
    elif isinstance(exc, TRANSIENT):
        err = DeploymentError(503, "INTERNAL", "ServiceUnavailable",
                              {"message": f"the request queue (Redis) is unreachable: {exc}"})
    else:
        log.exception("unhandled error in the live deployments API")
        err = DeploymentError(500, "INTERNAL", "Internal", {"message": type(exc).__name__})
    return json_response(err.body(), err.status, err.headers)


# A /generate body run on a group, answered in the /generate shape; the inference side provides it (liftoff.entry.apps).
RunGenerate = Callable[[str, dict[str, Any], str], Awaitable[dict[str, Any]]]


def deployment_routes(gw: Gateway, run_generate: RunGenerate) -> list[BaseRoute]:
    return LiveDeployments(gw, run_generate).routes()


class LiveDeployments:
    """The handlers of the live deployments API, on one gateway's dispatcher (its Redis and key names)."""

    def __init__(self, gw: Gateway, run_generate: RunGenerate) -> None:
        self.gw = gw
        self.redis = gw.dispatcher.redis
        self.keys = gw.dispatcher.keys
        self.run_generate = run_generate

    def routes(self) -> list[BaseRoute]:
        inner = Router(routes=[
            documented(Route("/{rid}", self.get_one, methods=["GET"]), _doc("one live deployment")),
            documented(Route("/{rid}", self.replace, methods=["PUT"]),
                       _doc("replace its runtime configuration", body=ReplaceRequest)),
            documented(Route("/{rid}", self.remove, methods=["DELETE"]), _doc("remove it", ok=_GONE)),
            documented(Route("/{rid}/start", self.start, methods=["POST"]), _doc("start it", ok=_GONE)),
            documented(Route("/{rid}/disable", self.disable, methods=["POST"]), _doc("disable it", ok=_GONE)),
            documented(Route("/{rid}/transformJson", self.transform_json, methods=["POST"]),
                       _doc("run a /generate body on it", body=TRANSFORM_BODY)),
        ])
        # The exact prefix is a Route (a Mount would redirect it to a trailing slash); the rest is mounted below it.
        top = {"GET": _doc("the live deployments", query={"modelRid": {"type": "string"},
                                                           "branch": {"type": "string"}}),
               "POST": _doc("create a live deployment", body=CreateRequest)}
        return [
            documented(Route(PREFIX, EnvelopeErrors(self.top), methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
                       top),
            Mount(PREFIX, app=EnvelopeErrors(inner)),
        ]

    async def top(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = {"GET": self.list_deployments, "POST": self.create}.get(scope["method"])
        if handler is None:
            raise HTTPException(405, f"method {scope['method']} not allowed on {PREFIX}")
        response = await handler(Request(scope, receive))
        await response(scope, receive, send)

    async def view(self, dep: Deployment) -> dict[str, Any]:
        records = await registry.read_registry(self.redis, self.keys, self.gw.settings.heartbeat_check_interval)
        scale = (await store.load_scale(self.redis, self.keys)).get(dep.rid)
        health = store.health(dep, scale.target if scale else None, store.replicas_of(dep, records))
        return dep.view(health.state, health.ready, health.reason)

    async def find(self, request: Request) -> Deployment:
        _preview(request)
        rid = check_rid(request.path_params["rid"], RID_PARAM, DEPLOYMENT_TYPE, "UnsupportedLiveDeployment")
        dep = await store.get(self.redis, self.keys, rid)
        if dep is None:
            raise not_found("LiveDeploymentNotFound", **{RID_PARAM: rid})
        return dep

    async def list_deployments(self, request: Request) -> Response:
        _preview(request)
        model_rid = request.query_params.get("modelRid")
        branch = request.query_params.get("branch")
        deps = await store.load_all(self.redis, self.keys)
        if model_rid is not None:
            check_rid(model_rid, "modelRid", MODEL_TYPE)
            if await store.model_name(self.redis, self.keys, model_rid) is None:
                raise not_found("ModelNotFound", modelRid=model_rid)
            deps = [x for x in deps if x.model_rid == model_rid]
        if branch is not None:
            deps = [x for x in deps if x.branch == branch]
        return json_response({"data": [await self.view(x) for x in deps]})

    async def create(self, request: Request) -> Response:
        _preview(request)
        reader_host(self.gw.settings, "create a live deployment, whose replicas are readers")  # 409 on role gateway
        body = _parse(CreateRequest, await read_json_object(request))
        kind = body.deployment_type
        if kind.type != "direct":
            raise invalid("UnsupportedLiveDeployment", deploymentType=kind.type)
        model_rid, name = await self._model(body)
        reader = check_reader_config(body.reader_config)
        check_fits_node(body.runtime_configuration)
        rid = mint_rid(DEPLOYMENT_TYPE)
        group = body.consumer_group or f"deployment-{rid.rsplit('.', 1)[1][:8]}"
        await self._check_group(group)
        dep = Deployment(rid=rid, model_rid=model_rid, model_name=name,
                         model_version_rid=model_version_rid_for(model_rid, name), branch=kind.branch or DEFAULT_BRANCH,
                         consumer_group=group, runtime=body.runtime_configuration, reader=reader,
                         supervisor=_supervisor())
        await store.register_model(self.redis, self.keys, model_rid, name)
        await store.save(self.redis, self.keys, dep)
        log.info("live deployment %s created: model %s, group %s", rid, name, group)
        return json_response(await self.view(dep))

    async def _model(self, body: CreateRequest) -> tuple[str, str]:
        given = body.deployment_type.model_rid
        if given is not None:
            check_rid(given, "modelRid", MODEL_TYPE)
        known = await store.model_name(self.redis, self.keys, given) if given else None
        if body.model_name is None:
            if given is None:
                raise invalid("InvalidArgument", field="deploymentType.modelRid",
                              message="name the model: deploymentType.modelRid of a known model, or modelName")
            if known is None:
                raise not_found("ModelNotFound", modelRid=given)
            return given, known
        if known is not None and known != body.model_name:
            raise invalid("InvalidArgument", field="modelName",
                          message=f"model rid {given} is model {known!r}, not {body.model_name!r}")
        return given or model_rid_for(body.model_name), body.model_name

    async def _check_group(self, group: str) -> None:
        if not valid_group_name(group):
            raise invalid("InvalidArgument", field="consumerGroup",
                          message=f"consumerGroup must be a name without spaces or braces; given {group!r}")
        if group.startswith("@") or any(x.consumer_group == group
                                        for x in await store.load_all(self.redis, self.keys)):
            raise invalid("ConsumerGroupInUse", consumerGroup=group)

    async def get_one(self, request: Request) -> Response:
        return json_response(await self.view(await self.find(request)))

    async def replace(self, request: Request) -> Response:
        dep = await self.find(request)
        body = _parse(ReplaceRequest, await read_json_object(request))
        check_fits_node(body.runtime_configuration)
        dep = dep.model_copy(update={"runtime": body.runtime_configuration})
        await store.save(self.redis, self.keys, dep)
        return json_response(await self.view(dep))

    async def remove(self, request: Request) -> Response:
        dep = await self.find(request)
        stopped = await store.delete(self.redis, self.keys, dep)
        log.info("live deployment %s deleted; stopping replicas %s", dep.rid, stopped)
        return Response(status_code=204)

    async def set_disabled(self, request: Request, disabled: bool) -> Response:
        dep = await self.find(request)
        if dep.disabled != disabled:
            await store.save(self.redis, self.keys, dep.model_copy(update={"disabled": disabled}))
        return Response(status_code=204)

    async def start(self, request: Request) -> Response:
        return await self.set_disabled(request, False)

    async def disable(self, request: Request) -> Response:
        return await self.set_disabled(request, True)

    async def transform_json(self, request: Request) -> Response:
        dep = await self.find(request)
        body = await read_json_object(request)
        data = body.get("input")
        if not isinstance(data, dict):
            raise invalid("InvalidArgument", field="input", message="input must be an object: a /generate body")
        return json_response({"output": await self.run_generate(dep.consumer_group, data, "input.")})


def _preview(request: Request) -> None:
    if request.query_params.get("preview", "").lower() != "true":
        raise invalid("ApiFeaturePreviewUsageOnly", message="this API is in preview: add preview=true to the query")


def _parse(model: type[M], data: dict[str, Any], prefix: str = "") -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc, prefix) from None


def _supervisor() -> str:
    sup = reader_store.supervisor_id()
    if sup is None:
        raise Unavailable("this gateway runs without a supervisor (`liftoff serve`), so it cannot run deployments")
    return sup

