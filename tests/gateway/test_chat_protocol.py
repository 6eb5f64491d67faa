"""The chat request's translation into the readers' generation parameters."""

from __future__ import annotations

from liftoff.gateway.chat.protocol import ChatCompletionRequest


def test_unset_sampling_takes_the_models_defaults_then_openais() -> None:
    ask = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    plain = ChatCompletionRequest.model_validate(ask)
    assert plain.params() | {"return_metadata": True} == {"return_metadata": True, "sampling_temperature": 1.0,
                                                            "sampling_topk": 0}
    assert plain.params({"top_k": 1})["sampling_topk"] == 1 and "sampling_temperature" not in plain.params(
        {"top_k": 1})
    tuned = plain.params({"temperature": 0.7, "top_p": 0.8, "top_k": 20})
    assert (tuned["sampling_temperature"], tuned["sampling_topp"], tuned["sampling_topk"]) == (0.7, 0.8, 20)
    own = ChatCompletionRequest.model_validate({**ask, "temperature": 1.2, "top_p": 0.5}).params({"temperature": 0.7,
                                                                                                 "top_k": 1})
    # a greedy default (top_k 1) gives way to a request that samples
    assert own["sampling_temperature"] == 1.2 and own["sampling_topp"] == 0.5 and own["sampling_topk"] == 0
