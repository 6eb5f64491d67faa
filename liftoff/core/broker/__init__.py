"""The broker: the only code in Liftoff that speaks Redis Streams (and the cancel channel beside them).

Gateway workers, readers, the supervisor and the management API call these functions; none of them builds a
stream command of its own (tests/core/test_broker_only.py checks it). The rest of the Redis use (the reader
registry, heartbeats, stop requests, counters, reader configs, deployments, fit measurements) is plain keys and
hashes in the modules that own them. Key names come from `liftoff.core.keys.Keys`, whose table lists every key;
the stream keys and what the broker does with them:

* `<ns>:requests:{<group>}` (stream + consumer group `<group>`): written by `producer.submit` (XADD) and
  `dead_letters.requeue`; read by `consumer.read_new` (XREADGROUP), `reclaim.sweep` (XINFO CONSUMERS, XPENDING,
  XCLAIM) and `backlog` (XLEN, XINFO GROUPS); entries acknowledged and deleted by `FINISH`, `reclaim` or (when they
  cannot be decoded) `consumer.Ack`; an empty stream of a group that no longer exists is deleted by `tidy`.
* `<ns>:replies:<worker>` (stream): written by `consumer.send_replies` (XADD, `FINISH`) and by `reclaim` (a dead
  letter's error), each write setting its expiry; read by `producer.read_replies` (XREAD) and trimmed by
  `producer.trim_replies` (XTRIM, EXPIRE).
* `<ns>:dlq` (stream): written by `reclaim` through `dead_letters.add_letter` (XADD MAXLEN ~); read, retried and
  purged by `dead_letters` (XRANGE, XLEN, XDEL, DEL).
* `<ns>:cancel` (pub/sub channel): `producer.withdraw` publishes, `consumer.CancelFeed` subscribes.

Request entries are acknowledged and deleted together (by `FINISH`, or when reclaimed into the DLQ), so a request
stream's length is its backlog. Modules, by who calls them:

* `producer`: the gateway: submit (pipelined XADD), withdraw (XDEL + cancel), read and trim its reply stream;
* `consumer`: readers: create the group, read new entries, send replies (the ownership-checked `FINISH` script),
  hear cancellations;
* `reclaim`: readers and the supervisor: take over or dead-letter the pending work of dead consumers;
* `dead_letters`: the dead-letter stream: add, list, retry, purge;
* `backlog`: lengths, queued / in progress per group, stream and consumer statistics;
* `directory`: which consumer groups exist and which are live;
* `tidy`: delete empty request streams of groups that no longer exist;
* `errors`: `TRANSIENT` (Redis out of reach) and `group_gone`.

The design follows Dramatiq's split of a broker (all the Redis) from its worker (none): `readers.consumer` is the
reader's loop and holds no Redis code. Redis Cluster is not supported yet: `FINISH`, the dead-letter transaction and
`requeue` each touch a request stream together with a reply stream, the DLQ or a counter, which lie in other hash
slots; this package is the one place to change for it.
"""

from __future__ import annotations

from liftoff.core.broker.backlog import (
    Backlog,
    ConsumerStats,
    StreamStats,
    group_consumers,
    read_backlogs,
    redelivered,
    stream_lengths,
    stream_stats,
)
from liftoff.core.broker.consumer import (
    FINISH,
    REPLY_STREAM_MAXLEN,
    Ack,
    CancelFeed,
    Finish,
    PostReply,
    ReplyOp,
    ensure_group,
    read_new,
    send_replies,
)
from liftoff.core.broker.dead_letters import (
    DLQ_MAXLEN,
    Letter,
    dlq_length,
    letters_by_id,
    purge,
    read_letters,
    requeue,
)
from liftoff.core.broker.directory import Directory, read_directory
from liftoff.core.broker.errors import TRANSIENT, group_gone
from liftoff.core.broker.producer import REPLY_STREAM_TTL_S, Entry, read_replies, submit, trim_replies, withdraw
from liftoff.core.broker.reclaim import CLAIM_MIN_IDLE_MS, Claimed, live_consumers, sweep
from liftoff.core.broker.tidy import drop_orphan_streams

__all__ = [
    "CLAIM_MIN_IDLE_MS",
    "DLQ_MAXLEN",
    "FINISH",
    "REPLY_STREAM_MAXLEN",
    "REPLY_STREAM_TTL_S",
    "TRANSIENT",
    "Ack",
    "Backlog",
    "CancelFeed",
    "Claimed",
    "ConsumerStats",
    "Directory",
    "Entry",
    "Finish",
    "Letter",
    "PostReply",
    "ReplyOp",
    "StreamStats",
    "dlq_length",
    "drop_orphan_streams",
    "ensure_group",
    "group_consumers",
    "group_gone",
    "letters_by_id",
    "live_consumers",
    "purge",
    "read_backlogs",
    "read_directory",
    "read_letters",
    "read_new",
    "read_replies",
    "redelivered",
    "requeue",
    "send_replies",
    "stream_lengths",
    "stream_stats",
    "submit",
    "sweep",
    "trim_replies",
    "withdraw",
]
