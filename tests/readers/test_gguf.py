"""GGUF files in process: what is refused before any conversion (not GGUF, an architecture transformers can't read),
how a converted copy is found again, and when a changed source is converted again."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from liftoff.core.model_names import check_model_name
from liftoff.readers.engines import gguf
from liftoff.readers.engines.base import EngineLoadError
from liftoff.readers.engines.models import resolve_model


def write_gguf(path: Path, arch: str) -> Path:
    """A GGUF file with a header and one small tensor, and nothing a model needs."""
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_gguf_names_and_the_hub_form() -> None:
    assert gguf.is_gguf_name("/models/x.Q4_K_M.gguf") and gguf.is_gguf_name("org/repo:file.GGUF")
    assert not gguf.is_gguf_name("org/model")
    assert gguf.hub_file("org/repo:sub/file.gguf") == ("org/repo", "sub/file.gguf")
    assert gguf.hub_file("/abs/file.gguf") is None and gguf.hub_file("file.gguf") is None
    assert check_model_name("org/repo:file.gguf") == "org/repo:file.gguf"
    with pytest.raises(ValueError, match="model_name"):
        check_model_name("org/repo:../x.gguf")


def test_an_architecture_transformers_cannot_read_is_refused_by_name(tmp_path: Path) -> None:
    source = write_gguf(tmp_path / "odd.gguf", "rwkv6")
    assert gguf.architecture(source) == "rwkv6"
    with pytest.raises(EngineLoadError, match=r"holds a 'rwkv6' model, which transformers cannot read.*llama"):
        gguf.converted_copy(source, tmp_path / "repo")
    assert not any((tmp_path / "repo" / gguf.CONVERTED_DIR).glob("odd*/"))  # no half copy left behind


def test_a_file_that_is_not_gguf_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"PK\x03\x04 a zip, not a model")
    with pytest.raises(EngineLoadError, match="is not a GGUF file"):
        gguf.converted_copy(bad, tmp_path / "repo")


def test_a_gguf_name_finds_its_file_in_the_repository(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    write_gguf(tmp_path / "models" / "odd.gguf", "rwkv6")
    with pytest.raises(EngineLoadError, match=r"'odd\.gguf' holds a 'rwkv6' model"):  # found, read, refused
        resolve_model("models/odd.gguf", tmp_path)
    (tmp_path / "org" / "repo").mkdir(parents=True)  # <hub repo>:<file>.gguf: <repository>/<repo>/<file> first
    write_gguf(tmp_path / "org" / "repo" / "odd.gguf", "rwkv6")
    with pytest.raises(EngineLoadError, match="holds a 'rwkv6' model"):
        resolve_model("org/repo:odd.gguf", tmp_path)


def test_missing_files_and_names_outside_the_repository_are_refused(tmp_path: Path) -> None:
    with pytest.raises(EngineLoadError, match="does not exist"):
        resolve_model(str(tmp_path / "nowhere.gguf"), tmp_path)
    with pytest.raises(EngineLoadError, match="not in the model repository"):
        resolve_model("absent/file.gguf", tmp_path)


def test_a_copy_is_current_until_its_source_changes(tmp_path: Path) -> None:
    source = write_gguf(tmp_path / "m.gguf", "llama")
    target = tmp_path / "copy"
    target.mkdir()
    record = {"source": str(source), **gguf._stat(source), "sha256": gguf._sha256(source)}
    (target / gguf.SOURCE_RECORD).write_text(json.dumps(record))
    assert gguf._is_current(target, source)
    os.utime(source, ns=(1, 1))  # touched, same content: still current, and the record takes the new time
    assert gguf._is_current(target, source)
    assert json.loads((target / gguf.SOURCE_RECORD).read_text())["mtime_ns"] == 1
    with source.open("r+b") as f:  # same size, other content
        f.seek(-4, os.SEEK_END)
        f.write(b"\x01\x02\x03\x04")
    os.utime(source, ns=(2, 2))
    assert not gguf._is_current(target, source)
    with source.open("ab") as f:  # another size
        f.write(b"\x00")
    assert not gguf._is_current(target, source)
