"""A reader's config at the boundary: names that become keys and paths, and reference fields for features this
server does not have (refused by name rather than accepted and ignored)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from liftoff.core.reader_config import ReaderConfig


@pytest.mark.parametrize("field", ["consumer_group", "reader_id"])
@pytest.mark.parametrize("value", ["../x", "a/b", "g:adapter", "", "-x", ".hidden", "sp ace", "x" * 97])
def test_names_that_become_keys_and_paths_are_checked(field: str, value: str) -> None:
    if field == "reader_id" and value == "":
        assert ReaderConfig(reader_id="").reader_id == ""  # unset: the supervisor or the deployment names it
        return
    with pytest.raises(ValidationError) as exc:
        ReaderConfig(**{field: value})
    (error,) = exc.value.errors()
    assert error["loc"] == (field,) and field in error["msg"], error


def test_ordinary_names_pass() -> None:
    config = ReaderConfig(consumer_group="primary", reader_id="host-a.primary_0")
    assert (config.consumer_group, config.reader_id) == ("primary", "host-a.primary_0")


@pytest.mark.parametrize(("settings", "named"), [
    ({"tensor_parallel": 2}, "tensor_parallel"),
    ({"nvlink_unavailable": True}, "nvlink_unavailable"),
    ({"disable_static": False}, "disable_static"),
    ({"disable_cuda_graph": False}, "disable_cuda_graph"),
    ({"cuda_graph_cache_capacity": 8}, "cuda_graph_cache_capacity"),
    ({"redis_host": "redis-1"}, "redis_host"),
])
def test_fields_for_features_this_server_lacks_are_refused_by_name(settings: dict[str, object], named: str) -> None:
    with pytest.raises(ValidationError, match=rf"not supported by this server, remove: {named} \("):
        ReaderConfig(**settings)


def test_values_that_ask_for_nothing_more_are_accepted() -> None:
    config = ReaderConfig(tensor_parallel=1, disable_cuda_graph=True, cuda_visible_devices="0, 2")
    assert config.cuda_visible_devices == "0,2"
    assert ReaderConfig(cuda_visible_devices="").cuda_visible_devices == ""
    with pytest.raises(ValidationError, match="cuda_visible_devices"):
        ReaderConfig(cuda_visible_devices="first")
