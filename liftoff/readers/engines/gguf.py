"""GGUF model files (llama.cpp's and Ollama's format), served as ordinary transformers models.

transformers reads a GGUF file (config, tokenizer, chat template and weights, dequantized) for the architectures it
knows (`GGUF_SUPPORTED_ARCHITECTURES`). Dequantizing takes seconds to minutes, so the first load writes a plain
safetensors copy, with its tokenizer and a record of the source (`SOURCE_RECORD`: path, size, modification time,
SHA-256), into `<repository_path>/.gguf/<file stem>-<digest of its path>/`, and later loads read that copy. A source
whose size or content changed is converted again. The copy holds float32 weights (what dequantizing gives, so
nothing is rounded twice); the reader casts them to its `dtype` when it loads them.

A file that is not GGUF, or whose architecture transformers cannot read, is refused with one line naming the reason
or the architecture (an `EngineLoadError`: the reader fails with it in `/status`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from liftoff.readers.engines.base import EngineLoadError, failure_reason

log = logging.getLogger(__name__)

SUFFIX = ".gguf"
CONVERTED_DIR = ".gguf"  # under repository_path; a dot folder, so the fit engine's scan lists the file, not the copy
SOURCE_RECORD = "liftoff-gguf-source.json"
GGUF_MAGIC = b"GGUF"
Progress = Callable[[str], None]


def is_gguf_name(model_name: str) -> bool:
    """Whether `model_name` names a GGUF file: a path or repository name ending in .gguf, or
    `<hub repo>:<file>.gguf`."""
    return model_name.strip().lower().endswith(SUFFIX)


def hub_file(model_name: str) -> tuple[str, str] | None:
    """`<hub repo>:<file>.gguf` (the form `transformers serve` takes) as (repo, file); None for other names."""
    repo, sep, filename = model_name.partition(":")
    if not sep or not repo or not filename or repo.startswith("/"):
        return None
    return repo, filename


def architecture(path: Path) -> str:
    """The `general.architecture` of a GGUF file (reading its header only)."""
    with path.open("rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise EngineLoadError(f"{str(path)!r} is not a GGUF file (it does not start with the GGUF magic bytes)")
    try:
        from gguf import GGUFReader

        reader = GGUFReader(path)
        field = reader.fields["general.architecture"]
        return bytes(field.parts[field.data[0]]).decode()
    except EngineLoadError:
        raise
    except Exception as exc:  # the reader raises many kinds on a damaged file (ValueError, KeyError, struct.error)
        raise EngineLoadError(f"GGUF file {str(path)!r} cannot be read: {failure_reason(exc)}") from exc


def parameter_count(path: Path) -> int:
    """The parameters a GGUF file holds (its tensors' shapes; no tensor data is read)."""
    from gguf import GGUFReader

    return sum(math.prod(int(d) for d in t.shape) for t in GGUFReader(path).tensors)


def converted_copy(source: Path, repository_path: str | Path, progress: Progress | None = None,
                   generation: dict[str, Any] | None = None) -> Path:
    """The directory of `source`'s plain transformers copy, converting it first when there is none or the source
    changed. Concurrent readers of one file wait for the one that converts (a lock beside the copy). `generation`:
    fields for the copy's generation_config.json (a bundled model's sampling defaults)."""
    source = source.resolve()
    if not source.is_file():
        raise EngineLoadError(f"GGUF file {str(source)!r} does not exist")
    root = Path(repository_path).expanduser().resolve() / CONVERTED_DIR
    tag = hashlib.sha256(str(source).encode()).hexdigest()[:10]
    target = root / f"{source.stem}-{tag}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = (root / f"{target.name}.lock").open("w")
    except OSError as exc:
        raise EngineLoadError(f"cannot write the converted copy of {source.name} under {str(root)!r}: {exc}") from exc
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _is_current(target, source, generation):
            log.info("GGUF %s: loading its converted copy %s", source.name, target)
            return target
        _convert(source, target, progress, generation)
        return target


def _stat(source: Path) -> dict[str, Any]:
    st = source.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _sha256(source: Path) -> str:
    digest = hashlib.sha256()
    with source.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _is_current(target: Path, source: Path, generation: dict[str, Any] | None = None) -> bool:
    """The copy exists and was made from this very file (same size and time, or, touched since, the same content),
    with these generation defaults."""
    try:
        record = json.loads((target / SOURCE_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if record.get("generation") != generation:
        return False
    stat = _stat(source)
    if record.get("size") != stat["size"]:
        return False
    if record.get("mtime_ns") == stat["mtime_ns"]:
        return True
    if record.get("sha256") != _sha256(source):
        return False
    (target / SOURCE_RECORD).write_text(json.dumps({**record, **stat}, indent=2), encoding="utf-8")
    return True


def _convert(source: Path, target: Path, progress: Progress | None, generation: dict[str, Any] | None) -> None:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    readable = [a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer")]
    arch = architecture(source)
    if arch not in readable:
        raise EngineLoadError(f"GGUF file {source.name!r} holds a {arch!r} model, which transformers cannot read from "
                              f"GGUF (it reads: {', '.join(readable)})")
    started = time.monotonic()
    say = progress or (lambda message: None)
    message = f"converting GGUF {source.name} ({source.stat().st_size / 1e6:.0f} MB, {arch}) into {target}; " \
              f"later starts load the copy"
    log.info(message)
    say(message)
    staging = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
        say(f"converting GGUF {source.name}: dequantizing the weights")
        model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name, dtype="float32")
        # What it is now: a plain float32 checkpoint, no longer a GGUF-quantized one.
        model.hf_quantizer = None
        with contextlib.suppress(AttributeError):
            del model.config.quantization_config
        model.config.architectures = [type(model).__name__]
        for name, value in (generation or {}).items():
            setattr(model.generation_config, name, value)
        say(f"converting GGUF {source.name}: writing the copy")
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        del model
    except EngineLoadError:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    except Exception as exc:  # a damaged file fails anywhere in transformers' reader; the reason is what matters
        shutil.rmtree(staging, ignore_errors=True)
        raise EngineLoadError(f"GGUF file {source.name!r} could not be converted: {failure_reason(exc)}") from exc
    record = {"source": str(source), **_stat(source), "sha256": _sha256(source), "architecture": arch,
              "generation": generation, "converted_s": round(time.monotonic() - started, 1)}
    (staging / SOURCE_RECORD).write_text(json.dumps(record, indent=2), encoding="utf-8")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)  # whole or not at all: a conversion cut short leaves no copy that looks finished
    log.info("GGUF %s converted in %.1f s", source.name, record["converted_s"])

