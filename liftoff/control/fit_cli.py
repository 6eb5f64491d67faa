"""`liftoff fit`: the fit report for this machine as a ranked table, or as the API's JSON with `--json`.

The flags are the API's query parameters and go through the same parser, so they accept the same values and fail
with the same messages.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from liftoff.control.detect import detect_specs
from liftoff.fit.catalog import load_catalog
from liftoff.fit.query import FitQueryError, parse_query
from liftoff.fit.report import fit_report

CLI_DEFAULT_LIMIT = 20
_VALUE_FLAGS = ("limit", "min_fit", "runtime", "use_case", "provider", "search", "sort", "max_context", "ram_gb",
                "vram_gb", "cpu_cores")
_COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("name", "Model", 44), ("parameter_count", "Params", 7), ("score", "Score", 6), ("estimated_tps", "tok/s", 8),
    ("best_quant", "Quant", 7), ("run_mode_label", "Mode", 7), ("memory_required_gb", "Mem GB", 7),
    ("utilization_pct", "Mem %", 6), ("context_length", "Ctx", 8), ("fit_label", "Fit", 9), ("category", "Use", 10),
)


# Options taking one value, with the API's query parameter of the same name: filters, then the machine asked about.
FILTER_FLAGS = (
    ("--min-fit", "perfect|good|marginal|too_tight"),
    ("--runtime", "any|mlx|llamacpp|transformers (default: transformers, what readers run)"),
    ("--use-case", "general|coding|reasoning|chat|multimodal|embedding"),
    ("--provider", "provider substring"),
    ("--search", "free text across name, provider, size and use case"),
    ("--sort", "score|tps|params|mem|ctx|date|use_case (default score)"),
)
MACHINE_FLAGS = (
    ("--max-context", "context length the memory estimate assumes (default min(model, 8192))"),
    ("--ram-gb", "answer as if the machine had this much RAM"),
    ("--vram-gb", "answer as if each GPU had this much VRAM (adds one GPU when there is none)"),
    ("--cpu-cores", "answer as if the machine had this many cores"),
    ("--repository-path", "model repository to include (default: the configured repository_path)"),
    ("--catalog", "user catalog overlay file (default: $LIFTOFF_FIT_CATALOG)"),
    ("--config", "config.toml to read repository_path from"),
)


def add_fit_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = subparsers.add_parser("fit", help="which models fit this machine, ranked (same filters as /api/v1/models)")
    p.add_argument("name", nargs="?", help="only models whose name, provider or use case contains this")
    p.add_argument("--limit", "-n", help=f"rows to show (default {CLI_DEFAULT_LIMIT}; see --all)")
    p.add_argument("--all", action="store_true", help="show every row")
    p.add_argument("--top", action="store_true", help="as /api/v1/models/top: runnable models only, default 5 rows")
    p.add_argument("--perfect", action="store_true", help="perfect fits only")
    for flag, text in FILTER_FLAGS:
        p.add_argument(flag, help=text)
    p.add_argument("--include-too-tight", action=argparse.BooleanOptionalAction, default=None,
                   help="list models that cannot run here (default: yes, except with --top)")
    for flag, text in MACHINE_FLAGS:
        p.add_argument(flag, help=text)
    p.add_argument("--json", action="store_true", help="print the API's JSON envelope instead of a table")
    return p


def _params(args: argparse.Namespace) -> dict[str, str]:
    params = {name: str(getattr(args, name)) for name in _VALUE_FLAGS if getattr(args, name, None) is not None}
    if args.perfect:
        params["perfect"] = "true"
    if args.include_too_tight is not None:
        params["include_too_tight"] = "true" if args.include_too_tight else "false"
    if "limit" not in params and not args.all and not args.top:
        params["limit"] = str(CLI_DEFAULT_LIMIT)
    return params


def _repository_path(args: argparse.Namespace) -> str | None:
    if args.repository_path:
        return str(args.repository_path)
    try:
        from liftoff.core.settings import load_settings

        return load_settings(args.config, {}).repository_path
    except Exception:  # noqa: BLE001 - a broken config must not stop a read-only report; fall back to the default
        return "./artefacts"


def _cell(value: Any, width: int) -> str:
    text = "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def format_table(report: dict[str, Any]) -> str:
    system = report["system"]
    gpu = f"{system['gpu_count']}x {system['gpu_name']} ({system['gpu_vram_gb']} GB)" if system["has_gpu"] else "none"
    lines = [
        f"{report['node']['name']}: {system['cpu_name']}, {system['cpu_cores']} cores, "
        f"{system['available_ram_gb']}/{system['total_ram_gb']} GB RAM free, GPU: {gpu}, backend {system['backend']}",
        f"{report['returned_models']} of {report['total_models']} models",
        "  ".join(title.ljust(width) for _, title, width in _COLUMNS),
    ]
    for row in report["models"]:
        cells = [_cell(row[key], width).ljust(width) for key, _, width in _COLUMNS]
        if row["basis"]["memory"] == "measured" or row["basis"]["tps"] == "measured":
            cells.append("(measured)")
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def run_fit(args: argparse.Namespace) -> int:
    try:
        query = parse_query(_params(args), top_only=args.top, name=args.name)
    except FitQueryError as exc:
        print(f"liftoff fit: {exc}", file=sys.stderr)
        return 2
    catalog = load_catalog(_repository_path(args), args.catalog)
    report = fit_report(catalog, detect_specs(), query)
    if args.json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        print(format_table(report))
    return 0
