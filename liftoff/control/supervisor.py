"""`liftoff serve`: the process that owns the embedded Redis, the gateway (gunicorn) and the reader processes.

Signal handlers only record the signal; the main loop acts on it. The first SIGTERM/SIGINT is a warm stop: the
gateway stops taking requests and finishes those in flight (readers still serving them), then readers drain and
deregister, then Redis stops. A second signal is a cold stop: everything left is killed. A reader that exits on
its own is marked dead at once and restarted with a capped, jittered backoff, unless its exit code says that a
restart cannot help (bad configuration, a model that cannot load). The embedded redis-server is kept the same way
(`liftoff.control.redis_keeper`: restarted from its append-only file with backoff, its state in a file that `/status`
and
the health report read); while it is down, the turns skip what needs Redis but still watch the processes and the
signals. One server runs per state directory (`liftoff.control.state_lock`), taken before anything in it is touched.

The `role` setting says which of these this host runs (docs/scaling.md, "Roles"): everything; the gateway without
readers; or readers without a gateway, joining a Redis that another host shares. Every role sweeps the work of dead
readers and publishes this node's hardware facts; each supervisor starts, restarts and deregisters only the readers
of its own reader store.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from liftoff.control.deployments_controller import DeploymentController
from liftoff.control.facts_publisher import FactsPublisher
from liftoff.control.redis_keeper import RedisKeeper
from liftoff.control.state_lock import StateDirInUse, StateLock
from liftoff.core import broker, metrics, reader_store, registry
from liftoff.core.api_keys import management_bind
from liftoff.core.keys import Keys
from liftoff.core.process import EXIT_BOOT_ERROR, EXIT_MODEL_LOAD_ERROR, child_preexec, compute_backoff
from liftoff.core.reader_config import READER_TOKEN_ENV, ReaderConfig
from liftoff.core.redis_client import close, connect, redact
from liftoff.core.redis_state import clear_state
from liftoff.core.settings import RESOLVED_ENV, Settings
from liftoff.core.wire import ReaderInfo
from liftoff.fit.auto_device import AutoPlacementError, place_reader
from liftoff.fit.facts import FixedFacts
from liftoff.fit.placement import RunningReader

log = logging.getLogger("liftoff.supervisor")

POLL_S = 0.2
STABLE_AFTER_S = 60.0  # a reader up this long has its restart backoff reset
PRUNE_EVERY_S = 10.0
SWEEP_EVERY_S = 1.0
REDIS_GONE_S = 2.0  # while stopping: a Redis down this long ends the warm stop (nothing more can be answered)
DEAD_RETENTION_S = 600.0  # dead readers stay listed (and fail /healthz) this long before they are forgotten
NO_RESTART_CODES = {
    2: "bad reader settings",
    EXIT_BOOT_ERROR: "bad reader configuration or a duplicate reader id",
    EXIT_MODEL_LOAD_ERROR: "the model could not load",
}


@dataclass
class ReaderProcess:
    reader_id: str
    config: ReaderConfig
    proc: subprocess.Popen[bytes] | None = None
    started_s: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    gave_up: bool = False
    removed: bool = False  # deleted through the management API: not restarted once it exits


@dataclass
class Supervisor:
    settings: Settings
    readers: dict[str, ReaderProcess] = field(default_factory=dict)
    gateway: subprocess.Popen[bytes] | None = None
    redis_keeper: RedisKeeper | None = None
    _signals: list[int] = field(default_factory=list)
    _redis_restarts_seen: int = 0
    _redis_down_since: float | None = None

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._signals.append, sig)
        if self.settings.redis_url is None:
            self.redis_keeper = RedisKeeper(self.settings.state_dir)
            try:
                self.settings = self.settings.model_copy(update={"redis_url": self.redis_keeper.start()})
            except (RuntimeError, OSError) as exc:  # no redis-server, or it refuses its data directory
                log.error("cannot start the embedded Redis: %s", exc)
                return 1
        else:
            clear_state(self.settings.state_dir)  # an earlier embedded run's word on its Redis is not about this one
        assert self.settings.redis_url is not None
        self.redis = connect(self.settings.redis_url)
        self.keys = Keys(self.settings.redis_namespace)
        self.id = f"{self.settings.host_name}-{os.getpid()}"
        self.deployments = DeploymentController(self.redis, self.keys, self.id, self.settings)
        self.hardware = FactsPublisher(self.redis, self.keys, self.id)
        self.env = {**os.environ, RESOLVED_ENV: self.settings.model_dump_json(), reader_store.SUPERVISOR_ENV: self.id}
        if self.settings.enable_metrics:  # every child records into its own file there; GET /metrics sums them
            self.env[metrics.MULTIPROC_ENV] = metrics.fresh_multiprocess_dir(self.settings.state_dir)
        code = 1
        try:
            # Before the gateway starts: its workers never detect hardware, they read what is published here.
            await self.hardware.start(self.env)
            try:
                configs = await self._placed_readers()
            except AutoPlacementError as exc:
                log.error("cannot start: %s", exc)
                return 2
            await reader_store.replace_all(self.redis, self.keys, self.id, configs)
            if self.settings.role != "readers":
                self.gateway = self._spawn([sys.executable, "-m", "liftoff.entry.server"])
            await self._reconcile()
            self._announce()
            code = await self._watch()
        finally:
            await self._shutdown()
            await close(self.redis)
            if self.redis_keeper is not None:
                self.redis_keeper.stop()
        return code

    async def _placed_readers(self) -> list[ReaderConfig]:
        """config.toml's readers with their ids, and devices chosen for those that say "auto" (each counted for the
        next, so that they share the node rather than each assume all of it)."""
        placed: list[ReaderConfig] = []
        assert self.hardware.specs is not None
        facts = FixedFacts(self.hardware.specs)
        for index, config in enumerate(self.settings.readers):
            running = [RunningReader(c.model_name, c.device) for c in placed]
            config = await place_reader(config, running, self.settings.repository_path, self.settings.echo,
                                        facts=facts)
            reader_id = config.reader_id or self._default_reader_id(config, index)
            placed.append(config.model_copy(update={"reader_id": reader_id}))
        return placed

    def _default_reader_id(self, config: ReaderConfig, index: int) -> str:
        """`<group>-<n>`; on a readers host `<host_name>-<group>-<n>`, so that hosts sharing one config (replicas of
        one reader deployment) do not claim each other's ids."""
        name = f"{config.consumer_group}-{index}"
        return f"{self.settings.host_name}-{name}" if self.settings.role == "readers" else name

    def _announce(self) -> None:
        s = self.settings
        where = "embedded" if self.redis_keeper else "external"
        if s.role == "readers":
            log.info("Liftoff readers host %s: %d readers, no gateway (%s Redis %s)", s.host_name, len(self.readers),
                     where, redact(s.redis_url or ""))
            return
        log.info(
            "Liftoff serving: inference :%d, management :%d, vertex :%d, openai :%d, snowflake :%d, internal :%d "
            "(%d gateway workers, %d readers, %s Redis %s%s)",
            s.port, s.management_port, s.vertex_port, s.openai_port, s.snowflake_port, s.internal_port,
            s.workers, len(self.readers), where, redact(s.redis_url or ""),
            "; gateway only" if s.role == "gateway" else "",
        )
        _, exposure = management_bind(s)
        if exposure:
            log.warning("%s", exposure)

    # --- the main loop --------------------------------------------------------------------------------------------
    async def _watch(self) -> int:
        last_prune = last_sweep = time.monotonic()
        while not self._signals:
            if self.gateway is not None and self.gateway.poll() is not None:
                log.error("the gateway exited with code %s; stopping (see its log above)", self.gateway.returncode)
                return 1
            redis_up = await self._redis_ready()  # while the embedded Redis restarts, skip what needs it
            if redis_up:
                if self.settings.role == "all":  # deployments are made through this host's gateway, run here
                    await self._housekeeping(self.deployments.reconcile)
                await self._housekeeping(self._reconcile)
            for reader in list(self.readers.values()):
                await self._check_reader(reader)
            now = time.monotonic()
            if redis_up and now - last_sweep > SWEEP_EVERY_S:
                last_sweep = now
                await self._housekeeping(self._sweep)
            if redis_up and now - last_prune > PRUNE_EVERY_S:
                last_prune = now
                await self._housekeeping(self._prune)
            if redis_up and self.hardware.due():
                await self._housekeeping(self.hardware.refresh)
            await asyncio.sleep(POLL_S)
        log.info("stopping: %s", signal.Signals(self._signals[0]).name)
        return 0

    async def _redis_ready(self) -> bool:
        """Whether Redis can be used this turn. The embedded one is looked after first (restarted when it died);
        after a restart that lost this supervisor's reader configurations (the append-only file's last second, or a
        data directory that had to be emptied), they are written back before anything reconciles against them."""
        keeper = self.redis_keeper
        if keeper is None:
            return True
        await keeper.check()
        if not keeper.up:
            return False
        if keeper.state.restarts != self._redis_restarts_seen:
            try:
                if not await reader_store.present(self.redis, self.keys, self.id):
                    configs = [r.config for r in self.readers.values() if not r.removed]
                    await reader_store.replace_all(self.redis, self.keys, self.id, configs)
                    log.warning("Redis came back without the reader configurations; wrote back %d", len(configs))
            except broker.TRANSIENT as exc:
                log.warning("Redis is back but not answering yet: %s", exc)
                return False
            self._redis_restarts_seen = keeper.state.restarts
        return True

    async def _reconcile(self) -> None:
        """Start readers added to the store; let removed ones drain (the API asked them to stop) and forget them."""
        wanted = await reader_store.load(self.redis, self.keys, self.id)
        for reader_id, config in wanted.items():
            if reader_id not in self.readers:
                self.readers[reader_id] = ReaderProcess(reader_id, config)
                await self._start_reader(self.readers[reader_id])
        for reader_id, reader in self.readers.items():
            removed = reader_id not in wanted
            if removed and not reader.removed and reader.proc is not None and reader.proc.poll() is None:
                # The API's stop request may have been made while the reader was still starting; a signal is a
                # warm stop too (it drains, deregisters and exits), and reaches it whatever state it is in.
                reader.proc.send_signal(signal.SIGTERM)
            reader.removed = removed

    async def _check_reader(self, reader: ReaderProcess) -> None:
        now = time.monotonic()
        if reader.proc is None:
            if reader.removed:
                del self.readers[reader.reader_id]
            elif reader.restart_at is not None and now >= reader.restart_at:
                await self._start_reader(reader)
            return
        code = reader.proc.poll()
        if code is None:
            return
        reason = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        pid, reader.proc = reader.proc.pid, None
        if reader.removed:
            log.info("reader %s removed (%s)", reader.reader_id, reason)
            await self._deregister(reader.reader_id)
            return
        await self._mark_exited(reader.reader_id, reason, pid)
        if code in NO_RESTART_CODES:
            reader.gave_up = True
            log.error("reader %s %s (%s); not restarting it", reader.reader_id, reason, NO_RESTART_CODES[code])
            return
        if now - reader.started_s > STABLE_AFTER_S:
            reader.failures = 0
        delay = compute_backoff(reader.failures, base_s=1.0, cap_s=30.0)
        reader.failures += 1
        reader.restart_at = now + delay
        log.warning("reader %s %s; restarting in %.1fs", reader.reader_id, reason, delay)

    async def _mark_exited(self, reader_id: str, reason: str, pid: int) -> None:
        try:
            await registry.mark_exited(self.redis, self.keys, reader_id, reason, pid)
        except Exception as exc:  # noqa: BLE001 — the heartbeat TTL marks it dead anyway
            log.warning("could not mark reader %s dead in the registry: %s", reader_id, exc)

    async def _housekeeping(self, step: Callable[[], Awaitable[None]]) -> None:
        """Redis trouble must not stop the supervisor: the step is tried again on the next turn."""
        try:
            await step()
        except Exception as exc:  # noqa: BLE001
            log.warning("%s skipped: %s", step.__name__, exc)

    async def _prune(self) -> None:
        """Forget readers long dead (not those still configured here), then the empty request streams of groups
        that no reader and no setting names any more."""
        interval = self.settings.heartbeat_check_interval
        configured = set(self.readers)
        for reader_id in await registry.prune_dead(self.redis, self.keys, interval, DEAD_RETENTION_S, configured):
            log.info("forgot reader %s (dead for over %.0fs)", reader_id, DEAD_RETENTION_S)
        directory = await broker.read_directory(self.redis, self.keys, interval, self.settings.reserved_groups())
        for group in await broker.drop_orphan_streams(self.redis, self.keys, directory.known(direct=True)):
            log.info("removed the empty request stream of consumer group %s: nothing serves it any more", group)

    async def _sweep(self) -> None:
        """Dead-letter exhausted work of dead readers even in groups with no live reader, and tidy consumers."""
        s = self.settings
        directory = await broker.read_directory(self.redis, self.keys, s.heartbeat_check_interval, s.reserved_groups())
        live = {r.info.consumer_name for r in directory.records if r.status != "dead"}
        for group in sorted(directory.known()):
            await broker.sweep(self.redis, self.keys, group, f"supervisor-{self.id}", self.settings.max_deliveries,
                                0, live)

    # --- processes ------------------------------------------------------------------------------------------------
    def _spawn(self, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        return subprocess.Popen(argv, env={**self.env, **(env or {})}, stdin=subprocess.DEVNULL,
                                preexec_fn=child_preexec)  # noqa: PLW1509 (no threads here)

    async def _start_reader(self, reader: ReaderProcess) -> None:
        config = reader.config
        try:
            await registry.announce_starting(self.redis, self.keys, ReaderInfo(
                consumer_groups=[config.consumer_group], consumer_name=reader.reader_id, device=config.device,
                model_name="echo" if self.settings.echo else config.model_name,
                model_type=config.model_type or "generation", pids=[], supervised=True, reader_id=reader.reader_id,
                heartbeat_interval_s=float(self.settings.heartbeat_check_interval), config=config.model_dump(),
                hostname=self.settings.host_name))
        except Exception as exc:  # noqa: BLE001 — the reader registers itself anyway; readiness is merely early
            log.warning("could not announce reader %s in the registry: %s", reader.reader_id, exc)
        argv = [
            sys.executable, "-m", "liftoff.readers",
            "--config-json", reader.config.model_dump_json(exclude={"access_token"}),
            "--reader-id", reader.reader_id,
            "--supervised",
        ]
        token = config.access_token
        env: dict[str, str] = {}
        if token:  # a secret goes to the one process it is for, in its environment: never on a command line
            env[READER_TOKEN_ENV] = token.get_secret_value()
        if config.cuda_visible_devices is not None:  # the GPUs this reader's process sees (it sets it too, by hand)
            env["CUDA_VISIBLE_DEVICES"] = config.cuda_visible_devices
        reader.proc = self._spawn(argv, env or None)
        reader.started_s = time.monotonic()
        reader.restart_at = None
        log.info("started reader %s (pid %d, model %s)", reader.reader_id, reader.proc.pid, reader.config.model_name)

    async def _shutdown(self) -> None:
        grace = self.settings.shutdown_grace_s
        # Gateway first (stop intake, finish in-flight requests while readers still serve them), then readers.
        if self.gateway is not None:
            await self._stop([self.gateway], grace + 5)
        running = [r.proc for r in self.readers.values() if r.proc is not None]
        await self._stop(running, grace + 5)
        for reader_id in self.readers:  # drained readers did this themselves; killed and failed ones did not
            await self._deregister(reader_id)
        await self._housekeeping(self._forget_store)

    async def _forget_store(self) -> None:
        await reader_store.replace_all(self.redis, self.keys, self.id, [])

    async def _stop(self, procs: list[subprocess.Popen[bytes]], timeout_s: float) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL if len(self._signals) > 1 else signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        self._redis_down_since = None
        cold = False
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            # a second Ctrl-C during the warm stop, or a Redis that will not take what is left: cold stop
            cold = cold or len(self._signals) > 1 or await self._redis_gone_while_stopping()
            if cold:
                for proc in procs:
                    if proc.poll() is None:
                        proc.kill()
            await asyncio.sleep(0.05)
        for proc in procs:
            if proc.poll() is None:
                log.warning("pid %d did not stop within %.0fs; killing it", proc.pid, timeout_s)
                proc.kill()
                proc.wait()

    async def _redis_gone_while_stopping(self) -> bool:
        """Whether the embedded Redis has been down for REDIS_GONE_S of this stop. It is still restarted if it dies
        (draining readers deliver their last replies to it); one that stays down can take nothing more, and readers
        waiting to flush to it would hold the stop up for their whole grace period."""
        keeper = self.redis_keeper
        if keeper is None:
            return False
        await keeper.check()
        if keeper.up:
            self._redis_down_since = None
            return False
        now = time.monotonic()
        if self._redis_down_since is None:
            self._redis_down_since = now
        if now - self._redis_down_since < REDIS_GONE_S:
            return False
        log.warning("Redis is down (%s); stopping what is left at once", keeper.state.reason)
        return True

    async def _deregister(self, reader_id: str) -> None:
        try:
            await registry.deregister(self.redis, self.keys, reader_id)
        except Exception as exc:  # noqa: BLE001
            log.debug("could not deregister %s: %s", reader_id, exc)


def serve(settings: Settings) -> int:
    """Run the server; exit code 2 at once, with one line naming the holder, when another owns the state_dir."""
    try:
        lock = StateLock(settings.state_dir).acquire()
    except StateDirInUse as exc:
        print(f"liftoff: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(Supervisor(settings).run())
    finally:
        lock.release()
