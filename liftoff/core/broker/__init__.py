"""The broker: the only code in Liftoff that speaks Redis Streams (and the cancel channels beside them).

Gateway workers, readers, the supervisor and the management API call these functions; none of them builds a
stream command of its own (tests/core/test_broker_only.py checks it). The rest of the Redis use (the reader
registry, heartbeats, stop requests, reader configs, deployments, fit measurements) is plain keys and hashes in the
modules that own them. Key names come from `liftoff.core.keys.Keys`, whose table lists every key; the keys the
broker uses, and what it does with them:

* `<ns>:requests:{<group>}` (stream + consumer group `<group>`): written by `producer.submit` (XADD) and
  `dead_letters.requeue`; read by `consumer.read_new` (XREADGROUP), `reclaim.sweep` (XINFO CONSUMERS, XPENDING,
  XCLAIM), `reclaim.own_pending` / `take_back` and `backlog` (XLEN, XINFO GROUPS); entries acknowledged and deleted
  by `FINISH`, `reclaim` or (when they cannot be decoded) `consumer.Ack`; an empty stream of a group that no longer
  exists is deleted by `tidy`.
* `<ns>:replies:{<group>}:<worker>` (stream): written by `consumer.send_replies` (XADD, `FINISH`) and by `reclaim`
  (a dead letter's error), each write setting its expiry; read by `producer.read_replies` (XREAD) and trimmed by
  `producer.trim_replies` (XTRIM, EXPIRE).
* `<ns>:dlq:{<group>}` (streams; `<ns>:dlq` of older versions beside them): written by `reclaim` through
  `dead_letters.add_letter` (XADD MAXLEN ~); found by SCAN, read, retried and purged by `dead_letters` (XRANGE,
  XLEN, XDEL, DEL).
* `<ns>:stats:{<group>}:<counter>` (counters): counted by `FINISH` and `reclaim`, summed by `backlog.job_counts`,
  folded into `<ns>:stats:<counter>` by `tidy` once the group is gone.
* `<ns>:cancel:{<group>}` (pub/sub channels): `producer.withdraw` publishes, `consumer.CancelFeed` subscribes.

Every script and MULTI/EXEC touches the keys of one group, all in its hash slot `{<group>}`, so the same code runs
on one Redis and on a Redis Cluster (`liftoff.core.redis_client`): there a reader's flush is one MULTI/EXEC per slot
it writes to, and cancel is sharded pub/sub (SPUBLISH/SSUBSCRIBE). Request entries are acknowledged and deleted
together (by `FINISH`, or when reclaimed into the DLQ), so a request stream's length is its backlog. Modules, by
who calls them:

* `producer`: the gateway: submit (pipelined XADD), withdraw (XDEL + cancel), read and trim its reply streams;
* `consumer`: readers: create the group, read new entries, send replies (the ownership-checked `FINISH` script),
  hear cancellations;
* `reclaim`: readers and the supervisor: take over or dead-letter the pending work of dead consumers; a reader takes
  back its own pending work that a failover left without an answer;
* `dead_letters`: the dead-letter streams: add, list, retry, purge;
* `backlog`: lengths, queued / in progress per group, stream and consumer statistics, job counts;
* `directory`: which consumer groups exist and which are live;
* `tidy`: delete empty request streams of groups that no longer exist, fold their counters into the totals;
* `errors`: `TRANSIENT` (Redis, or a cluster's master, out of reach) and `group_gone`.

The design follows Dramatiq's split of a broker (all the Redis) from its worker (none): `liftoff.readers.consumer` is
the
reader's loop and holds no Redis code.
"""

from __future__ import annotations

from liftoff.core.broker.backlog import (
    JOB_COUNTERS,
    Backlog,
    ConsumerStats,
    StreamStats,
    group_consumers,
    job_counts,
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
    ExpiryClock,
    Finish,
    PostReply,
    ReplyOp,
    Sent,
    ensure_group,
    read_new,
    send_replies,
)
from liftoff.core.broker.dead_letters import (
    DLQ_MAXLEN,
    Letter,
    dlq_length,
    dlq_streams,
    letters_by_id,
    purge,
    read_letters,
    requeue,
)
from liftoff.core.broker.directory import Directory, read_directory
from liftoff.core.broker.errors import TRANSIENT, group_gone
from liftoff.core.broker.producer import REPLY_STREAM_TTL_S, Entry, read_replies, submit, trim_replies, withdraw
from liftoff.core.broker.reclaim import CLAIM_MIN_IDLE_MS, Claimed, live_consumers, own_pending, sweep, take_back
from liftoff.core.broker.tidy import drop_orphan_streams

__all__ = [
    "CLAIM_MIN_IDLE_MS",
    "DLQ_MAXLEN",
    "FINISH",
    "JOB_COUNTERS",
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
    "ExpiryClock",
    "Finish",
    "Letter",
    "PostReply",
    "ReplyOp",
    "Sent",
    "StreamStats",
    "dlq_length",
    "dlq_streams",
    "drop_orphan_streams",
    "ensure_group",
    "group_consumers",
    "group_gone",
    "job_counts",
    "letters_by_id",
    "live_consumers",
    "own_pending",
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
    "take_back",
    "trim_replies",
    "withdraw",
]
