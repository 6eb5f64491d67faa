"""The layers of docs/architecture.md hold: import-linter's contracts (pyproject.toml) pass on the tree, and they
would catch a forbidden import (checked on a copy of the tree with one added)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> tuple[int, int, str]:
    """(contracts kept, broken, output) of `lint-imports` on the tree at `root` (its `liftoff` first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run([str(LINT), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=300, env=env)
    counts = re.search(r"Contracts: (\d+) kept, (\d+) broken", done.stdout)
    assert counts, done.stdout[-2000:] + done.stderr[-2000:]
    return int(counts[1]), int(counts[2]), done.stdout


def test_import_contracts_hold() -> None:
    kept, broken, out = lint(REPO)
    assert kept >= 5 and broken == 0, out[-4000:]


@pytest.mark.parametrize(("module", "line", "contract"), [
    ("liftoff/gateway/sse.py", "import torch", "gateway workers import no torch"),
    ("liftoff/readers/jobs.py", "import liftoff.http.errors", "readers and control import no liftoff.http"),
    ("liftoff/control/state_lock.py", "import starlette.responses", "readers and control import no liftoff.http"),
    ("liftoff/core/wire.py", "import liftoff.fit.catalog", "entry > gateway"),
    ("liftoff/gateway/chat/tools.py", "import liftoff.gateway.openai.routes", "gateway: protocols > chat"),
    ("liftoff/management/dlq.py", "import liftoff.gateway.internal", "entry > gateway"),
])
def test_a_forbidden_import_breaks_the_contracts(tmp_path: Path, module: str, line: str, contract: str) -> None:
    shutil.copytree(REPO / "liftoff", tmp_path / "liftoff", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}  # added by the test\n")
    _, broken, out = lint(tmp_path)
    assert broken >= 1, out[-3000:]
    assert contract in out.split("Broken contracts", 1)[1], out[-3000:]  # the section lists the broken ones
