"""Fit-engine test helpers: fixed nodes (so hand-computed figures hold on any machine), a tiny model directory,
and the `fit_app` fixture (an app with the fit routes mounted)."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from liftoff.core.calibration import MeasurementSource
from liftoff.fit.facts import FixedFacts
from liftoff.fit.hardware import GpuInfo, SystemSpecs
from liftoff.management.fit_api import fit_health_route, fit_routes

CPU_NODE = SystemSpecs(total_ram_gb=64.0, available_ram_gb=60.0, cpu_cores=8, cpu_name="Test CPU", cpu_arch="x86",
                       node_name="test-node")
H100_NODE = SystemSpecs(total_ram_gb=256.0, available_ram_gb=240.0, cpu_cores=32, cpu_name="Test CPU",
                        cpu_arch="x86", gpus=(GpuInfo("NVIDIA H100 80GB HBM3", 79.19, "CUDA", 2),), quant_libs=True,
                        node_name="gpu-node")
SMALL_CPU_NODE = SystemSpecs(total_ram_gb=8.0, available_ram_gb=6.0, cpu_cores=2, cpu_name="Small CPU",
                             cpu_arch="x86", node_name="small-node")


def write_tiny_model(directory: Path, *, layers: int = 2, hidden: int = 64, heads: int = 4, kv_heads: int = 2,
                     vocab: int = 1000, name_or_arch: str = "LlamaForCausalLM") -> int:
    """A model directory as a download leaves it: config.json and a safetensors file (header + zero data).

    Returns the parameter count the header declares.
    """
    directory.mkdir(parents=True)
    config = {"architectures": [name_or_arch], "hidden_size": hidden, "num_hidden_layers": layers,
              "num_attention_heads": heads, "num_key_value_heads": kv_heads, "vocab_size": vocab,
              "intermediate_size": 4 * hidden, "max_position_embeddings": 2048, "torch_dtype": "float32"}
    (directory / "config.json").write_text(json.dumps(config))
    shapes = {"model.embed_tokens.weight": [vocab, hidden]}
    for i in range(layers):
        shapes[f"model.layers.{i}.self_attn.q_proj.weight"] = [hidden, hidden]
        shapes[f"model.layers.{i}.mlp.up_proj.weight"] = [4 * hidden, hidden]
    header: dict[str, Any] = {}
    offset = 0
    for key, shape in shapes.items():
        size = shape[0] * shape[1] * 4
        header[key] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    with open(directory / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + b"\0" * offset)
    return sum(s[0] * s[1] for s in shapes.values())


AppFactory = Callable[..., TestClient]


# The fit tests that need it import it (`from support.fit import fit_app_fixture`).
@pytest.fixture(name="fit_app")
def fit_app_fixture(tmp_path: Path) -> Iterator[AppFactory]:
    clients: list[TestClient] = []

    def make(specs: SystemSpecs = CPU_NODE, store: MeasurementSource | None = None,
             repository_path: str | None = None, overlay_path: str | None = None) -> TestClient:
        gw = SimpleNamespace(settings=SimpleNamespace(repository_path=repository_path or str(tmp_path / "empty")))
        # The node's facts as the supervisor would have published them: fit routes never detect hardware.
        routes = [*fit_routes(gw, store, facts=FixedFacts(specs), overlay_path=overlay_path or ""),  # type: ignore[arg-type]
                  fit_health_route(lambda: specs.node_name)]
        # Entered, so that every request runs on one event loop: the store's Redis connections are bound to it.
        client = TestClient(Starlette(routes=routes)).__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)
