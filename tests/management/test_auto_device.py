"""Readers with device "auto" are placed by the fit engine, or refused with its report before anything starts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx

from support.servers import LIFTOFF, Server, ServerFactory

HUGE = "meta-llama/Llama-3.1-405B-Instruct"


def test_post_reader_auto_places_on_this_cpu(make_server: ServerFactory) -> None:
    server = make_server(reserved_consumers="")
    r = httpx.post(server.mgmt + "/reader", json={"model_name": "echo", "device": "auto", "reader_id": "auto-echo"},
                   timeout=10)
    assert r.status_code == 201, r.text
    assert r.json()["device"] == "cpu"
    r = httpx.post(server.mgmt + "/reader", json={"model_name": "sentence-transformers/all-MiniLM-L6-v2",
                                                   "device": "auto", "consumer_group": "embed"}, timeout=10)
    assert r.status_code == 201, r.text
    placed = r.json()["reader_id"]
    config = httpx.get(f"{server.mgmt}/config/{placed}", timeout=10).json()
    assert config["device"] == "cpu" and config["dtype"] == "float32" and config["max_batch_size"] >= 1
    for reader_id in (placed, "auto-echo"):
        assert httpx.delete(f"{server.mgmt}/reader/{reader_id}", timeout=60).status_code == 204


def test_post_reader_too_large_is_refused_with_the_fit_report(make_server: ServerFactory) -> None:
    server = make_server(reserved_consumers="")
    r = httpx.post(server.mgmt + "/reader", json={"model_name": HUGE, "device": "auto"}, timeout=10)
    assert r.status_code == 422, r.text
    body = r.json()
    assert "does not fit on this node" in body["error"]
    assert body["details"]["fit"]["fit_level"] == "too_tight"
    groups = httpx.get(server.mgmt + "/reader_groups", timeout=10).json()
    assert [x["reader_id"] for x in groups["primary"]] == ["primary-0"]  # nothing was started
    r = httpx.post(server.mgmt + "/reader", json={"model_name": "no-such/model", "device": "auto"}, timeout=10)
    assert r.status_code == 422 and "device explicitly" in r.json()["error"]


def test_serve_refuses_an_auto_reader_that_cannot_fit(tmp_path: Path) -> None:
    server = Server(tmp_path, {}, readers=[{"model_name": HUGE, "device": "auto"}])
    with open(server.log_path, "ab") as log:
        proc = subprocess.run([*LIFTOFF, "serve", "--config", str(server.config)], cwd=tmp_path, stdout=log,
                              stderr=subprocess.STDOUT, timeout=120, check=False)
    assert proc.returncode == 2
    assert "does not fit on this node" in server.log()
