"""A reader pod's probe (exec): exit 0 when the registry shows this pod's reader at least in the asked state.

A reader serves no HTTP, so its pod is probed where its state lives, the reader registry `/healthz` reads too, and
with the same words: `--state loading` (registered and beating, the model may still load; liveness and startup)
or `--state live` (serving; readiness, which a rollout waits for before it stops an old reader). The reader id is
the pod's name (`POD_NAME`, which the reader is started with). A Redis that cannot be reached fails the check,
except with `--pass-when-unreachable` (liveness: restarting a reader cannot bring Redis back, and it reconnects by
itself). The ConfigMap carries this file, so any image with Liftoff installed can run it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from liftoff.core import registry
from liftoff.core.broker import TRANSIENT
from liftoff.core.keys import Keys
from liftoff.core.redis_client import connect
from liftoff.core.settings import SettingsError, load_settings
from liftoff.http.health import RANK, STATES

TIMEOUT_S = 5.0


async def check(redis_url: str, namespace: str, interval_s: int, reader_id: str, state: str,
                pass_when_unreachable: bool) -> tuple[bool, str]:
    redis = connect(redis_url)
    try:
        records = await asyncio.wait_for(registry.read_registry(redis, Keys(namespace), interval_s), TIMEOUT_S)
    except (*TRANSIENT, TimeoutError) as exc:
        return pass_when_unreachable, f"Redis is unreachable ({exc or type(exc).__name__})"
    finally:
        await redis.aclose()
    record = next((r for r in records if r.reader_id == reader_id), None)
    if record is None:
        return False, f"reader {reader_id} is not registered"
    ok = RANK[record.status] >= RANK[state]
    error = f" ({record.info.error})" if record.info.error else ""
    return ok, f"reader {reader_id} is {record.status}{error}" + ("" if ok else f", not yet {state}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reader_probe", description=__doc__.splitlines()[0])
    parser.add_argument("--state", choices=STATES, default="live")
    parser.add_argument("--reader-id", default=os.environ.get("POD_NAME"))
    parser.add_argument("--pass-when-unreachable", action="store_true")
    args = parser.parse_args(argv)
    if not args.reader_id:
        print("reader_probe: no reader id: pass --reader-id or set POD_NAME")
        return 2
    try:
        settings = load_settings()  # LIFTOFF_CONFIG and LIFTOFF_* as the reader itself reads them
    except SettingsError as exc:
        print(f"reader_probe: {exc}")
        return 2
    if settings.redis_url is None:
        print("reader_probe: no redis_url (LIFTOFF_REDIS_URL)")
        return 2
    ok, line = asyncio.run(check(settings.redis_url, settings.redis_namespace, settings.heartbeat_check_interval,
                                 args.reader_id, args.state, args.pass_when_unreachable))
    print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
