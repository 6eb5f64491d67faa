"""Every Redis key Liftoff uses, in one place. No other module builds key names.

| key                                  | type                        | owner: who deletes it, or its TTL           |
|--------------------------------------|-----------------------------|---------------------------------------------|
| `<ns>:requests:{<group>}`            | stream + consumer group     | entries deleted when answered, abandoned or |
|                                      | (work for one group)        | dead-lettered; an empty stream of a group   |
|                                      |                             | nothing serves any more: the supervisor     |
|                                      |                             | (`broker.tidy`)                             |
| `<ns>:requests:{@<reader>}`          | stream (work for one reader)| deleted when its reader deregisters or is   |
|                                      |                             | pruned                                      |
| `<ns>:replies:{<group>}:<worker>`    | stream (one gateway worker's| trimmed by its worker; EX 120 s, set by     |
|                                      | replies from one group)     | every write                                 |
| `<ns>:dlq:{<group>}`                 | stream of DeadLetter        | MAXLEN ~ 100k; purged through `DELETE /dlq` |
| `<ns>:stats:{<group>}:<counter>`     | string counter (one group's | folded into `<ns>:stats:<counter>` and      |
|                                      | completed / failed / ...)   | deleted once the group is gone (`tidy`)     |
| `<ns>:stats:<counter>`               | string counter              | kept: the totals of groups gone             |
| `<ns>:cancel:{<group>}`              | pub/sub channel (sharded on | - (holds nothing)                           |
|                                      | a cluster)                  |                                             |
| `<ns>:dlq`                           | stream (no longer written)  | letters of older versions: listed, retried  |
|                                      |                             | and purged with the others                  |
| `<ns>:readers`                       | hash reader_id → ReaderInfo | field removed on deregister / prune         |
| `<ns>:heartbeat:<reader_id>`         | string (epoch seconds)      | PX = the dead-after window; deleted on      |
|                                      |                             | deregister                                  |
| `<ns>:groups`                        | set (no longer written)     | left by older versions: deleted by the      |
|                                      |                             | supervisor                                  |
| `<ns>:stop:<reader_id>`              | string                      | EX 300; deleted when its reader deregisters |
| `<ns>:reader_configs:<sup>`          | hash reader_id → config     | its supervisor: emptied (deleted) at        |
|                                      |                             | shutdown                                    |
| `<ns>:fit:measurements`              | hash model → Measurement    | kept: one field per model measured          |
| `<ns>:fit:hardware:<node>`           | string (HardwareFacts JSON) | PX 60 s, refreshed every 15 s               |
| `<ns>:deployments`                   | hash rid → Deployment       | field removed when the deployment is deleted|
| `<ns>:deployment_models`             | hash model rid → model name | kept: one field per model rid named         |
| `<ns>:deployment_scale:{<ns>:deployments}` | hash rid → {target, next} | field removed with its deployment     |
| `<ns>:responses:<resp_id>`           | string (an OpenAI Response  | EX responses_ttl_s (while it streams: at    |
|                                      | and its conversation, JSON) | most request_timeout_s + 60 s);             |
|                                      |                             | DELETE /v1/responses/{id}                   |

Hash slots (Redis Cluster runs every script and MULTI on one slot, and a key's slot is that of the text inside its
first `{…}`, or of the whole name when it has none):

* one group's keys share the group's slot: its request stream, the reply streams its readers write (one per gateway
  worker), its dead letters, its counters and its cancel channel, so that `FINISH`, the dead-letter transaction and a
  retry from the DLQ each touch one slot. Different groups hash to different slots, spread over the masters.
* a gateway worker so has one reply stream per group it sends to, each read by its own blocking XREAD.
* `<ns>:deployment_scale` carries `{<ns>:deployments}`, the slot of the deployments hash, which a deployment's
  deletion changes with it in one MULTI; every other key stands alone in a slot of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


def valid_group_name(name: str) -> bool:
    """A consumer group name: not empty, no whitespace, no braces (it goes inside the `{…}` hash tag)."""
    return bool(name) and not any(c in name for c in " \t\r\n{}")


class _Fixed:
    """A key with no part but the namespace: `Keys().readers` is `<ns>:readers`."""

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
    legacy_dlq = _Fixed("dlq")
    fit_measurements = _Fixed("fit:measurements")
    deployments = _Fixed("deployments")
    deployment_models = _Fixed("deployment_models")
    # keys of one thing: `<ns>:<prefix>:<its name>`
    heartbeat = _Named("heartbeat")  # heartbeat(reader_id)
    total = _Named("stats")  # total(counter): the counts of groups gone
    stop = _Named("stop")  # stop(reader_id)
    reader_configs = _Named("reader_configs")  # reader_configs(supervisor_id)
    response = _Named("responses")  # response(response_id): the OpenAI port's response store

    @staticmethod
    def direct_group(reader_id: str) -> str:
        """The consumer group that reaches one reader alone (tokenizer endpoints address readers by id)."""
        return f"@{reader_id}"

    # keys of one consumer group, in its hash slot `{<group>}`
    def requests(self, group: str) -> str:
        return f"{self.ns}:requests:{{{group}}}"

    def replies(self, group: str, worker: str) -> str:
        """Where the readers of `group` answer gateway worker `worker`."""
        return f"{self.ns}:replies:{{{group}}}:{worker}"

    def dlq(self, group: str) -> str:
        return f"{self.ns}:dlq:{{{group}}}"

    def stat(self, group: str, counter: str) -> str:
        return f"{self.ns}:stats:{{{group}}}:{counter}"

    def cancel(self, group: str) -> str:
        """The channel on which gateway workers withdraw requests of `group` from its readers."""
        return f"{self.ns}:cancel:{{{group}}}"

    @property
    def deployment_scale(self) -> str:
        return f"{self.ns}:deployment_scale:{{{self.deployments}}}"

    def hardware_facts(self, node: str) -> str:
        """What one node's supervisor detected (published by it, read by the fit engine in gateway workers)."""
        return f"{self.ns}:fit:hardware:{node}"
