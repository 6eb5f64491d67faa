"""How fast the fit API answers for the whole catalog, in-process (Starlette TestClient) and as a direct call.

    .venv/bin/python -m bench.fit_api [--runs N]

Prints the median latency of `GET /api/v1/models` (the whole catalog, no limit), of `/api/v1/models/top` and of the
pure `fit_report` call it wraps, with their ratio to the 50 ms budget measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from types import SimpleNamespace

from starlette.applications import Starlette
from starlette.testclient import TestClient

from liftoff.control.detect import cached_specs
from liftoff.fit.catalog import load_catalog
from liftoff.fit.facts import FixedFacts
from liftoff.fit.query import parse_query
from liftoff.fit.report import fit_report
from liftoff.management.fit_api import fit_routes

BUDGET_MS = 50.0


def median_ms(call, runs: int) -> float:  # type: ignore[no-untyped-def]
    call()  # warm: first detection, catalog load, route compilation
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--repository-path", default="./artefacts")
    args = parser.parse_args()
    gw = SimpleNamespace(settings=SimpleNamespace(repository_path=args.repository_path))
    routes = fit_routes(gw, facts=FixedFacts(cached_specs()))  # type: ignore[arg-type]
    with TestClient(Starlette(routes=routes)) as client:
        body = client.get("/api/v1/models").json()
        models = body["total_models"]
        http_ms = median_ms(lambda: client.get("/api/v1/models"), args.runs)
        top_ms = median_ms(lambda: client.get("/api/v1/models/top"), args.runs)
    query = parse_query({})
    direct_ms = median_ms(lambda: fit_report(load_catalog(args.repository_path), cached_specs(), query), args.runs)
    print(f"catalog: {models} models, median of {args.runs} runs")
    print(f"GET /api/v1/models      {http_ms:7.2f} ms   {http_ms / BUDGET_MS:5.2f} x the {BUDGET_MS:g} ms budget")
    print(f"GET /api/v1/models/top  {top_ms:7.2f} ms   {top_ms / BUDGET_MS:5.2f} x budget")
    print(f"fit_report() direct     {direct_ms:7.2f} ms   HTTP/direct = {http_ms / direct_ms:4.2f}")
    return 0 if http_ms < BUDGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
