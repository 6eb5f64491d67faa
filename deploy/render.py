"""Print Liftoff's Kubernetes manifests.

    python deploy/render.py [-f overlay.yaml ...] [--validate] | kubectl apply -f -

The values are deploy/values.yaml with each `-f` file merged over it in order (docs/scaling.md, "Kubernetes").
`--validate` also checks every object against the Kubernetes schemas (the test extras' `kubernetes-validate`).
Bad values exit 2 with one line naming the key.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from liftoff_deploy.objects import render
from liftoff_deploy.values import ValuesError, load_values

HEADER = "# Rendered by deploy/render.py from deploy/values.yaml{overlays}; edit the values and render again.\n"


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (config.toml, the probe) as literal blocks, so that they read as the files they are."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(objects: list[dict[str, Any]], overlays: list[str]) -> str:
    named = "".join(f" + {name}" for name in overlays)
    body = "---\n".join(yaml.dump(o, Dumper=_Dumper, sort_keys=False, width=120) for o in objects)
    return HEADER.format(overlays=named) + "---\n" + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="render.py", description=__doc__.splitlines()[0])
    parser.add_argument("-f", "--values", action="append", default=[], type=Path, help="values overlay (repeatable)")
    parser.add_argument("--validate", action="store_true", help="check every object against the Kubernetes schemas")
    parser.add_argument("-o", "--output", type=Path, help="write here instead of standard output")
    args = parser.parse_args(argv)
    try:
        objects = render(load_values(args.values))
    except ValuesError as exc:
        print(f"render.py: {exc}", file=sys.stderr)
        return 2
    if args.validate:
        try:
            from liftoff_deploy.validate import problems
        except ImportError as exc:
            print(f"render.py: --validate needs the test extras (scripts/setup --test): {exc}", file=sys.stderr)
            return 2
        found = [p for o in objects for p in problems(o)]
        if found:
            print("render.py: " + "\n".join(found), file=sys.stderr)
            return 1
    text = dump(objects, [str(p) for p in args.values])
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
