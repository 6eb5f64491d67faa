"""A relative model name never leaves the model repository; absolute paths stay an admin's choice."""

from __future__ import annotations

from pathlib import Path

import httpx
import psutil
import pytest
from pydantic import ValidationError

from liftoff.core.reader_config import ReaderConfig
from liftoff.readers.engines.base import EngineLoadError
from liftoff.readers.engines.models import resolve_model

from support.servers import ServerFactory

ESCAPES = ["../../../../etc", "./models/x", "a/../../b", "models/./x", "..", "/", "", "a//b", "a\\..\\b", "~root/x",
           "name with spaces", "x" * 300]


@pytest.mark.parametrize("name", ESCAPES)
def test_names_that_could_leave_the_repository_are_refused(name: str) -> None:
    if name == "/":
        return  # an absolute path: allowed (and not a model directory, which the reader says when it loads)
    with pytest.raises(ValidationError, match="model_name must be an absolute path"):
        ReaderConfig(model_name=name)
    with pytest.raises(ValidationError, match="fallback_model_name must be"):
        ReaderConfig(fallback_model_name=name)


@pytest.mark.parametrize("name", ["echo", "tiny-llama", "Qwen/Qwen2.5-0.5B-Instruct", "org/family/v1.2_final",
                                  "/opt/models/llama", "model.v2"])
def test_repository_names_hub_ids_and_absolute_paths_are_accepted(name: str) -> None:
    assert ReaderConfig(model_name=name).model_name == name


def test_resolution_stays_in_the_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    (repo / "mine").mkdir(parents=True)
    (repo / "mine" / "config.json").write_text("{}")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve_model("mine", repo) == (repo / "mine").resolve()
    assert resolve_model(str(outside), repo) == outside.resolve()  # absolute: taken as it is
    with pytest.raises(EngineLoadError, match="must be an absolute path"):
        resolve_model("../outside", repo)
    with pytest.raises(EngineLoadError, match="downloads are off"):
        resolve_model("outside", repo)  # a directory of that name beside the process is not looked at
    with pytest.raises(EngineLoadError, match="Hugging Face model id"):
        monkeypatch.delenv("HF_HUB_OFFLINE")
        resolve_model("a/b/c", repo)  # not in the repository, and not a hub id: no download is tried


def test_post_reader_with_a_traversal_name_is_a_422(make_server: ServerFactory) -> None:
    server = make_server(reserved_consumers="")
    for name in ("../../../../etc", "./x", "a/../../b"):
        r = httpx.post(server.mgmt + "/reader", json={"model_name": name, "consumer_group": "evil"}, timeout=10)
        assert r.status_code == 422, r.text
        assert "model_name" in r.json()["error"], r.text
    for body, field in (({"consumer_group": "../x"}, "consumer_group"), ({"reader_id": "a/b"}, "reader_id"),
                        ({"tensor_parallel": 2}, "tensor_parallel"), ({"redis_host": "elsewhere"}, "redis_host")):
        r = httpx.post(server.mgmt + "/reader", json={"model_name": "echo", "consumer_group": "evil", **body},
                       timeout=10)
        assert r.status_code == 422 and field in r.json()["error"], r.text
    groups = httpx.get(server.mgmt + "/reader_groups", timeout=10).json()
    assert "evil" not in groups  # nothing was started


def test_cuda_visible_devices_reaches_the_reader_process(make_server: ServerFactory) -> None:
    server = make_server(readers=[{"model_name": "echo", "consumer_group": "primary", "reader_id": "primary-0",
                                   "cuda_visible_devices": "1,0"}], reserved_consumers="")
    environ = psutil.Process(server.reader_pid("primary-0")).environ()
    assert environ.get("CUDA_VISIBLE_DEVICES") == "1,0", environ.get("CUDA_VISIBLE_DEVICES")
