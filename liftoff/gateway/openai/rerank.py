"""Rerank and score (Cohere/Jina and vLLM shapes) over cross-encoder and embedding groups.

`POST /v1/rerank` and `/v2/rerank` order documents by relevance to a query; `POST /v1/score` scores text pairs
(1-to-1, 1-to-N, N-to-N). How a pair is scored follows the group's readers' `model_type` in the registry:

* `classification` (a cross-encoder): every pair goes to the readers in one `classify` call; the score is the
  probability the model gives relevance: the sigmoid of a one-logit model's logit (what sentence-transformers'
  `CrossEncoder` ranks by), or for a two-label model the softmax probability of its second (positive) label. A
  classifier with more labels names no relevance label (NLI's three, say) and is refused.
* `embedding`: the distinct texts go to the readers in one `embed` call; the score is the cosine similarity of the
  two texts' vectors.

A generation group is refused (400 naming its type); see docs/rerank.md.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    Discriminator,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    Tag,
    field_validator,
    model_validator,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from liftoff.core.errors import ApiError
from liftoff.gateway.chat.errors import OpenAIError, from_api_error, invalid
from liftoff.gateway.chat.readers import ReaderApi
from liftoff.gateway.rules import Strict, rule
from liftoff.gateway.services import encode
from liftoff.http.context import Gateway
from liftoff.http.openapi import Doc, documented
from liftoff.http.parsing import read_json_object
from liftoff.http.responses import json_response

Scorer = Literal["classification", "embedding"]
SCORERS: tuple[Scorer, ...] = ("classification", "embedding")
S = TypeVar("S", bound=Strict)


class RerankDocument(Strict):
    """A document as an object (Jina, Cohere v1): its `text` only; other fields are refused, not ignored."""

    text: StrictStr


def _document_kind(v: Any) -> str | None:
    return "str" if isinstance(v, str) else "dict" if isinstance(v, (dict, RerankDocument)) else None


# The tags are the names `from_validation` leaves out of a parameter's path: a bad field is `documents.2.text`.
Document = Annotated[
    Annotated[StrictStr, Tag("str")] | Annotated[RerankDocument, Tag("dict")],
    Discriminator(_document_kind, custom_error_type="document",
                  custom_error_message="a document is a string or an object with a text field"),
]


class RerankRequest(Strict):
    model: StrictStr
    query: StrictStr
    documents: list[Document]
    top_n: StrictInt | None = Field(default=None, ge=0)  # None or 0 (vLLM's default): every document
    return_documents: StrictBool = True  # vLLM and Jina return them; Cohere v1 defaults to false

    @field_validator("documents")
    @classmethod
    def _documents(cls, v: list[Document]) -> list[Document]:
        rule(len(v) > 0, "documents must hold at least one document", v)
        return v

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class ScoreRequest(Strict):
    """`text_1` and `text_2`: one string or a list each, paired as vLLM pairs them: 1-to-1, 1-to-N (the one
    `text_1` against every `text_2`) or N-to-N (item by item)."""

    model: StrictStr
    text_1: StrictStr | list[StrictStr]
    text_2: StrictStr | list[StrictStr]

    @field_validator("text_1", "text_2")
    @classmethod
    def _non_empty(cls, v: str | list[str]) -> str | list[str]:
        rule(not isinstance(v, list) or len(v) > 0, "a list of texts must not be empty", v)
        return v

    @model_validator(mode="after")
    def _paired(self) -> ScoreRequest:
        first, second = len(self.firsts), len(self.seconds)
        if first != 1 and first != second:
            raise invalid(f"text_1 holds {first} texts and text_2 {second}: they pair 1-to-1, 1-to-N or N-to-N "
                          "(text_1 one text, or as many texts as text_2)", "text_2")
        return self

    @property
    def firsts(self) -> list[str]:
        return [self.text_1] if isinstance(self.text_1, str) else self.text_1

    @property
    def seconds(self) -> list[str]:
        return [self.text_2] if isinstance(self.text_2, str) else self.text_2

    def pairs(self) -> list[tuple[str, str]]:
        firsts = self.firsts * len(self.seconds) if len(self.firsts) == 1 else self.firsts
        return list(zip(firsts, self.seconds, strict=True))


def parse_strict(model: type[S], data: dict[str, Any]) -> S:
    """`data` as `model`; a field the model does not define is refused by name, as the port refuses elsewhere."""
    unknown = sorted(k for k in data if k not in model.model_fields)
    if unknown:
        raise invalid(f"Unrecognized request argument supplied: {', '.join(unknown)}", unknown[0])
    return model.model_validate(data)


_RESULT = {"type": "object", "required": ["index", "relevance_score"],
           "properties": {"index": {"type": "integer"}, "relevance_score": {"type": "number"},
                          "document": {"type": "object", "required": ["text"],
                                       "properties": {"text": {"type": "string"}}}}}
RERANK_ANSWER = {"type": "object", "required": ["id", "model", "results", "usage"],
                 "properties": {"id": {"type": "string"}, "model": {"type": "string"},
                                "results": {"type": "array", "items": _RESULT},
                                "usage": {"type": "object", "required": ["total_tokens"],
                                          "properties": {"total_tokens": {"type": "integer"}}}}}
SCORE_ANSWER = {"type": "object", "required": ["id", "object", "created", "model", "data", "usage"],
                "properties": {"id": {"type": "string"}, "object": {"const": "list"},
                               "created": {"type": "integer"}, "model": {"type": "string"},
                               "data": {"type": "array", "items": {
                                   "type": "object", "required": ["index", "object", "score"],
                                   "properties": {"index": {"type": "integer"}, "object": {"const": "score"},
                                                  "score": {"type": "number"}}}},
                               "usage": {"type": "object", "required": ["prompt_tokens", "total_tokens"],
                                         "properties": {"prompt_tokens": {"type": "integer"},
                                                        "total_tokens": {"type": "integer"}}}}}


def rerank_routes(gw: Gateway) -> list[Route]:
    api = RerankApi(gw)
    rerank = Doc(summary="order documents by relevance to a query (cross-encoder or embedding model)",
                 body=RerankRequest, ok_schema=RERANK_ANSWER)
    return [
        documented(Route("/v1/rerank", api.rerank, methods=["POST"]), rerank),
        documented(Route("/v2/rerank", api.rerank, methods=["POST"]), rerank),
        documented(Route("/v1/score", api.score, methods=["POST"]),
                   Doc(summary="score text pairs, 1-to-1, 1-to-N or N-to-N (cross-encoder or embedding model)",
                       body=ScoreRequest, ok_schema=SCORE_ANSWER)),
    ]


class RerankApi(ReaderApi):
    async def rerank(self, request: Request) -> Response:
        req = parse_strict(RerankRequest, await read_json_object(request))
        documents = req.texts()
        scores, tokens = await self._score(req.model, [(req.query, d) for d in documents], "documents")
        order = sorted(range(len(documents)), key=lambda i: scores[i], reverse=True)[:req.top_n or None]
        results = []
        for i in order:
            result: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
            if req.return_documents:
                result["document"] = {"text": documents[i]}
            results.append(result)
        return json_response({"id": f"rerank-{secrets.token_hex(12)}", "model": req.model, "results": results,
                              "usage": {"total_tokens": tokens}})

    async def score(self, request: Request) -> Response:
        req = parse_strict(ScoreRequest, await read_json_object(request))
        scores, tokens = await self._score(req.model, req.pairs(), "text_2")
        return json_response({
            "id": f"score-{secrets.token_hex(12)}", "object": "list", "created": int(time.time()), "model": req.model,
            "data": [{"index": i, "object": "score", "score": s} for i, s in enumerate(scores)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })

    async def _score(self, model: str, pairs: list[tuple[str, str]], param: str) -> tuple[list[float], int]:
        """One score per pair, and the tokens the model read, in one batch to the group's readers."""
        scorer = await self._scorer(model)
        if scorer == "classification":
            self._check_count(len(pairs), f"{len(pairs)} pairs to score", param)
            texts = [t for pair in pairs for t in pair]  # each pair is read whole: its texts count every time
            return await self._with_tokens(model, texts, self._cross_encode(model, pairs))
        distinct = list(dict.fromkeys(t for pair in pairs for t in pair))
        self._check_count(len(distinct), f"{len(distinct)} distinct texts to embed", param)
        return await self._with_tokens(model, distinct, self._cosines(model, pairs, distinct))

    async def _scorer(self, model: str) -> Scorer:
        """How the group scores, from its live readers' `model_type`; 404 / 503 for a group without live readers."""
        await self.readers.pick(model)
        types = sorted({r.info.model_type for r in (await self.readers.live_groups()).get(model, [])})
        if len(types) == 1 and types[0] in SCORERS:
            return types[0]  # type: ignore[return-value]
        raise OpenAIError(400, f"model {model!r} serves {' and '.join(types) or 'no live'} models; rerank and score "
                          "need a cross-encoder (classification) or embedding model", "model", "model_not_supported")

    def _check_count(self, count: int, what: str, param: str) -> None:
        limit = self.gw.settings.max_user_batch_size
        if count > limit:
            raise invalid(f"{what}; the limit (max_user_batch_size) is {limit}", param)

    async def _with_tokens(self, model: str, texts: list[str],
                           scoring: Awaitable[list[float]]) -> tuple[list[float], int]:
        """The scores and, counted while the model runs, the tokens of `texts` by the group's tokenizer (each text
        tokenized once however often it occurs)."""
        by_times: dict[int, list[str]] = {}
        for text, times in Counter(texts).items():
            by_times.setdefault(times, []).append(text)
        scores, *counts = await asyncio.gather(
            scoring, *(self.readers.count_tokens(model, group) for group in by_times.values()))
        return scores, sum(times * count for times, count in zip(by_times, counts, strict=True))

    async def _cross_encode(self, model: str, pairs: list[tuple[str, str]]) -> list[float]:
        results = await self._service(model, lambda: encode.classify(self.gw, model, [], [list(p) for p in pairs],
                                                                     batched=True))
        return [relevance(model, r) for r in results]

    async def _cosines(self, model: str, pairs: list[tuple[str, str]], texts: list[str]) -> list[float]:
        vectors = await self._service(model, lambda: encode.embed(self.gw, model, texts, batched=True))
        by_text = dict(zip(texts, vectors, strict=True))
        return [cosine(by_text[a], by_text[b]) for a, b in pairs]

    async def _service(self, model: str, call: Callable[[], Awaitable[list[Any]]]) -> list[Any]:
        try:
            return await call()
        except ApiError as err:
            raise from_api_error(err, model) from None


def relevance(model: str, result: dict[str, Any]) -> float:
    """A cross-encoder's relevance from one classify result (`scores`: each label's probability, in label order)."""
    labels = list(result["scores"])
    if len(labels) > 2:
        raise OpenAIError(400, f"model {model!r} is a classifier with {len(labels)} labels {labels}; rerank and "
                          "score need a cross-encoder with one relevance logit or two labels (the second "
                          "relevant)", "model", "model_not_supported")
    return float(result["scores"][labels[-1]])


def cosine(a: list[float], b: list[float]) -> float:
    """Cosine similarity; 0 for a zero vector (it points nowhere)."""
    norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return sum(x * y for x, y in zip(a, b, strict=True)) / norms if norms else 0.0

