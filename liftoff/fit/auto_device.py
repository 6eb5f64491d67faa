"""Readers configured with `device = "auto"`: the fit engine chooses device, dtype and batch size.

Placement runs on the node's hardware facts, given as a `FactsSource`: the supervisor passes what it detected, the
management API (in a gateway worker, which never detects) the facts the supervisor published in Redis. It counts
the readers already running on this node (their models' memory), so a second reader lands on what the first left
free. A model that fits no device is refused before any process starts, with the fit report
that says why; so is a model the fit engine knows nothing about (give its device explicitly instead).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from liftoff.core.adapters import parse_loras
from liftoff.core.reader_config import ReaderConfig
from liftoff.core.registry import ReaderRecord
from liftoff.fit.analysis import fit_json
from liftoff.fit.catalog import load_catalog
from liftoff.fit.estimates import GIB
from liftoff.fit.facts import FactsSource
from liftoff.fit.placement import DEFAULT_MAX_BATCH_SIZE, PlacementRefused, RunningReader, UnknownModel, place
from liftoff.fit.repository import adapter_params

NO_MODEL_NEEDED = {"echo"}


class AutoPlacementError(Exception):
    """`report` is the fit engine's analysis of the model against what this node has left (None if unknown)."""

    def __init__(self, message: str, report: dict[str, Any] | None) -> None:
        super().__init__(message)
        self.report = report


async def place_reader(
    config: ReaderConfig, running: list[RunningReader], repository_path: str, echo: bool = False, *,
    facts: FactsSource,
) -> ReaderConfig:
    """`config` with device, dtype and max_batch_size filled in when its device is "auto".

    The facts are read only when placement needs them; `FactsUnavailable` (a 503) when they are not published.
    """
    if config.device != "auto":
        return config
    if echo or config.model_name in NO_MODEL_NEEDED:
        return config.model_copy(update={"device": "cpu"})
    specs = await facts.current()
    try:
        placement = place(
            config.model_name,
            specs,
            load_catalog(repository_path),
            running,
            max_sequence_length=config.max_sequence_length,
            max_batch_size=config.batch_slots(DEFAULT_MAX_BATCH_SIZE),
            adapter_params=loras_params(config, repository_path),
        )
    except PlacementRefused as exc:
        raise AutoPlacementError(str(exc), fit_json(exc.report) if exc.report else None) from None
    except UnknownModel as exc:
        raise AutoPlacementError(f"{exc.args[0]}; set the reader's device explicitly", None) from None
    return config.model_copy(
        update={
            "device": placement.device,
            # On a GPU the reader settles bf16 or fp16 by what the card computes natively (the same memory either
            # way); an explicit bfloat16 would fail on cards older than compute capability 8.0.
            "dtype": placement.dtype if placement.device == "cpu" else "auto",
            "quant_type": placement.quantization or config.quant_type,
            "max_batch_size": placement.max_batch_size,
        }
    )


def loras_params(config: ReaderConfig, repository_path: str) -> float:
    """Parameters of the reader's `loras` found on disk (a hub id not yet downloaded counts none: its size is not
    known before the download)."""
    total = 0.0
    for source in parse_loras(config.loras).values():
        path = Path(source) if source.startswith("/") else Path(repository_path).expanduser() / source
        total += (adapter_params(path) if path.is_dir() else None) or 0.0
    return total


def running_readers(records: list[ReaderRecord]) -> list[RunningReader]:
    return [RunningReader(r.info.model_name, r.info.device, adapters_gb=sum(a.get("bytes", 0) for a in r.info.loras)
                          / GIB) for r in records if r.status != "dead"]
