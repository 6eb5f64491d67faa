"""`liftoff fit` through its parser: table, JSON and the API's error messages."""

from __future__ import annotations

import argparse
import json

import pytest

from liftoff.control.fit_cli import add_fit_parser, run_fit


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="liftoff")
    add_fit_parser(parser.add_subparsers(dest="command"))
    code = run_fit(parser.parse_args(["fit", "--repository-path", "/nonexistent", *argv]))
    out, err = capsys.readouterr()
    return code, out, err


def test_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--limit", "5", "--use-case", "embedding")
    lines = out.splitlines()
    assert code == 0 and ("CPU (x86)" in lines[0] or "CPU (ARM)" in lines[0])
    assert lines[2].split()[:3] == ["Model", "Params", "Score"]
    assert len(lines) == 3 + 5


def test_json_is_the_api_envelope(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--json", "--top", "--vram-gb", "24")
    body = json.loads(out)
    assert code == 0 and body["filters"]["top_only"] is True and body["returned_models"] == 5
    assert body["system"]["has_gpu"] is True


def test_bad_filter(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--min-fit", "great")
    assert code == 2 and "invalid min_fit value: use perfect|good|marginal|too_tight" in err
