"""How LoRA adapters are named: a reader's `loras` entries, and the OpenAI port's `<group>:<adapter>` model names.

An entry is `SOURCE` or `NAME=SOURCE`; SOURCE is an adapter directory (absolute), a name inside repository_path, or
a Hugging Face id, resolved like a model_name (liftoff.readers.engines.models.resolve_model). Without NAME the adapter
is named
after SOURCE's last part. A name is what requests pick (`lora_id`, `model: "<group>:<adapter>"`), so it holds no
':' or '/'.
"""

from __future__ import annotations

import re

from liftoff.core.model_names import check_model_name

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SEPARATOR = ":"  # between a consumer group and an adapter in an OpenAI model name


def check_adapter_name(name: str, field: str = "lora name") -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"{field} must be 1 to 64 letters, digits, '.', '_' or '-' (starting with a letter or "
                         f"digit); given {name!r}")
    return name


def parse_lora(entry: str) -> tuple[str, str]:
    """(name, source) of one `loras` entry; ValueError naming what is wrong."""
    entry = entry.strip()
    name, sep, source = entry.partition("=")
    if not sep:
        source, name = entry, entry.rstrip("/").rsplit("/", 1)[-1]
    source = source.strip()
    check_model_name(source, "lora source")
    return check_adapter_name(name.strip(), f"lora name (of {entry!r})"), source


def parse_loras(entries: list[str]) -> dict[str, str]:
    """name → source, refusing a name given twice."""
    out: dict[str, str] = {}
    for entry in entries:
        name, source = parse_lora(entry)
        if name in out:
            raise ValueError(f"loras: the adapter name {name!r} is given twice ({out[name]!r} and {source!r}); "
                             "name one of them with NAME=SOURCE")
        out[name] = source
    return out


def split_model(model: str) -> tuple[str, str | None]:
    """An OpenAI model name as (consumer group, adapter or None): `group:adapter` picks an adapter of the group."""
    group, sep, adapter = model.rpartition(SEPARATOR)
    return (group, adapter) if sep and group and adapter else (model, None)
