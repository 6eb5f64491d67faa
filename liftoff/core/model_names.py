"""What a model name may be: an absolute path, or a name that cannot leave the model repository."""

from __future__ import annotations

import re

# A model is named by an absolute path (a directory anywhere: readers are configured by admins), or by a relative
# name that is looked up in repository_path, among the bundled models, then on the Hugging Face hub: parts of
# letters, digits, '-', '_' and '.', joined by '/', none of them '.' or '..', so that it never leaves the repository.
_MODEL_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,95}")
MAX_MODEL_NAME = 256


def check_model_name(value: str, field: str = "model_name") -> str:
    """`value` if it is an absolute path or a name confined to the model repository; ValueError naming it if not."""
    if value.startswith("/"):
        return value
    repo, sep, filename = value.partition(":")
    if sep and filename.lower().endswith(".gguf"):  # `<hub repo>:<file>.gguf`: one GGUF file of a hub repository
        check_model_name(repo, field)
        check_model_name(filename, field)
        return value
    parts = value.split("/")
    if (not value or len(value) > MAX_MODEL_NAME
            or not all(_MODEL_PART.fullmatch(part) and part not in (".", "..") for part in parts)):
        raise ValueError(
            f"{field} must be an absolute path to a model directory, or a name inside repository_path or a Hugging "
            f"Face model id (parts of letters, digits, '-', '_' and '.' joined by '/', no '..'); given {value!r}")
    return value


def check_simple_name(value: str, field: str) -> str:
    """`value` if it is one name part (letters, digits, '-', '_' and '.', not starting with '.' or '-', at most 96
    characters): what consumer groups and reader ids become in Redis keys, URL paths and process names."""
    if not _MODEL_PART.fullmatch(value):
        raise ValueError(f"{field} must be letters, digits, '-', '_' and '.' (starting with a letter, digit or '_', "
                         f"at most 96 characters); given {value!r}")
    return value
