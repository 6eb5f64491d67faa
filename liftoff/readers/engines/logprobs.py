"""Log probabilities of generated tokens, in the entry shape the OpenAI port answers with.

An entry: {"token": text, "logprob": float, "bytes": UTF-8 bytes of the text, "top_logprobs": [entries without
top_logprobs, most likely first]}, plus "offset", where the token's text begins in the generated text (the gateway
uses it to send entries with their text and to cut them with a stop string, and drops it). A token's text is the
token decoded alone: a token holding part of a multi-byte character shows as U+FFFD, and so do its bytes. Log
probabilities are those of the model's own distribution at that step (a log-softmax of its logits, before
temperature, penalties and grammar masks), as the field's other servers report by default; the chosen token may
therefore be one the unprocessed model thought unlikely.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the echo engine builds entries too, and runs without torch
    import torch


def entry(token: str, logprob: float, top: list[tuple[str, float]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}
    if top is not None:
        out["top_logprobs"] = [{"token": t, "logprob": lp, "bytes": list(t.encode("utf-8"))} for t, lp in top]
    return out


class TokenTexts:
    """Each token id's own text (decoded alone), cached: the same ids come back step after step."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._texts: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self._texts.get(token_id)
        if text is None:
            text = self._texts[token_id] = self._tokenizer.decode([token_id], skip_special_tokens=False,
                                                                  clean_up_tokenization_spaces=False)
        return text


def step_entries(texts: TokenTexts, logprobs: torch.Tensor, chosen: torch.Tensor,
                 tops: list[int]) -> list[dict[str, Any]]:
    """One entry per row of `logprobs` ([rows, vocab] log-softmax): its `chosen` token (a [rows] tensor on the same
    device) and its `tops[i]` most likely."""
    picked = logprobs.gather(1, chosen[:, None]).squeeze(1).tolist()
    k = min(max(tops, default=0), logprobs.shape[1])
    top_values: list[list[float]] = []
    top_ids: list[list[int]] = []
    if k > 0:
        values, ids = logprobs.topk(k, dim=-1)
        top_values, top_ids = values.tolist(), ids.tolist()
    out = []
    for i, (token, logprob) in enumerate(zip(chosen.tolist(), picked, strict=True)):
        top = [(texts(t), v) for t, v in zip(top_ids[i][: tops[i]], top_values[i][: tops[i]], strict=True)] \
            if k > 0 else []
        out.append(entry(texts(token), logprob, top))
    return out
