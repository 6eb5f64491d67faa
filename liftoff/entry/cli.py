"""The `liftoff` command: `liftoff serve` (the whole server), `liftoff reader` (one reader process,
liftoff.readers.cli) and
`liftoff fit` (liftoff.control.fit_cli)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from liftoff.control.fit_cli import add_fit_parser, run_fit
from liftoff.core.process import configure_logging
from liftoff.core.reader_config import ReaderConfig
from liftoff.core.settings import Settings, SettingsError, load_settings
from liftoff.readers.cli import add_reader_parser, run_reader

# Settings that are not simple scalars get no generic flag.
_NO_FLAG = {"readers", "management_api_keys", "inference_api_keys", "admin_api_key", "read_api_key",
            "inference_api_key"}  # no keys on a command line, where `ps` shows them


def _serve_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="start Redis (embedded unless redis_url is set), the gateway and the readers "
                                     "(--role gateway: no readers; --role readers: readers only, on a shared Redis)")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="liftoff", description="Liftoff inference server")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    add_reader_parser(sub)
    add_fit_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "fit":
        return run_fit(args)
    try:
        if args.command == "serve":
            return _serve(args)
        return run_reader(args)
    except SettingsError as exc:
        print(f"liftoff: {exc}", file=sys.stderr)
        return 2


def _serve(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in vars(args).items() if k in Settings.model_fields}
    settings = load_settings(args.config, overrides)
    if args.model:
        if settings.role == "gateway":
            raise SettingsError("--model names the model of this host's 'primary' reader, but role \"gateway\" runs "
                                "no readers: give it to the readers host that serves 'primary'")
        settings = _with_primary_model(settings, args.model)
    if settings.role != "readers":  # a readers host has no management port
        from liftoff.core.api_keys import check_management_exposure

        check_management_exposure(settings)  # a SettingsError: one line, exit code 2
    configure_logging(settings.log_level)
    from liftoff.control.supervisor import serve

    return serve(settings)


def _with_primary_model(settings: Settings, model: str) -> Settings:
    if model.startswith(("./", "../", "~")) or (model != "echo" and "/" in model and Path(model).expanduser().is_dir()):
        model = str(Path(model).expanduser().resolve())  # a directory named on the command line, from where it runs
    readers = [r for r in settings.readers if r.consumer_group != "primary"]
    primary = next((r for r in settings.readers if r.consumer_group == "primary"), ReaderConfig())
    # A model named on the command line is what the user wants served: no silent fallback when it can't be had.
    readers.insert(0, primary.model_copy(update={"model_name": model, "fallback_model_name": None}))
    return settings.model_copy(update={"readers": readers})
