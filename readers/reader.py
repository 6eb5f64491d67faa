"""One reader process: register, load the engine, heartbeat, read batches with XREADGROUP, reply, XACK, drain.

The reader loop joins the consumer (Redis) to the engine (model): it reads at most as many entries as it has free
slots, hands them to the engine as one batch, and the reply sink acknowledges each entry only after its terminal
reply is in Redis. On SIGTERM it stops reading, lets in-flight work finish within the grace period while still
heartbeating, then deregisters. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from dataclasses import dataclass

import redis.exceptions

from liftoff import registry, wire
from liftoff.keys import Keys
from liftoff.process import compute_backoff
from liftoff.redis_client import connect
from liftoff.settings import ReaderConfig
from liftoff.wire import WIRE_VERSION, ReaderInfo
from readers.engines import Engine, EngineLoadError, load_engine
from readers.jobs import Job
from readers.replies import ReplySink

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_BOOT_ERROR = 3  # bad configuration or a duplicate live reader id: restarting will not help
EXIT_MODEL_LOAD_ERROR = 4  # the model cannot be loaded: restarting will not help
READ_BLOCK_MS = 500  # longest XREADGROUP block, which bounds how long a stop request waits for the read loop
TRANSIENT = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


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


class Reader:
    def __init__(self, options: ReaderOptions) -> None:
        self.opts = options
        self.keys = Keys(options.namespace)
        self.redis = connect(options.redis_url)
        cfg = options.config
        self.info = ReaderInfo(
            consumer_groups=options.groups,
            consumer_name=options.reader_id,
            device=cfg.device,
            model_name="echo" if options.echo else cfg.model_name,
            model_type="generation",
            pids=[os.getpid()],
            hostname=socket.gethostname(),
            heartbeat_interval_s=float(options.heartbeat_check_interval),
            supervised=options.supervised,
        )
        self.sink = ReplySink(self.redis, options.reader_id)
        self.engine: Engine | None = None
        self.capacity = cfg.max_batch_size
        self.inflight = 0
        self._slot_freed = asyncio.Event()
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._signals = 0

    # --- lifecycle --------------------------------------------------------------------------------------------
    async def run(self) -> int:
        self._install_signal_handlers()
        try:
            if not await self._register():
                return EXIT_BOOT_ERROR
            beating = asyncio.create_task(self._heartbeat_loop())
            try:
                code = await self._serve()
            finally:
                beating.cancel()
            if code == EXIT_OK:
                await registry.deregister(self.redis, self.keys, self.opts.reader_id)
            return code
        finally:
            await self.redis.aclose()

    async def _serve(self) -> int:
        cfg = self.opts.config
        try:
            self.engine = load_engine(cfg, self.opts.echo)
            await self.engine.load()
        except EngineLoadError as exc:
            log.error("reader %s: cannot load model: %s", self.opts.reader_id, exc)
            self.info.state, self.info.error = "failed", str(exc)
            await self._beat()
            return EXIT_MODEL_LOAD_ERROR
        self.info.model_type = self.engine.model_type
        for group in self.opts.groups:
            await self._ensure_group(group)
        self.info.state = "live"
        await self._beat()
        log.info("reader %s live: model %s, groups %s", self.opts.reader_id, self.info.model_name, self.opts.groups)
        consumers = [asyncio.create_task(self._consume(g)) for g in self.opts.groups]
        await self._stop.wait()
        self.info.state = "stopping"
        await asyncio.gather(*consumers, return_exceptions=True)  # each returns within READ_BLOCK_MS
        await self._drain()
        return EXIT_OK

    async def _drain(self) -> None:
        if self._tasks:
            log.info("reader %s: finishing %d in-flight jobs", self.opts.reader_id, self.inflight)
            _, pending = await asyncio.wait(self._tasks, timeout=self.opts.grace_s)
            for task in pending:
                task.cancel()
        try:
            await asyncio.wait_for(self.sink.drained(), timeout=max(1.0, self.opts.grace_s))
        except TimeoutError:
            log.warning("reader %s: replies not flushed before the grace period ended", self.opts.reader_id)

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal)

    def _on_signal(self) -> None:
        self._signals += 1
        if self._signals > 1:
            log.warning("reader %s: second stop signal, exiting now", self.opts.reader_id)
            os._exit(1)
        log.info("reader %s: stopping (in-flight work may finish)", self.opts.reader_id)
        self._stop.set()

    # --- registry and heartbeat -------------------------------------------------------------------------------
    async def _register(self) -> bool:
        attempt = 0
        while not self._stop.is_set():
            try:
                if await self.redis.exists(self.keys.heartbeat(self.opts.reader_id)):
                    log.error("reader id %r is already live elsewhere; refusing to register", self.opts.reader_id)
                    return False
                await self._beat()
                return True
            except TRANSIENT as exc:
                delay = compute_backoff(attempt)
                log.warning("cannot reach Redis (%s); retrying in %.1fs", exc, delay)
                attempt += 1
                await asyncio.sleep(delay)
        return False

    async def _beat(self) -> None:
        await registry.write_heartbeat(
            self.redis, self.keys, self.opts.reader_id, self.info, self.opts.heartbeat_check_interval
        )

    async def _heartbeat_loop(self) -> None:
        period = registry.heartbeat_period_s(self.opts.heartbeat_check_interval)
        while True:
            await asyncio.sleep(period)
            try:
                await self._beat()
            except TRANSIENT as exc:
                log.warning("heartbeat failed: %s", exc)

    async def _ensure_group(self, group: str) -> None:
        try:
            await self.redis.xgroup_create(self.keys.requests(group), group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    # --- consuming ----------------------------------------------------------------------------------------------
    async def _consume(self, group: str) -> None:
        stream = self.keys.requests(group)
        attempt = 0
        while not self._stop.is_set():
            free = self.capacity - self.inflight
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            try:
                resp = await self.redis.xreadgroup(
                    group, self.opts.reader_id, {stream: ">"}, count=free, block=READ_BLOCK_MS
                )
                attempt = 0
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await self._ensure_group(group)  # Redis lost the group (restart without persistence)
                continue
            except TRANSIENT as exc:
                delay = compute_backoff(attempt, base_s=0.2, cap_s=5.0)
                log.warning("read from %s failed (%s); retrying in %.1fs", stream, exc, delay)
                attempt += 1
                await asyncio.sleep(delay)
                continue
            jobs = [job for _, entries in resp or [] for job in self._decode(group, stream, entries)]
            if jobs:
                self._start(jobs)

    def _decode(self, group: str, stream: str, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> list[Job]:
        jobs = []
        for entry_id, fields in entries:
            try:
                item = wire.decode_work(fields)
                if item.v != WIRE_VERSION:
                    raise ValueError(f"wire version {item.v} is not {WIRE_VERSION}")
            except ValueError as exc:
                request_id, reply_to = wire.peek_ids(fields)
                log.error("undecodable entry %s in %s: %s", entry_id, stream, exc)
                if request_id and reply_to:
                    self.sink.error_raw(reply_to, request_id, 500, f"reader could not decode the request: {exc}")
                self.sink.ack_raw(stream, group, entry_id)
                continue
            jobs.append(Job(group=group, stream=stream, entry_id=entry_id, item=item))
        return jobs

    def _start(self, jobs: list[Job]) -> None:
        self.inflight += len(jobs)
        task = asyncio.create_task(self._execute(jobs))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, jobs: list[Job]) -> None:
        assert self.engine is not None
        live = []
        for job in jobs:
            if job.expired:
                self.sink.error(job, 504, "the request's deadline passed before a reader took it")
            else:
                live.append(job)
        try:
            if live:
                await self.engine.run(live, self.sink)
        except Exception as exc:  # an engine bug must still end every job, never leave it hanging
            log.exception("engine failed on a batch of %d", len(live))
            for job in live:
                if not job.finished:
                    self.sink.error(job, 500, f"the engine failed: {type(exc).__name__}: {exc}")
        finally:
            for job in live:
                if not job.finished:
                    self.sink.error(job, 500, "the engine ended the batch without an answer for this request")
            self.inflight -= len(jobs)
            self._slot_freed.set()
