"""What every route that takes a Takeoff generation request shares: the limits, the dispatch, the answer's shape."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from gateway.protocol import GenerateRequest
from liftoff.core.http.errors import Unprocessable, from_validation

if TYPE_CHECKING:
    from liftoff.core.dispatch import Ticket
    from liftoff.core.http.context import Gateway
    from liftoff.core.wire import Reply


def check_count(count: int, max_batch: int) -> None:
    if count > max_batch:
        raise Unprocessable(f"text has {count} items; the limit (max_user_batch_size) is {max_batch}")


def check_limits(req: GenerateRequest, max_batch: int, max_prompt_bytes: int) -> None:
    check_count(len(req.texts), max_batch)
    for index, text in enumerate(req.texts):
        size = len(text.encode())
        if size > max_prompt_bytes:
            where = f"text[{index}]" if req.batched else "text"
            raise Unprocessable(f"{where} is {size} bytes; the limit (max_prompt_string_bytes) is {max_prompt_bytes}")


async def submit_generate(gw: Gateway, req: GenerateRequest, stream: bool = False) -> Ticket:
    """Check `req` against the server's limits and queue it for its consumer group (`primary` when it names none)."""
    settings = gw.settings
    check_limits(req, settings.max_user_batch_size, settings.max_prompt_string_bytes)
    return await gw.dispatcher.submit(req.consumer_group or "primary", req.texts, req.params(), stream=stream,
                                      batched=req.batched)


def generate_answer(req: GenerateRequest, reply: Reply) -> dict[str, Any]:
    """The /generate answer: `text` (a list for a user batch) and, when asked for, `metadata` shaped alike."""
    texts = reply.texts or []
    answer: dict[str, Any] = {"text": texts if req.batched else texts[0]}
    if reply.metadata is not None:
        answer["metadata"] = reply.metadata if req.batched else reply.metadata[0]
    return answer


async def generate_for_group(gw: Gateway, group: str, data: dict[str, Any], field_prefix: str = "") -> dict[str, Any]:
    """A /generate body run on `group` whatever group it names, answered in the /generate shape (the live
    deployments' `transformJson`, management.deployments, calls this through the port-app builder, liftoff.apps).
    Validation errors name fields under `field_prefix`."""
    try:
        req = GenerateRequest.model_validate({**data, "consumer_group": group})
    except ValidationError as exc:
        raise from_validation(exc, field_prefix) from None
    ticket = await submit_generate(gw, req)
    return generate_answer(req, await gw.dispatcher.outcome(ticket))
