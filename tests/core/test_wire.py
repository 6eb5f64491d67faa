"""The wire contract: the gateway's fast encoder writes exactly what the model encoder writes."""

from __future__ import annotations

import orjson
import pytest

from liftoff.core import wire
from liftoff.core.wire import GenerationParams, WorkItem


def test_fast_encoder_matches_the_model() -> None:
    fields = dict(id="w:1", reply_to="ns:replies:w", stream=True, texts=["a", "b"], batched=True,
                  enqueued_ms=1, deadline_ms=2)
    params = {"max_new_tokens": 5, "sampling_topk": 3, "json_schema": {"type": "object"}}
    fast = wire.encode_work(params=params, **fields)
    model = wire.encode(WorkItem(params=GenerationParams(**params), **fields))
    assert wire.decode_work(fast).model_copy(update={"v": 0}) == wire.decode_work(model).model_copy(update={"v": 0})
    assert orjson.loads(fast[wire.FIELD])["v"] == 2  # nothing of version 3 in it: older readers still serve it


def test_items_with_tools_or_a_lark_grammar_are_version_3() -> None:
    base = dict(id="w:5", reply_to="r", stream=False, texts=[], batched=True, enqueued_ms=1, deadline_ms=2)
    tools = [{"type": "function", "function": {"name": "f"}}]
    fast = wire.encode_work(params={}, chats=[[{"role": "user", "content": "hi"}]], tools=tools, **base)
    assert orjson.loads(fast[wire.FIELD])["v"] == 3
    assert wire.decode_work(fast).tools == tools
    fast = wire.encode_work(params={"lark_grammar": 'start: "a"'}, **base)
    assert orjson.loads(fast[wire.FIELD])["v"] == 3 and wire.decode_work(fast).params.lark_grammar == 'start: "a"'


def test_items_with_stop_strings_are_version_5() -> None:
    base = dict(id="w:7", reply_to="r", stream=False, texts=["a"], batched=False, enqueued_ms=1, deadline_ms=2)
    fast = wire.encode_work(params={"stop": ["\n\n", "END"]}, images=["data"], **base)
    assert orjson.loads(fast[wire.FIELD])["v"] == 5 and wire.decode_work(fast).params.stop == ["\n\n", "END"]


def test_n_copies_travel_once_and_are_made_at_the_reader() -> None:
    base = dict(id="w:8", reply_to="r", stream=False, batched=True, enqueued_ms=1, deadline_ms=2)
    fast = wire.encode_work(params={}, texts=["p0", "p1"], n=3, **base)
    assert orjson.loads(fast[wire.FIELD])["v"] == 6 and orjson.loads(fast[wire.FIELD])["texts"] == ["p0", "p1"]
    item = wire.decode_work(fast)
    assert item.texts == ["p0", "p0", "p0", "p1", "p1", "p1"] and item.n == 1
    chat = [{"role": "user", "content": "hi"}]
    item = wire.decode_work(wire.encode_work(params={}, texts=[], chats=[chat], n=2, **base))
    assert item.chats == [chat, chat] and item.texts == []
    single = wire.encode_work(params={}, texts=["p"], **base)
    assert "n" not in orjson.loads(single[wire.FIELD]) and orjson.loads(single[wire.FIELD])["v"] == 2


def test_absent_parameters_take_their_defaults_at_the_reader() -> None:
    fast = wire.encode_work(id="w:2", reply_to="r", stream=False, texts=["x"], batched=False, params={},
                            enqueued_ms=1, deadline_ms=2)
    assert wire.decode_work(fast).params == GenerationParams()


def test_undecodable_entries_still_name_their_sender() -> None:
    assert wire.peek_ids({wire.FIELD: b'{"id": "w:3", "reply_to": "r", "v": 99}'}) == ("w:3", "r")
    assert wire.peek_ids({b"other": b"x"}) == (None, None)


def test_chats_travel_to_the_reader_with_their_flag() -> None:
    chats = [[{"role": "user", "content": "hi"}]]
    fast = wire.encode_work(id="w:4", reply_to="r", stream=False, texts=[], batched=True, params={},
                            enqueued_ms=1, deadline_ms=2, chats=chats, add_generation_prompt=False)
    item = wire.decode_work(fast)
    assert item.chats == chats and item.add_generation_prompt is False
    assert wire.decode_work(fast) == wire.decode_work(wire.encode(item))


def test_a_beat_is_a_reply_of_its_own_kind() -> None:
    beat = wire.Reply(id="w:5", kind="alive", attempt=2, reader_id="r-0")
    assert wire.decode_reply(wire.encode(beat)) == beat


def test_a_reply_kind_this_version_does_not_know_is_refused_not_guessed() -> None:
    # How a gateway older than `alive` takes a beat: a ValueError, which its reply listener logs and drops.
    with pytest.raises(ValueError):
        wire.decode_reply({wire.FIELD: b'{"v": 2, "id": "w:6", "kind": "newer"}'})
