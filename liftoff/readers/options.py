"""What one reader process is told at start: its model's config, its id and groups, where Redis is, and the server
settings it shares (`liftoff reader`'s flags, or the supervisor's)."""

from __future__ import annotations

from dataclasses import dataclass

from liftoff.core.reader_config import ReaderConfig


@dataclass(slots=True)
class ReaderOptions:
    config: ReaderConfig
    reader_id: str
    groups: list[str]
    redis_url: str
    namespace: str = "liftoff"
    heartbeat_check_interval: int = 1
    echo: bool = False
    supervised: bool = False
    grace_s: float = 30.0
    max_deliveries: int = 3
    repository_path: str = "./artefacts"
    reader_message_timeout_ms: int = 500  # the gateway's silence limit for a started stream, which beats keep within
    host_name: str = ""  # the registry's name for this reader's host ("": the machine's)
