"""Prometheus metrics written by every Liftoff process: gateway workers (HTTP) and readers (jobs).

Multiprocess mode: `liftoff serve` points `PROMETHEUS_MULTIPROC_DIR` at a fresh `<state_dir>/metrics` for all its
children before they start, and prometheus_client then keeps each process's values in its own mmap'd file there;
`GET /metrics` on the management port sums the files (see `liftoff.management.metrics_api`). Without the variable (a
reader started by hand, unit tests) the values stay in the process's own memory. The mode is fixed when
prometheus_client is first imported, so the variable must be in the environment before that.

Names: the Takeoff dashboard names (`http_requests_total{path,status}`, `http_requests_duration_seconds`,
`user_batch_size`, `generate_batch_size`, `time_to_first_token`, `generate_sequence_lengths`, `generate_tokens`)
with Prometheus unit suffixes where the value has a unit (`queue_time_seconds`, `time_to_first_token_seconds`).
Every label takes values from a bounded set: route templates, status codes, configured consumer groups.

The reader hooks (`observe_batch`, `observe_job`) are plain function calls costing a few microseconds each.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

DURATION_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                      120.0, 300.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
TOKEN_BUCKETS = (1, 4, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 32768)

# --- gateway workers -----------------------------------------------------------------------------------------------
HTTP_REQUESTS = Counter("http_requests", "HTTP requests answered, by route template and status", ["path", "status"])
HTTP_DURATION = Histogram(
    "http_requests_duration_seconds", "Time from a request's arrival to the end of its response, by route template",
    ["path", "status"], buckets=DURATION_BUCKETS_S,
)

# --- readers -------------------------------------------------------------------------------------------------------
QUEUE_TIME = Histogram(
    "queue_time_seconds", "Time a request waited in its consumer group's stream before a reader started it",
    ["consumer_group"], buckets=DURATION_BUCKETS_S,
)
USER_BATCH_SIZE = Histogram(
    "user_batch_size", "Texts in one request (a list `text` is a user batch)", ["consumer_group"],
    buckets=BATCH_BUCKETS,
)
GENERATE_BATCH_SIZE = Histogram(
    "generate_batch_size", "Requests a reader handed to its engine at once", ["consumer_group"], buckets=BATCH_BUCKETS,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "time_to_first_token_seconds", "Time from a reader starting a request to its first generated token",
    ["consumer_group"], buckets=DURATION_BUCKETS_S,
)
GENERATE_TOKENS = Counter("generate_tokens", "Tokens generated", ["consumer_group"])
GENERATE_SEQUENCE_LENGTHS = Histogram(
    "generate_sequence_lengths", "Tokens generated per request", ["consumer_group"], buckets=TOKEN_BUCKETS,
)

# The generation engine's scheduler: Takeoff's dashboard name where it has one (prefill_count), else liftoff_*.
PREFILL_COUNT = Counter("prefill_count", "Prefill forwards (chunks of prompt tokens) run", ["consumer_group"])
PREFILL_TOKENS = Counter("liftoff_prefill_tokens",
                         "Prompt tokens computed by prefill (not taken from the prefix cache)", ["consumer_group"])
PREFIX_CACHE_QUERIES = Counter("liftoff_prefix_cache_queries", "Prompt tokens looked up in the prefix cache",
                               ["consumer_group"])
PREFIX_CACHE_HITS = Counter("liftoff_prefix_cache_hits", "Prompt tokens whose KV came from the prefix cache",
                            ["consumer_group"])
KV_CACHE_BLOCKS = Gauge("liftoff_kv_cache_blocks", "KV-cache blocks planned, summed over live readers",
                        ["consumer_group"], multiprocess_mode="livesum")
KV_CACHE_BLOCKS_USED = Gauge("liftoff_kv_cache_blocks_used",
                             "KV-cache blocks held by running requests, summed over live readers "
                             "(used / liftoff_kv_cache_blocks is the occupancy)", ["consumer_group"],
                             multiprocess_mode="livesum")

HttpChildren = tuple[Counter, Histogram]
_http_children: dict[tuple[str, int], HttpChildren] = {}


def http_children(path: str, status: int) -> HttpChildren:
    """The labelled counter and histogram for one (route template, status), cached: `labels()` takes a lock and
    builds a key on every call, which the hot path can do without."""
    pair = _http_children.get((path, status))
    if pair is None:
        label = str(status)
        pair = (HTTP_REQUESTS.labels(path, label), HTTP_DURATION.labels(path, label))
        _http_children[(path, status)] = pair
    return pair


def observe_batch(group: str, batch_size: int) -> None:
    """A reader handed `batch_size` requests of `group` to its engine at once."""
    GENERATE_BATCH_SIZE.labels(group).observe(batch_size)


def observe_job(group: str, queue_s: float, ttft_s: float | None = None, tokens: int | None = None,
                batch_size: int = 1) -> None:
    """One request of `group` ended in a reader: it waited `queue_s` in the stream, its first token came `ttft_s`
    after the reader started it, it generated `tokens` in all over `batch_size` texts (its user batch).
    `ttft_s` and `tokens` are None for work that generates nothing (embeddings, classification)."""
    QUEUE_TIME.labels(group).observe(max(0.0, queue_s))
    USER_BATCH_SIZE.labels(group).observe(batch_size)
    if ttft_s is not None:
        TIME_TO_FIRST_TOKEN.labels(group).observe(max(0.0, ttft_s))
    if tokens is not None:
        GENERATE_TOKENS.labels(group).inc(tokens)
        GENERATE_SEQUENCE_LENGTHS.labels(group).observe(tokens)


def observe_job_metadata(group: str, rows: list[dict[str, int]]) -> None:
    """`observe_job` from the per-text metadata engines build (`queue_ms`, `time_to_first_token_ms`,
    `generated_tokens`): the first token of the request is the earliest of its texts'."""
    if not rows:
        return
    ttft_ms = min(row.get("time_to_first_token_ms", 0) for row in rows)
    observe_job(group, rows[0].get("queue_ms", 0) / 1000, ttft_ms / 1000,
                sum(row.get("generated_tokens", 0) for row in rows), len(rows))


def observe_prefill(group: str, tokens: int) -> None:
    """One prefill forward of `group`'s reader computed `tokens` prompt tokens."""
    PREFILL_COUNT.labels(group).inc()
    PREFILL_TOKENS.labels(group).inc(tokens)


def observe_prefix_cache(group: str, looked_up: int, hits: int) -> None:
    PREFIX_CACHE_QUERIES.labels(group).inc(looked_up)
    if hits:
        PREFIX_CACHE_HITS.labels(group).inc(hits)


_kv_children: dict[str, tuple[Gauge, Gauge]] = {}


def observe_kv(group: str, used_blocks: int, total_blocks: int) -> None:
    """The KV occupancy of a reader of `group` (set once per scheduler iteration: children are cached)."""
    pair = _kv_children.get(group)
    if pair is None:
        pair = _kv_children[group] = (KV_CACHE_BLOCKS_USED.labels(group), KV_CACHE_BLOCKS.labels(group))
    pair[0].set(used_blocks)
    pair[1].set(total_blocks)


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def fresh_multiprocess_dir(state_dir: str | Path) -> str:
    """Empty `<state_dir>/metrics` for a new server run (files of a previous run would be summed in) and return it.
    The caller puts it in the children's environment as `MULTIPROC_ENV`."""
    path = Path(state_dir).resolve() / "metrics"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return str(path)
