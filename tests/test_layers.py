"""The layers of docs/architecture.md hold: import-linter's contracts (pyproject.toml) pass on the tree."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_import_contracts_hold() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    counts = re.search(r"Contracts: (\d+) kept, (\d+) broken", done.stdout)
    assert counts and int(counts[1]) >= 1 and counts[2] == "0", done.stdout[-2000:]
