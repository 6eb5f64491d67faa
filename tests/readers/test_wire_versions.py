"""A reader serves every wire version up to its own and refuses newer ones with an error its sender can see."""

from __future__ import annotations

import time

import orjson
import redis

from liftoff.core import wire
from liftoff.core.keys import Keys

from support.servers import ServerFactory


def _answer(client: redis.Redis, reply_to: str, timeout_s: float = 20.0) -> wire.Reply:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for _, entries in client.xread({reply_to: "0"}, count=10, block=500) or []:
            for _, fields in entries:
                reply = wire.decode_reply(fields)
                if reply.kind in ("done", "error"):
                    return reply
    raise AssertionError(f"no answer on {reply_to}")


def test_older_versions_are_served_and_newer_ones_refused(make_server: ServerFactory, redis_url: str) -> None:
    server = make_server(readers=[{"model_name": "echo", "consumer_group": "primary", "reader_id": "v-0"}])
    keys = Keys(server.settings["redis_namespace"])
    client = redis.Redis.from_url(redis_url)
    now = wire.now_ms()
    for version, request_id in ((1, "t:old"), (wire.WIRE_VERSION + 1, "t:new")):
        item = {"v": version, "id": request_id, "reply_to": keys.replies("primary", request_id), "texts": ["one two"],
                "enqueued_ms": now, "deadline_ms": now + 60_000}
        client.xadd(keys.requests("primary"), {wire.FIELD: orjson.dumps(item)})
    old = _answer(client, keys.replies("primary", "t:old"))
    assert old.kind == "done" and old.texts == ["one two"]
    new = _answer(client, keys.replies("primary", "t:new"))
    assert new.kind == "error" and "wire version" in (new.message or "")
