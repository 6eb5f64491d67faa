"""One reader process: register, load the engine, heartbeat, read batches, reply, acknowledge, drain.

The reader joins the consumers (Redis, one per consumer group) to the engine (model): consumers read at most as
many entries as the reader has free slots, the reader hands each read to the engine as one batch, and the reply
sink acknowledges each entry only after its terminal reply is in Redis. Each process consumes under its own
consumer name, so whatever a dead predecessor left pending is reclaimed explicitly (see
`liftoff.core.broker.reclaim`). Every stream command goes through `liftoff.core.broker`.

It stops on SIGTERM or when asked through Redis (`DELETE /reader/{id}`): it stops reading, lets in-flight work
finish within the grace period while still heartbeating, then deregisters. A second signal exits at once. Clients
that disconnect are announced on a pub/sub channel; their jobs are marked cancelled and the engine drops them.
While the engine makes progress, streams it has nothing to send for get `alive` beats (see `liftoff.readers.liveness`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import time

import psutil

from liftoff.core import metrics, registry
from liftoff.core.broker import TRANSIENT, CancelFeed
from liftoff.core.calibration import MeasurementStore, record_measurement
from liftoff.core.keys import Keys
from liftoff.core.process import EXIT_BOOT_ERROR, EXIT_MODEL_LOAD_ERROR, EXIT_OK, compute_backoff, critical_task
from liftoff.core.reader_config import ReaderConfig
from liftoff.core.redis_client import close, connect
from liftoff.core.wire import ADAPTER_KINDS, TOKENIZER_KINDS, ReaderInfo
from liftoff.readers.consumer import GroupConsumer
from liftoff.readers.engines import Engine, EngineLoadError, load_engine
from liftoff.readers.engines.base import EngineRequestError
from liftoff.readers.engines.echo import EchoEngine
from liftoff.readers.jobs import Job
from liftoff.readers.liveness import keep_alive
from liftoff.readers.options import ReaderOptions
from liftoff.readers.replies import ReplySink

log = logging.getLogger(__name__)

CALIBRATE_EVERY_S = 30.0
CANCEL_STATUS = 499  # the client closed the request (nobody reads this reply; it ends the job for the books)


class Reader:
    def __init__(self, options: ReaderOptions) -> None:
        self.opts = options
        self.keys = Keys(options.namespace)
        self.redis = connect(options.redis_url)
        cfg = options.config
        self.consumer = f"{options.reader_id}-{os.getpid()}"
        self.info = ReaderInfo(
            consumer_groups=options.groups,
            consumer_name=self.consumer,
            device=cfg.device,
            model_name="echo" if options.echo else cfg.model_name,
            model_type="generation",
            pids=[os.getpid()],
            hostname=options.host_name or socket.gethostname(),
            heartbeat_interval_s=float(options.heartbeat_check_interval),
            supervised=options.supervised,
            reader_id=options.reader_id,
            config=cfg.model_dump(),
        )
        self.sink = ReplySink(self.redis, options.reader_id, self.keys, self.consumer)
        self.engine: Engine | None = None
        self.capacity = cfg.max_batch_size
        self.inflight: dict[str, Job] = {}  # request id → job
        self.counts = {"completed": 0, "failed": 0, "cancelled": 0}
        self._slot_freed = asyncio.Event()
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._signals = 0
        self._loaded_rss = 0
        # stop requests made before this process existed were for an earlier reader of the same id
        self._started_ms = int(psutil.Process().create_time() * 1000)
        self.consumers: list[GroupConsumer] = []

    # --- lifecycle --------------------------------------------------------------------------------------------
    async def run(self) -> int:
        self._install_signal_handlers()
        try:
            if not await self._register():
                return EXIT_BOOT_ERROR
            helpers = [critical_task(self._heartbeat_loop(), "reader heartbeat"),
                       critical_task(self._cancel_listener(), "reader cancel feed")]
            try:
                code = await self._serve()
            finally:
                for task in helpers:
                    task.cancel()
            if code == EXIT_OK:
                await registry.deregister(self.redis, self.keys, self.opts.reader_id)
            return code
        finally:
            await close(self.redis)

    async def _serve(self) -> int:
        cfg = self.opts.config
        failure = ""
        try:
            self.engine = await self._load(cfg)
        except EngineLoadError as exc:
            failure = str(exc)  # the exception (and the frames of a half-loaded model) go with this block
        if self.engine is None:
            if not cfg.fallback_model_name or self.opts.echo:
                log.error("reader %s: cannot load model: %s", self.opts.reader_id, failure)
                self.info.state, self.info.error = "failed", failure
                await self._beat()
                return EXIT_MODEL_LOAD_ERROR
            self.engine = await self._fall_back(cfg, failure)
            if self.engine is None:
                return EXIT_MODEL_LOAD_ERROR
        engine = self.engine
        self.info.model_type, self.info.tool_call_parser = engine.model_type, engine.tool_call_parser()
        self.info.sampling = engine.sampling_defaults()
        self._publish_adapters()
        self._loaded_rss -= sum(a["bytes"] for a in self.info.loras)  # calibration counts adapters apart
        self.capacity = self.engine.max_batch_size  # "auto" is resolved by the engine's load
        self.info.config = {**self.info.config, "max_batch_size": self.capacity}
        await self._calibrate()
        groups = [*self.opts.groups, Keys.direct_group(self.opts.reader_id)]  # the last: work for this reader only
        self.consumers = [
            GroupConsumer(self.redis, self.keys, group, self.consumer, self, self.sink, self._stop.is_set,
                          self.opts.max_deliveries, self.opts.heartbeat_check_interval)
            for group in groups
        ]
        for consumer in self.consumers:
            await consumer.ensure_group()
        self.info.state = "live"
        await self._beat()
        log.info("reader %s live: model %s, groups %s", self.opts.reader_id, self.info.model_name, self.opts.groups)
        beats = critical_task(keep_alive(self.inflight, self.sink, self.engine, self.opts.reader_message_timeout_ms),
                              "reader liveness beats")
        reading = [critical_task(c.run(), f"reader consumer of group {c.group}") for c in self.consumers]
        await self._stop.wait()
        self.info.state = "stopping"
        self._slot_freed.set()  # wake consumers waiting for a slot, so that they see the stop
        await asyncio.gather(*reading, return_exceptions=True)  # each returns within READ_BLOCK_MS
        try:
            await self._drain()  # streams still running keep their beats while they finish
        finally:
            beats.cancel()
        self.engine.close()
        return EXIT_OK

    async def _load(self, cfg: ReaderConfig) -> Engine:
        """The loaded engine; its memory (RSS growth) is kept for the fit engine's calibration."""
        gc.collect()  # what a failed attempt left behind must not count as this model's memory
        rss_before = _rss()
        try:
            self.info.progress = f"loading {cfg.model_name}"
            engine = await load_engine(cfg, self.opts.echo, self.opts.repository_path, self._progress)
            self._progress(f"loading the weights of {cfg.model_name}")
            await engine.load()
        except EngineLoadError:
            raise
        except Exception as exc:
            log.exception("reader %s: loading %s failed", self.opts.reader_id, cfg.model_name)
            raise EngineLoadError(f"loading the model failed: {type(exc).__name__}: {exc}") from exc
        finally:
            self.info.progress = None
        self._loaded_rss = _rss() - rss_before
        return engine

    def _progress(self, message: str) -> None:
        """What loading is doing now: in the log and, with the next heartbeat, in `/status` (`loading_readers`)."""
        self.info.progress = message
        log.info("reader %s: %s", self.opts.reader_id, message)

    async def _fall_back(self, cfg: ReaderConfig, why: str) -> Engine | None:
        """Serve `fallback_model_name` instead, saying why in the log and in /status (the reader's `error`)."""
        fallback = cfg.fallback_model_name or "echo"
        notice = (f"serving the fallback model {fallback!r} because {cfg.model_name!r} cannot be loaded: {why}. "
                  f"To serve a real model, start with `liftoff serve --model <local directory or model id>` or set "
                  f"this reader's model_name in config.toml")
        log.warning("reader %s: %s", self.opts.reader_id, notice)
        try:
            engine = await self._load(cfg.model_copy(update={"model_name": fallback, "fallback_model_name": None}))
        except EngineLoadError as exc:
            log.error("reader %s: cannot load the fallback model either: %s", self.opts.reader_id, exc)
            self.info.state, self.info.error = "failed", f"{why}; fallback {fallback!r}: {exc}"
            await self._beat()
            return None
        self.info.model_name, self.info.error = fallback, notice
        return engine

    async def _drain(self) -> None:
        if self._tasks:
            log.info("reader %s: finishing %d in-flight jobs", self.opts.reader_id, len(self.inflight))
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
        self.request_stop("signal")

    def request_stop(self, why: str) -> None:
        if not self._stop.is_set():
            log.info("reader %s: stopping (%s); in-flight work may finish", self.opts.reader_id, why)
            self._stop.set()

    # --- registry, heartbeat and control ------------------------------------------------------------------------
    async def _register(self) -> bool:
        attempt = 0
        while not self._stop.is_set():
            try:
                if await self.redis.exists(self.keys.heartbeat(self.opts.reader_id)):
                    log.error("reader id %r is already live elsewhere; refusing to register", self.opts.reader_id)
                    return False
                stop = await self.redis.get(self.keys.stop(self.opts.reader_id))
                if stop is not None and not (stop.isdigit() and registry.stop_applies(stop, self._started_ms)):
                    # made before this process started (or with no time): for an earlier reader of this id
                    await self.redis.delete(self.keys.stop(self.opts.reader_id))
                await self._beat()
                return True
            except TRANSIENT as exc:
                delay = compute_backoff(attempt)
                log.warning("cannot reach Redis (%s); retrying in %.1fs", exc, delay)
                attempt += 1
                await asyncio.sleep(delay)
        return False

    async def _beat(self) -> None:
        self.info.jobs = {
            "active": len(self.inflight),
            **self.counts,
            "reclaimed": sum(c.reclaimed for c in self.consumers),
        }
        await registry.write_heartbeat(
            self.redis, self.keys, self.opts.reader_id, self.info, self.opts.heartbeat_check_interval
        )

    async def _calibrate(self) -> None:
        """Tell the fit engine what this model really takes here: memory after loading, and decode speed, with the
        dtype or quantisation the engine found in the loaded weights (not the one the settings asked for)."""
        if self.engine is None or isinstance(self.engine, EchoEngine):
            return
        store = MeasurementStore(self.redis, self.keys.fit_measurements)
        loaded = getattr(self.engine, "loaded_dtype", None)  # model engines: "F32", "BF16", "INT8", ...
        try:
            await record_measurement(store, self.info.model_name, max(0, self._loaded_rss),
                                     self.engine.tokens_per_s(), self.engine.device, loaded)
        except TRANSIENT as exc:
            log.debug("calibration not recorded: %s", exc)

    async def _heartbeat_loop(self) -> None:
        period = registry.heartbeat_period_s(self.opts.heartbeat_check_interval)
        next_calibration = time.monotonic() + CALIBRATE_EVERY_S
        while True:
            await asyncio.sleep(period)
            if time.monotonic() >= next_calibration:
                next_calibration = time.monotonic() + CALIBRATE_EVERY_S
                await self._calibrate()
            try:
                await self._beat()
                if registry.stop_applies(await self.redis.get(self.keys.stop(self.opts.reader_id)), self._started_ms):
                    self.request_stop("asked to stop through the management API")
            except TRANSIENT as exc:
                log.warning("heartbeat failed: %s", exc)

    async def _cancel_listener(self) -> None:
        attempt = 0
        groups = [*self.opts.groups, Keys.direct_group(self.opts.reader_id)]
        while True:
            feed = CancelFeed(self.redis, self.keys, groups)
            try:
                await feed.subscribe()
                attempt = 0
                async for request_id in feed.ids():
                    self._cancel(request_id)
            except TRANSIENT as exc:
                delay = compute_backoff(attempt, base_s=0.2, cap_s=1.0)
                attempt += 1
                log.debug("cancel channel lost (%s); resubscribing in %.1fs", exc, delay)
                await asyncio.sleep(delay)
            finally:
                await feed.close()

    def _cancel(self, request_id: str) -> None:
        job = self.inflight.get(request_id)
        if job is not None and not job.finished:
            job.cancelled = True  # engines drop cancelled jobs at their next step

    # --- executing (the consumers' Executor) --------------------------------------------------------------------
    def free_slots(self) -> int:
        return self.capacity - len(self.inflight)

    async def wait_for_slot(self) -> None:
        self._slot_freed.clear()
        if self.free_slots() <= 0 and not self._stop.is_set():
            await self._slot_freed.wait()

    def serving(self, request_id: str) -> bool:
        return request_id in self.inflight

    def entries_in_flight(self, stream: str) -> set[bytes]:
        return {job.entry_id for job in self.inflight.values() if job.stream == stream}

    def start(self, jobs: list[Job]) -> None:
        for job in jobs:
            self.inflight[job.item.id] = job
        task = asyncio.create_task(self._execute(jobs))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, jobs: list[Job]) -> None:
        assert self.engine is not None
        live = []
        for job in jobs:
            if job.expired:
                self.sink.error(job, 504, "the request's deadline passed before a reader took it")
            elif job.item.kind in TOKENIZER_KINDS:
                self._tokenizer_job(job)
            elif job.item.kind in ADAPTER_KINDS:
                await self._adapter_job(job)
            elif job.item.kind not in self.engine.kinds:
                self.sink.error(job, 400, f"consumer group {job.group!r} is served by a {self.engine.model_type} "
                                f"model ({self.info.model_name}), which does not serve {job.item.kind} requests")
            elif job.item.images and not self.engine.takes_images:
                self.sink.error(job, 400, f"consumer group {job.group!r} is served by a {self.engine.model_type} "
                                f"model ({self.info.model_name}), which takes no images")
            else:
                live.append(job)
        try:
            if live:
                metrics.observe_batch(live[0].group, len(live))
                await self.engine.run(live, self.sink)
        except Exception as exc:  # an engine bug must still end every job, never leave it hanging
            log.exception("engine failed on a batch of %d", len(live))
            for job in live:
                if not job.finished:
                    self.sink.error(job, 500, f"the engine failed: {type(exc).__name__}: {exc}")
        finally:
            for job in jobs:
                if not job.finished:
                    self.sink.error(job, 500, "the engine ended the batch without an answer for this request")
                self._count(job)
                self.inflight.pop(job.item.id, None)
            self._slot_freed.set()

    def _tokenizer_job(self, job: Job) -> None:
        assert self.engine is not None
        try:
            self.sink.done(job, None, result=self.engine.tokenizer_op(job.item.kind, job.item.args or {}))
        except EngineRequestError as exc:
            self.sink.error(job, exc.status, str(exc))

    async def _adapter_job(self, job: Job) -> None:
        """Add or remove a LoRA adapter; the registry shows the change before the reply goes (so the gateway's
        check of `lora_id` knows it as soon as the caller does)."""
        assert self.engine is not None
        try:
            result = await self.engine.adapter_op(job.item.kind, job.item.args or {})
        except EngineRequestError as exc:
            self.sink.error(job, exc.status, str(exc))
            return
        self._publish_adapters()
        try:
            await self._beat()
        except TRANSIENT as exc:
            log.warning("the registry shows the adapter change at the next heartbeat: %s", exc)
        self.sink.done(job, None, result=result)

    def _publish_adapters(self) -> None:
        """The loaded adapters into the registry entry: their views, and `loras` in /config/{id} as they run."""
        assert self.engine is not None
        self.info.loras = self.engine.adapters()
        if self.info.loras or self.info.config.get("loras"):
            self.info.config = {**self.info.config, "loras": [f"{a['name']}={a['source']}" for a in self.info.loras]}

    def _count(self, job: Job) -> None:
        if job.cancelled:
            self.counts["cancelled"] += 1
        elif job.failed:
            self.counts["failed"] += 1
        else:
            self.counts["completed"] += 1


def _rss() -> int:
    return psutil.Process().memory_info().rss
