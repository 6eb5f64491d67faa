"""Every Redis key Liftoff uses, in one place. No other module builds key names.

| key                          | type                        | TTL / trimming                 | meaning              |
|------------------------------|-----------------------------|--------------------------------|----------------------|
| `<ns>:requests:{<group>}`    | stream + consumer group     | entries deleted when abandoned | work for one group   |
| `<ns>:replies:<worker>`      | stream                      | trimmed by its reader, expires | one gateway worker's |
| `<ns>:readers`               | hash reader_id → ReaderInfo | removed on deregister / prune  | reader registry      |
| `<ns>:heartbeat:<reader_id>` | string (epoch seconds)      | PX = the dead-after window     | one reader's liveness |
| `<ns>:groups`                | set of group names          | none                           | groups ever served   |
| `<ns>:dlq`                   | stream of DeadLetter        | MAXLEN ~ 100k                  | dead letters         |
| `<ns>:stats:<counter>`       | string counter              | none                           | job counters         |
| `<ns>:stop:<reader_id>`      | string                      | EX 300                         | asks a reader to stop|
| `<ns>:cancel`                | pub/sub channel             | -                              | cancelled request ids|
| `<ns>:reader_configs:<sup>`  | hash reader_id → config     | none                           | one supervisor's set |
| `<ns>:fit:measurements`      | hash model → Measurement    | none                           | fit calibration      |
| `<ns>:fit:hardware:<node>`   | string (HardwareFacts JSON) | PX 60 s, refreshed every 15 s  | one node's hardware  |
| `<ns>:deployments`           | hash rid → Deployment       | none                           | live deployments     |
| `<ns>:deployment_models`     | hash model rid → model name | none                           | deployments' models  |
| `<ns>:deployment_scale`      | hash rid → {target, next}   | none (controller only)         | replica targets      |

Request streams carry the group in a `{…}` hash tag so that on Redis Cluster one group's keys share a slot.
"""

from __future__ import annotations

from dataclasses import dataclass


def valid_group_name(name: str) -> bool:
    """A consumer group name: not empty, no whitespace, no braces (it goes inside the `{…}` hash tag)."""
    return bool(name) and not any(c in name for c in " \t\r\n{}")


class _Fixed:
    """A key with no part but the namespace: `Keys().dlq` is `<ns>:dlq`."""

    def __init__(self, suffix: str) -> None:
        self.suffix = suffix

    def __get__(self, keys: Keys, owner: type | None = None) -> str:
        return f"{keys.ns}:{self.suffix}"


@dataclass(frozen=True, slots=True)
class Keys:
    ns: str = "liftoff"

    # keys with no part but the namespace
    readers = _Fixed("readers")
    groups = _Fixed("groups")
    dlq = _Fixed("dlq")
    cancel_channel = _Fixed("cancel")
    fit_measurements = _Fixed("fit:measurements")
    deployments = _Fixed("deployments")
    deployment_models = _Fixed("deployment_models")
    deployment_scale = _Fixed("deployment_scale")

    @staticmethod
    def direct_group(reader_id: str) -> str:
        """The consumer group that reaches one reader alone (tokenizer endpoints address readers by id)."""
        return f"@{reader_id}"

    def requests(self, group: str) -> str:
        return f"{self.ns}:requests:{{{group}}}"

    def replies(self, worker_id: str) -> str:
        return f"{self.ns}:replies:{worker_id}"

    def heartbeat(self, reader_id: str) -> str:
        return f"{self.ns}:heartbeat:{reader_id}"

    def stat(self, counter: str) -> str:
        return f"{self.ns}:stats:{counter}"

    def stop(self, reader_id: str) -> str:
        return f"{self.ns}:stop:{reader_id}"

    def reader_configs(self, supervisor_id: str) -> str:
        return f"{self.ns}:reader_configs:{supervisor_id}"

    def hardware_facts(self, node: str) -> str:
        """What one node's supervisor detected (published by it, read by the fit engine in gateway workers)."""
        return f"{self.ns}:fit:hardware:{node}"
