"""`liftoff reader` (and `python -m liftoff.readers`, which the supervisor runs): one reader process against a Redis."""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from typing import Any

import orjson

from liftoff.core.model_names import check_simple_name
from liftoff.core.process import configure_logging, run_async
from liftoff.core.reader_config import READER_TOKEN_ENV, ReaderConfig
from liftoff.core.settings import SettingsError, load_settings


def add_reader_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("reader", help="run one reader process against a Redis")
    p.add_argument("--config", help="config.toml for server-level settings (redis_url, namespace, heartbeat)")
    p.add_argument("--config-json", help="a whole reader config as JSON (reference reader-config field names)")
    p.add_argument("--redis-url", help="Redis to serve from, e.g. redis://host:6379/0 or unix:///path/redis.sock")
    p.add_argument("--model", dest="model_name", help="model name or path; 'echo' streams the prompt back")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto")
    p.add_argument("--consumer-group", action="append", help="consumer group to serve (repeat for several)")
    p.add_argument("--reader-id", help="stable reader id (default: <group>-<random>)")
    p.add_argument("--max-batch-size", type=int)
    p.add_argument("--batch-duration-millis", type=int)
    p.add_argument("--echo", action="store_true", help="serve with the echo engine whatever the model")
    p.add_argument("--supervised", action="store_true", help=argparse.SUPPRESS)


def run_reader(args: argparse.Namespace) -> int:
    overrides = {"redis_url": args.redis_url} if args.redis_url else {}
    settings = load_settings(args.config, overrides)
    if settings.redis_url is None:
        raise SettingsError("liftoff reader needs a Redis: pass --redis-url or set redis_url / LIFTOFF_REDIS_URL")
    config = _reader_config(args)
    configure_logging(config.log_level.upper())
    if config.cpu_threads:
        os.environ["LIFTOFF_TORCH_THREADS"] = str(config.cpu_threads)
    if config.cuda_visible_devices is not None:  # before torch loads: CUDA reads it once, at its initialisation
        os.environ["CUDA_VISIBLE_DEVICES"] = config.cuda_visible_devices
    for name in [*(args.consumer_group or []), *([args.reader_id] if args.reader_id else [])]:
        try:
            check_simple_name(name, "--reader-id" if name == args.reader_id else "--consumer-group")
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
    from liftoff.readers.options import ReaderOptions
    from liftoff.readers.reader import Reader  # after LIFTOFF_TORCH_THREADS is set: it imports torch

    groups = args.consumer_group or [config.consumer_group]
    options = ReaderOptions(
        config=config.model_copy(update={"consumer_group": groups[0]}),
        reader_id=args.reader_id or config.reader_id or f"{groups[0]}-{uuid.uuid4().hex[:8]}",
        groups=groups,
        redis_url=settings.redis_url,
        namespace=settings.redis_namespace,
        heartbeat_check_interval=settings.heartbeat_check_interval,
        echo=args.echo or settings.echo,
        supervised=args.supervised,
        grace_s=settings.shutdown_grace_s,
        max_deliveries=settings.max_deliveries,
        repository_path=settings.repository_path,
        reader_message_timeout_ms=settings.reader_message_timeout_ms,
        host_name=settings.host_name,
    )
    return run_async(Reader(options).run())


def _reader_config(args: argparse.Namespace) -> ReaderConfig:
    from pydantic import ValidationError

    from liftoff.core.settings import describe_validation_error

    data: dict[str, Any] = orjson.loads(args.config_json) if args.config_json else {}
    for name in ("model_name", "device", "max_batch_size", "batch_duration_millis"):
        if getattr(args, name) is not None:
            data[name] = getattr(args, name)
    if os.environ.get(READER_TOKEN_ENV):  # how the supervisor hands a reader its access_token
        data["access_token"] = os.environ[READER_TOKEN_ENV]
    try:
        return ReaderConfig.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None


def main(argv: list[str] | None = None) -> int:
    """`python -m liftoff.readers ARGS` = `liftoff reader ARGS`."""
    parser = argparse.ArgumentParser(prog="liftoff reader", description="one Liftoff reader process")
    sub = parser.add_subparsers(dest="command", required=True)
    add_reader_parser(sub)
    args = parser.parse_args(["reader", *(sys.argv[1:] if argv is None else argv)])
    try:
        return run_reader(args)
    except SettingsError as exc:
        print(f"liftoff: {exc}", file=sys.stderr)
        return 2
