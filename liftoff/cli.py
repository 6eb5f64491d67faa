"""The `liftoff` command: `liftoff serve` (the whole server) and `liftoff reader` (one reader process)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import uuid
from collections.abc import Coroutine
from typing import Any

import orjson

from liftoff.settings import ReaderConfig, Settings, SettingsError, load_settings
from management.fit.cli import add_fit_parser, run_fit

# Settings that are not simple scalars get no generic flag.
_NO_FLAG = {"readers", "management_api_keys", "inference_api_keys", "admin_api_key", "read_api_key",
            "inference_api_key"}  # no keys on a command line, where `ps` shows them


def _serve_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="start Redis (embedded unless redis_url is set), the gateway and the readers")
    p.add_argument("--config", help="config.toml to read (default: $LIFTOFF_CONFIG, else ./config.toml if present)")
    p.add_argument("--model", help="put the 'primary' reader on this model (a name, a path, or 'echo')")
    for name, info in Settings.model_fields.items():
        if name in _NO_FLAG:
            continue
        flag = "--" + name.replace("_", "-")
        if info.annotation is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS)
        else:
            p.add_argument(flag, dest=name, default=argparse.SUPPRESS, metavar=name.upper())


def _reader_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="liftoff", description="Liftoff inference server")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _reader_parser(sub)
    add_fit_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "fit":
        return run_fit(args)
    try:
        if args.command == "serve":
            return _serve(args)
        return _reader(args)
    except SettingsError as exc:
        print(f"liftoff: {exc}", file=sys.stderr)
        return 2


def run_async(main: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop where it is installed (it is a dependency on Linux and macOS): cheaper Redis round trips."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")


def _serve(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in vars(args).items() if k in Settings.model_fields}
    settings = load_settings(args.config, overrides)
    if args.model:
        settings = _with_primary_model(settings, args.model)
    from management.auth import check_management_exposure

    check_management_exposure(settings)  # a SettingsError: one line, exit code 2
    _logging(settings.log_level)
    from management.supervisor import serve

    return serve(settings)


def _with_primary_model(settings: Settings, model: str) -> Settings:
    readers = [r for r in settings.readers if r.consumer_group != "primary"]
    primary = next((r for r in settings.readers if r.consumer_group == "primary"), ReaderConfig())
    # A model named on the command line is what the user wants served: no silent fallback when it can't be had.
    readers.insert(0, primary.model_copy(update={"model_name": model, "fallback_model_name": None}))
    return settings.model_copy(update={"readers": readers})


def _reader(args: argparse.Namespace) -> int:
    overrides = {"redis_url": args.redis_url} if args.redis_url else {}
    settings = load_settings(args.config, overrides)
    if settings.redis_url is None:
        raise SettingsError("liftoff reader needs a Redis: pass --redis-url or set redis_url / LIFTOFF_REDIS_URL")
    config = _reader_config(args)
    _logging(config.log_level.upper())
    if config.cpu_threads:
        os.environ["LIFTOFF_TORCH_THREADS"] = str(config.cpu_threads)
    from readers.reader import Reader, ReaderOptions

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
    )
    return run_async(Reader(options).run())


def _reader_config(args: argparse.Namespace) -> ReaderConfig:
    from pydantic import ValidationError

    from liftoff.settings import describe_validation_error

    data: dict[str, Any] = orjson.loads(args.config_json) if args.config_json else {}
    for name in ("model_name", "device", "max_batch_size", "batch_duration_millis"):
        if getattr(args, name) is not None:
            data[name] = getattr(args, name)
    try:
        return ReaderConfig.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc)) from None
