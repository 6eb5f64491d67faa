"""The Takeoff request kinds on the services: a Takeoff body (`liftoff.gateway.takeoff.protocol`) in, the Takeoff
answer's shape out.

The ports that take Takeoff bodies share these: the inference port, Vertex and Snowflake (an instance or a row is
a Takeoff body), and live deployments' `transformJson` (`generate_for_group`, handed to the management app by the
composition point, liftoff.entry.apps).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from liftoff.core.errors import from_validation
from liftoff.core.wire import Reply
from liftoff.gateway.services import encode, generate
from liftoff.gateway.takeoff.protocol import ClassifyRequest, EmbedRequest, GenerateRequest
from liftoff.http.context import Gateway

DEFAULT_GROUP = "primary"


def generation(req: GenerateRequest) -> generate.Generation:
    """`req` for the generate service: its texts (a user batch when `text` is a list), for its consumer group."""
    text = req.text
    if isinstance(text, list):
        prompts = [(f"text[{i}]", len(t.encode())) for i, t in enumerate(text)]
        return generate.Generation(req.consumer_group or DEFAULT_GROUP, text, req.params(), True, len(text), prompts)
    return generate.Generation(req.consumer_group or DEFAULT_GROUP, [text], req.params(), False, 1,
                               [("text", len(text.encode()))])


def generate_answer(req: GenerateRequest, reply: Reply) -> dict[str, Any]:
    """The /generate answer: `text` (a list for a user batch) and, when asked for, `metadata` shaped alike."""
    texts = reply.texts or []
    answer: dict[str, Any] = {"text": texts if req.batched else texts[0]}
    if reply.metadata is not None:
        answer["metadata"] = reply.metadata if req.batched else reply.metadata[0]
    return answer


async def generate_takeoff(gw: Gateway, req: GenerateRequest) -> dict[str, Any]:
    """`req` generated whole, answered in the /generate shape."""
    return generate_answer(req, await generate.generate(gw, generation(req)))


async def generate_for_group(gw: Gateway, group: str, data: dict[str, Any], field_prefix: str = "") -> dict[str, Any]:
    """A /generate body run on `group` whatever group it names, answered in the /generate shape (the live
    deployments' `transformJson`). Validation errors name fields under `field_prefix`."""
    try:
        req = GenerateRequest.model_validate({**data, "consumer_group": group})
    except ValidationError as exc:
        raise from_validation(exc, field_prefix) from None
    return await generate_takeoff(gw, req)


async def embed_takeoff(gw: Gateway, req: EmbedRequest) -> dict[str, Any]:
    """The /embed answer: `result`, one vector (a list of them for a user batch)."""
    vectors = await encode.embed(gw, req.consumer_group or DEFAULT_GROUP, req.texts, req.batched)
    return {"result": vectors if req.batched else vectors[0]}


async def classify_takeoff(gw: Gateway, req: ClassifyRequest) -> dict[str, Any]:
    """The /classify answer: `result`, one classification (a list of them for a list of texts or pairs)."""
    results = await encode.classify(gw, req.consumer_group or DEFAULT_GROUP, req.texts, req.pairs, req.batched)
    return {"result": results if req.batched else results[0]}
