"""The `redis_url` forms (one Redis, or a cluster named by its seed nodes), refused clearly when wrong, and the key
layout that keeps each script and MULTI/EXEC in one hash slot."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from redis.crc import key_slot

from liftoff.core.keys import Keys
from liftoff.core.redis_client import check_url, parse_cluster_url, redact
from liftoff.core.settings import Settings


def test_cluster_urls_name_seed_nodes_and_credentials() -> None:
    address = parse_cluster_url("rediss+cluster://app:s%40cret@10.0.0.1:7000,[::1]:7001")
    assert address.seeds == [("10.0.0.1", 7000), ("::1", 7001)]
    assert (address.username, address.password, address.tls) == ("app", "s@cret", True)
    for url in ("redis://h:6379/0", "rediss://h:6380", "unix:///run/redis.sock", "redis+cluster://h:7000"):
        assert check_url(url) == url


@pytest.mark.parametrize(("url", "says"), [
    ("http://h:6379", "must start with redis://"),
    ("redis+cluster://h1:7000,h2", "each seed node of a redis+cluster:// URL is host:port; given 'h2'"),
    ("redis+cluster://h1:70000", "given 'h1:70000'"),
    ("redis+cluster://h1:7000/2", "a cluster has one database"),
])
def test_a_wrong_redis_url_is_refused_by_name(url: str, says: str) -> None:
    with pytest.raises(ValidationError) as exc:
        Settings(redis_url=url, readers=[])
    error = exc.value.errors()[0]
    assert error["loc"] == ("redis_url",) and says in error["msg"], error


def test_passwords_are_redacted_from_both_forms() -> None:
    assert redact("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert redact("redis+cluster://app:pw@a:1,b:2") == "redis+cluster://app:***@a:1,b:2"
    assert redact("redis+cluster://a:1,b:2") == "redis+cluster://a:1,b:2"


def test_one_groups_keys_share_a_slot_and_groups_spread() -> None:
    keys = Keys("ns")
    for group in ("primary", "embed", "@reader-0", "ld-1234"):
        slots = {key_slot(k.encode()) for k in (keys.requests(group), keys.replies(group, "host-1-abc"),
                                                  keys.dlq(group), keys.stat(group, "completed"), keys.cancel(group))}
        assert len(slots) == 1, (group, slots)
    assert len({key_slot(keys.requests(f"g{i}").encode()) for i in range(50)}) > 40  # not all under one tag
    assert key_slot(keys.deployment_scale.encode()) == key_slot(keys.deployments.encode())
