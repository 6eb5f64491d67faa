"""Every Redis key Liftoff uses, in one place. No other module builds key names.

| key                          | type                        | owner: who deletes it, or its TTL                   |
|------------------------------|-----------------------------|-----------------------------------------------------|
| `<ns>:requests:{<group>}`    | stream + consumer group     | entries deleted when answered, abandoned or         |
|                              | (work for one group)        | dead-lettered; an empty stream of a group nothing   |
|                              |                             | serves any more: the supervisor (`broker.tidy`)     |
| `<ns>:requests:{@<reader>}`  | stream (work for one reader)| deleted when its reader deregisters or is pruned    |
| `<ns>:replies:<worker>`      | stream (one gateway worker) | trimmed by its worker; EX 120 s, set by every write |
| `<ns>:readers`               | hash reader_id → ReaderInfo | field removed on deregister / prune                 |
| `<ns>:heartbeat:<reader_id>` | string (epoch seconds)      | PX = the dead-after window; deleted on deregister   |
| `<ns>:groups`                | set (no longer written)     | left by older versions: deleted by the supervisor   |
| `<ns>:dlq`                   | stream of DeadLetter        | MAXLEN ~ 100k; purged through `DELETE /dlq`         |
| `<ns>:stats:<counter>`       | string counter              | kept: a fixed few, the job totals of /health        |
| `<ns>:stop:<reader_id>`      | string                      | EX 300; deleted when its reader deregisters         |
| `<ns>:cancel`                | pub/sub channel             | - (holds nothing)                                   |
| `<ns>:reader_configs:<sup>`  | hash reader_id → config     | its supervisor: emptied (deleted) at shutdown       |
| `<ns>:fit:measurements`      | hash model → Measurement    | kept: one field per model measured (calibration)    |
| `<ns>:fit:hardware:<node>`   | string (HardwareFacts JSON) | PX 60 s, refreshed every 15 s                       |
| `<ns>:deployments`           | hash rid → Deployment       | field removed when the deployment is deleted        |
| `<ns>:deployment_models`     | hash model rid → model name | kept: one field per model rid named (the mapping)  |
| `<ns>:deployment_scale`      | hash rid → {target, next}   | field removed with its deployment                   |
| `<ns>:responses:<resp_id>`   | string (an OpenAI Response  | EX responses_ttl_s (while it streams: at most       |
|                              | and its conversation, JSON) | request_timeout_s + 60 s); DELETE /v1/responses/{id}|

Request streams carry the group in a `{…}` hash tag so that on Redis Cluster one group's keys share a slot.
"""

from __future__ import annotations

from collections.abc import Callable
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


class _Named:
    """A key of one named thing: `Keys().stop("r1")` is `<ns>:stop:r1`."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def __get__(self, keys: Keys, owner: type | None = None) -> Callable[[str], str]:
        head = f"{keys.ns}:{self.prefix}:"

        def key(name: str) -> str:
            return f"{head}{name}"

        return key


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
    # keys of one thing: `<ns>:<prefix>:<its name>`
    replies = _Named("replies")  # replies(worker_id)
    heartbeat = _Named("heartbeat")  # heartbeat(reader_id)
    stat = _Named("stats")  # stat(counter)
    stop = _Named("stop")  # stop(reader_id)
    reader_configs = _Named("reader_configs")  # reader_configs(supervisor_id)
    response = _Named("responses")  # response(response_id): the OpenAI port's response store

    @staticmethod
    def direct_group(reader_id: str) -> str:
        """The consumer group that reaches one reader alone (tokenizer endpoints address readers by id)."""
        return f"@{reader_id}"

    def requests(self, group: str) -> str:
        return f"{self.ns}:requests:{{{group}}}"

    def hardware_facts(self, node: str) -> str:
        """What one node's supervisor detected (published by it, read by the fit engine in gateway workers)."""
        return f"{self.ns}:fit:hardware:{node}"
