"""Byte sizes in settings: "4GB", "512MiB", a plain number of bytes, or a percentage of what is free ("20%")."""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9, "t": 10**12,
          "tb": 10**12, "ki": 2**10, "kib": 2**10, "mi": 2**20, "mib": 2**20, "gi": 2**30, "gib": 2**30,
          "ti": 2**40, "tib": 2**40}


FORMS = "bytes, a size like '4GB' or a percentage like '20%'"


def parse_cache_size(value: str | int | float, free_bytes: int) -> int:
    """`page_cache_size` in bytes: an integer of bytes, a size with a unit ("10GB", "512MiB") or a percentage of
    `free_bytes` ("90%"). ValueError with the accepted forms otherwise."""
    if isinstance(value, bool):  # a ValueError, like every other unusable value: pydantic reports it as one line
        raise ValueError(f"page_cache_size must be {FORMS}; given {value!r}")  # noqa: TRY004
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ValueError(f"page_cache_size must be positive; given {value!r}")
        return int(value)
    text = value.strip()
    if text.endswith("%"):
        try:
            share = float(text[:-1])
        except ValueError:
            share = -1.0
        if not 0 < share <= 100:
            raise ValueError(f"page_cache_size: a percentage must be in (0, 100]; given {value!r}")
        return int(free_bytes * share / 100)
    match = _SIZE.match(text)
    if match is None or (match.group(2) is not None and match.group(2).lower() not in _UNITS):
        raise ValueError(f"page_cache_size must be {FORMS}; given {value!r}")
    size = int(float(match.group(1)) * _UNITS[(match.group(2) or "").lower()])
    if size <= 0:
        raise ValueError(f"page_cache_size must be positive; given {value!r}")
    return size
