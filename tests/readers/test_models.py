"""Model resolution and model-type detection, offline."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

from liftoff.readers.engines.base import EngineLoadError
from liftoff.readers.engines.models import bundled_model_path, detect_model_type, resolve_model


def fake_model(path: Path, architectures: list[str]) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"architectures": architectures}))
    return path


def test_local_directory_and_repository(tmp_path: Path) -> None:
    model = fake_model(tmp_path / "somewhere" / "m", ["LlamaForCausalLM"])
    assert resolve_model(str(model), tmp_path / "repo") == model.resolve()
    in_repo = fake_model(tmp_path / "repo" / "org" / "name", ["LlamaForCausalLM"])
    assert resolve_model("org/name", tmp_path / "repo") == in_repo.resolve()


def test_bundled_minilm(tmp_path: Path) -> None:
    path = resolve_model("sentence-transformers/all-MiniLM-L6-v2", tmp_path)
    assert path == bundled_model_path("sentence-transformers/all-MiniLM-L6-v2")
    assert (path / "model.safetensors").is_file()
    assert detect_model_type(path) == "embedding"


def test_missing_model_offline_says_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(EngineLoadError) as info:
        resolve_model("nobody/no-such-model", tmp_path / "repo")
    message = str(info.value)
    assert "\n" not in message
    assert "nobody/no-such-model" in message and "HF_HUB_OFFLINE" in message
    assert str(tmp_path / "repo" / "nobody" / "no-such-model") in message
    assert not (tmp_path / "repo" / "nobody" / "no-such-model").exists()


def test_missing_local_directory(tmp_path: Path) -> None:
    with pytest.raises(EngineLoadError, match="does not exist"):
        resolve_model(str(tmp_path / "nope"), tmp_path)


def test_download_failure_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    import huggingface_hub

    def unreachable(**kwargs):
        raise ConnectionError("cannot reach huggingface.co")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(EngineLoadError) as info:
        resolve_model("org/model", tmp_path / "repo")
    assert "could not be downloaded" in str(info.value) and "cannot reach" in str(info.value)
    assert not (tmp_path / "repo" / "org" / "model").exists()


def test_model_types(tmp_path: Path) -> None:
    assert detect_model_type(fake_model(tmp_path / "g", ["LlamaForCausalLM"])) == "generation"
    assert detect_model_type(fake_model(tmp_path / "c", ["BertForSequenceClassification"])) == "classification"
    assert detect_model_type(fake_model(tmp_path / "e", ["BertModel"])) == "embedding"
    assert detect_model_type(tmp_path / "g", override="embedding") == "embedding"
    with pytest.raises(EngineLoadError):
        detect_model_type(tmp_path / "g", override="vision")
    with pytest.raises(EngineLoadError, match=r"no config\.json"):
        detect_model_type(tmp_path)
