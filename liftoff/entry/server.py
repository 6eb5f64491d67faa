"""The gateway process: gunicorn's arbiter with `workers` native-asgi workers, each bound to all six ports.

Started by the supervisor (`liftoff serve`, roles "all" and "gateway") with the resolved settings in the environment;
runnable by hand with `python -m liftoff.entry.server` for the same purpose.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from gunicorn.app.base import BaseApplication

from liftoff.core.api_keys import check_management_exposure, gunicorn_bind
from liftoff.core.settings import Settings, SettingsError, load_settings


class GatewayServer(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        super().__init__()

    def load_config(self) -> None:
        s = self.settings
        options: dict[str, Any] = {
            "bind": gunicorn_bind(s),  # the management port on loopback only when it has no API keys
            "workers": s.workers,
            "worker_class": "asgi",
            "graceful_timeout": max(1, round(s.shutdown_grace_s)),
            "timeout": 30,  # a worker silent this long is restarted by the arbiter
            "keepalive": 75,  # longer than common load balancers' idle timeouts
            "backlog": 2048,
            "worker_connections": 10_000,
            "loglevel": s.log_level.lower(),
            "accesslog": None,
            "errorlog": "-",
            "proc_name": "liftoff-gateway",
            "control_socket_disable": True,  # several servers may share one machine (tests, benchmarks)
        }
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from liftoff.entry.apps import create_app

        return create_app(self.settings)


def main() -> None:
    settings = load_settings()
    if settings.role == "readers":
        sys.exit('liftoff gateway: role "readers" runs no gateway on this host (role "all" or "gateway" does)')
    try:
        check_management_exposure(settings)
    except SettingsError as exc:
        sys.exit(f"liftoff gateway: {exc}")
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    GatewayServer(settings).run()


if __name__ == "__main__":
    main()
