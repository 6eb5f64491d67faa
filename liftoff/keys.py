"""Every Redis key Liftoff uses, in one place. No other module builds key names.

| key                              | type                         | TTL / trimming                         | meaning                              |
|----------------------------------|------------------------------|----------------------------------------|--------------------------------------|
| `<ns>:requests:{<group>}`        | stream + consumer group      | MAXLEN ~ on XADD (bounded backlog)     | pending work for one consumer group  |
| `<ns>:replies:<worker>`          | stream                       | trimmed by its reader (MINID), expires | results for one gateway worker       |
| `<ns>:readers`                   | hash reader_id → ReaderInfo  | entries removed on deregister / prune  | reader registry                      |
| `<ns>:heartbeat:<reader_id>`     | string (epoch seconds)       | PX = dead-after window                 | liveness of one reader               |
| `<ns>:groups`                    | set of consumer group names  | none                                   | groups ever served (for 404 lists)   |
| `<ns>:dlq`                       | stream                       | MAXLEN ~                               | dead letters, with their reason      |
| `<ns>:stats:<counter>`           | string counter               | none                                   | jobs total/completed/failed          |

Request streams carry the group in a `{…}` hash tag so that on Redis Cluster one group's keys share a slot.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    ns: str = "liftoff"

    def requests(self, group: str) -> str:
        return f"{self.ns}:requests:{{{group}}}"

    def replies(self, worker_id: str) -> str:
        return f"{self.ns}:replies:{worker_id}"

    @property
    def readers(self) -> str:
        return f"{self.ns}:readers"

    def heartbeat(self, reader_id: str) -> str:
        return f"{self.ns}:heartbeat:{reader_id}"

    @property
    def groups(self) -> str:
        return f"{self.ns}:groups"

    @property
    def dlq(self) -> str:
        return f"{self.ns}:dlq"

    def stat(self, counter: str) -> str:
        return f"{self.ns}:stats:{counter}"
