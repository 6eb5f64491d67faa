"""The OpenAI Responses API (/v1/responses) over the generation service, with a response store in Redis.

A request's conversation (the stored one it continues with `previous_response_id`, then its own `input`) is
rendered as chat messages and answered by the chat completions' machinery (`liftoff.gateway.chat.generation.Completion`,
tools through `liftoff.gateway.chat.tools`, `text.format` through the structured-output path); this module shapes the
answer as a Response (`liftoff.gateway.openai.responses.objects`), streams it as typed events
(`liftoff.gateway.openai.responses.stream`) and keeps it (`liftoff.gateway.openai.responses.store`). The request models:
`liftoff.gateway.openai.responses.protocol`. Behaviour for users: docs/responses.md.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from liftoff.core.errors import ApiError
from liftoff.gateway import sse
from liftoff.gateway.chat.errors import OpenAIError, from_api_error, invalid
from liftoff.gateway.chat.generation import Completion
from liftoff.gateway.chat.readers import ReaderApi
from liftoff.gateway.chat.tools import ToolPlan, tool_plan
from liftoff.gateway.openai.responses.objects import Draft
from liftoff.gateway.openai.responses.protocol import (
    InputItem,
    MessageItem,
    ResponsesRequest,
    chat_messages,
    input_items,
    parse_responses,
)
from liftoff.gateway.openai.responses.store import ResponseStore
from liftoff.gateway.openai.responses.stream import ResponseEvents
from liftoff.gateway.services import generate
from liftoff.http.context import Gateway
from liftoff.http.openapi import Doc, documented
from liftoff.http.parsing import parse_json_object, read_json_object
from liftoff.http.responses import json_response

CONTINUABLE = ("completed", "incomplete")


def responses_routes(gw: Gateway) -> list[Route]:
    api = ResponsesApi(gw)
    one = "/v1/responses/{response_id}"
    return [
        documented(Route("/v1/responses", api.create, methods=["POST"]),
                   Doc(summary="create a model response (Responses API)", body=ResponsesRequest,
                       media=("application/json", "text/event-stream"))),
        documented(Route(one, api.retrieve, methods=["GET"]),
                   Doc(summary="a stored response")),
        documented(Route(one, api.delete, methods=["DELETE"]),
                   Doc(summary="delete a stored response")),
        documented(Route(one + "/cancel", api.cancel, methods=["POST"]),
                   Doc(summary="cancel a background response (none run in the background here: always 400 or 404)",
                       ok={200: "never: no response runs in the background"})),
    ]


def not_found(response_id: str, param: str | None = None) -> OpenAIError:
    code = "previous_response_not_found" if param else None
    what = "Previous response" if param else "Response"
    return OpenAIError(404, f"{what} with id {response_id!r} not found (never stored, made with store: false, "
                       "deleted, or expired: see responses_ttl_s)", param, code)


def cut_call(item: dict[str, Any]) -> bool:
    """A call a streamed response began whose arguments never became JSON (the budget cut them; its item
    `incomplete`): a conversation that continues the response leaves it out, as the whole answer has no such call."""
    if item.get("type") != "function_call" or item.get("status") != "incomplete":
        return False
    try:
        json.loads(item.get("arguments", ""))
    except ValueError:
        return True
    return False


class ResponsesApi(ReaderApi):
    def __init__(self, gw: Gateway) -> None:
        super().__init__(gw)
        self.store = ResponseStore(gw)

    async def create(self, request: Request) -> Response:
        req = parse_responses(await read_json_object(request))
        conversation, first_new = await self._conversation(req)
        messages = chat_messages(req.instructions, conversation, first_new)
        completion = Completion(self.gw, "chat", req.sampling, [], chat=messages, tools=await self._tools(req),
                                sampling=await self.readers.sampling_defaults(req.model))
        draft = Draft(req)
        stored = [item.model_dump(mode="json", by_alias=True, exclude_none=True) for item in conversation]
        store = self.store if req.store is not False else None
        try:
            if req.stream:
                return await self._stream(draft, completion, store, stored)
            choices, usage = await completion.choices()
        except ApiError as err:
            raise from_api_error(err, req.model) from None
        draft.finish(choices[0]["finish_reason"], usage)
        draft.add_answer(choices[0]["message"])
        body = draft.body()
        if store is not None:
            await store.save(body, stored)
        return json_response(body)

    async def _conversation(self, req: ResponsesRequest) -> tuple[list[InputItem], int]:
        """The stored conversation `previous_response_id` continues (its input and output items), then the
        request's own items; and where the request's own begin."""
        own: list[InputItem] = ([MessageItem(role="user", content=req.input)] if isinstance(req.input, str)
                                else list(req.input or []))
        history: list[InputItem] = []
        if req.previous_response_id is not None:
            previous = await self.store.load(req.previous_response_id)
            if previous is None:
                raise not_found(req.previous_response_id, "previous_response_id")
            status = previous.response.get("status")
            if status not in CONTINUABLE:
                raise invalid(f"previous_response_id: response {req.previous_response_id!r} is {status}; only a "
                              f"{' or '.join(CONTINUABLE)} response can be continued", "previous_response_id")
            output = [item for item in previous.response["output"] if not cut_call(item)]
            history = input_items([*previous.conversation, *output], "previous_response_id")
        if not history and not own:
            raise invalid("input must hold at least one item", "input")
        return [*history, *own], len(history)

    async def _tools(self, req: ResponsesRequest) -> ToolPlan | None:
        if not req.tools or req.tool_choice == "none":
            return None
        return tool_plan(req.chat_tools(), req.chat_tool_choice(), req.parallel_tool_calls,
                         await self.readers.tool_call_parser(req.model), req.constraint_param())

    async def _stream(self, draft: Draft, completion: Completion, store: ResponseStore | None,
                      stored: list[dict[str, Any]]) -> Response:
        replies = await generate.stream(self.gw, completion.generation())
        try:
            if store is not None:
                await store.save(draft.body(), stored)  # in progress: its id goes out with the first event
        except BaseException:
            replies.close()
            raise
        return sse.response(ResponseEvents(draft, completion, store, stored).events(replies))

    async def retrieve(self, request: Request) -> Response:
        self._no_query(request)
        stored = await self.store.load(request.path_params["response_id"])
        if stored is None:
            raise not_found(request.path_params["response_id"])
        return json_response(stored.response)

    async def delete(self, request: Request) -> Response:
        self._no_query(request)
        response_id = request.path_params["response_id"]
        if not await self.store.delete(response_id):
            raise not_found(response_id)
        return json_response({"id": response_id, "object": "response", "deleted": True})

    async def cancel(self, request: Request) -> Response:
        """Only a background response can be cancelled, and none runs in the background here: a stored response
        is a 400 saying so (a streaming one stops when its client closes the stream), an unknown one a 404."""
        self._no_query(request)
        body = await request.body()
        if body.strip() and parse_json_object(body):
            raise invalid("POST /v1/responses/{id}/cancel takes no body")
        response_id = request.path_params["response_id"]
        stored = await self.store.load(response_id)
        if stored is None:
            raise not_found(response_id)
        status = stored.response.get("status")
        hint = (" (to stop it, close its stream: the server then withdraws the generation)"
                if status == "in_progress" else "")
        raise invalid(f"Only responses created with background=true can be cancelled, and this server runs none in "
                      f"the background; response {response_id!r} is {status}{hint}")

    @staticmethod
    def _no_query(request: Request) -> None:
        """No query parameters are offered here (OpenAI's `stream`, `starting_after` and `include` resume or
        enrich background responses)."""
        if request.query_params:
            name = next(iter(request.query_params))
            raise invalid(f"query parameter {name!r} is not supported here: responses do not run in the background, "
                          "so there is no stream to resume, and no extra output data is offered", name)
